package silo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"cairn/blocks"
)

// TestGetPiecesMatchesGetPiece: for any mix of keys (stored in sealed
// segments, in the active one, still in the write buffer, missing,
// deleted, rotten), GetPieces returns what GetPiece returns, piece by
// piece, in the order asked.
func TestGetPiecesMatchesGetPiece(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir, Options{SegmentSize: 256 << 10, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 300
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 100+i*37%5000)); err != nil {
			t.Fatal(err)
		}
		if i == 200 {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < n; i += 17 {
		if err := s.DeletePiece(ctx, keyOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Rot one byte of a piece's payload in the first segment.
	s.mu.RLock()
	e := s.index[keyOf(3)]
	s.mu.RUnlock()
	f, err := os.OpenFile(filepath.Join(dir, segName(e.seg)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, int64(e.off)+hdrSize+5); err != nil {
		t.Fatal(err)
	}
	f.Close()

	rng := rand.New(rand.NewPCG(1, 2))
	var buf []byte
	for round := range 20 {
		keys := make([]blocks.Addr, 1+rng.IntN(80))
		for j := range keys {
			keys[j] = keyOf(rng.IntN(n + 20)) // some never stored
		}
		if round == 0 {
			keys = append(keys, keyOf(3), keyOf(4), keyOf(3))
		}
		got, errs := s.GetPieces(ctx, keys, &buf)
		if len(got) != len(keys) || len(errs) != len(keys) {
			t.Fatalf("%d pieces and %d errors for %d keys", len(got), len(errs), len(keys))
		}
		for j, k := range keys {
			want, werr := s.GetPiece(ctx, k)
			switch {
			case werr == nil && errs[j] == nil:
				if !bytes.Equal(got[j], want) {
					t.Fatalf("round %d key %d: wrong bytes", round, j)
				}
			case werr != nil && errs[j] != nil:
				for _, sentinel := range []error{blocks.ErrNotFound, blocks.ErrCorrupt} {
					if errors.Is(werr, sentinel) != errors.Is(errs[j], sentinel) {
						t.Fatalf("round %d key %d: GetPieces says %v, GetPiece %v", round, j, errs[j], werr)
					}
				}
			default:
				t.Fatalf("round %d key %d: GetPieces says %v, GetPiece %v", round, j, errs[j], werr)
			}
		}
	}
	if _, errs := s.GetPieces(ctx, []blocks.Addr{keyOf(3)}, &buf); !errors.Is(errs[0], blocks.ErrCorrupt) {
		t.Fatalf("rotten piece: %v, want ErrCorrupt", errs[0])
	}
}
