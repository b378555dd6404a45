package silo

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
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
	e, _ := s.index.get(keyOf(3))
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

// TestSortByPlace: the packed-integer sort orders records by place like a
// comparison sort, whatever the input (sorted, reversed, shuffled, with
// equal places, spanning segments, spans too wide to pack), and a pooled
// scratch reused across calls does not mix up their records.
func TestSortByPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	sc := new(manyScratch)
	for round := range 300 {
		n := rng.IntN(300)
		ws := make([]want, n)
		for j := range ws {
			var place uint64
			switch round % 4 {
			case 0: // one segment, nearby records
				place = 7<<32 | uint64(rng.IntN(1<<20))
			case 1: // a few segments
				place = uint64(rng.IntN(3))<<32 | uint64(rng.IntN(1<<30))
			case 2: // spans too wide to pack: the comparison sort
				place = rng.Uint64()
			case 3: // many equal places
				place = uint64(rng.IntN(4))
			}
			ws[j] = want{place: place}
		}
		if round%10 == 5 {
			slices.SortFunc(ws, func(a, b want) int { return cmp.Compare(b.place, a.place) })
		}
		for j := range ws {
			ws[j].i, ws[j].at = int32(j), int64(j)
		}
		input := slices.Clone(ws)
		got := sc.sortByPlace(append(sc.ws[:0], ws...))
		if len(got) != n {
			t.Fatalf("round %d: %d records, want %d", round, len(got), n)
		}
		if !slices.IsSortedFunc(got, func(a, b want) int { return cmp.Compare(a.place, b.place) }) {
			t.Fatalf("round %d: not sorted", round)
		}
		// Same multiset: every input record once.
		seen := make([]bool, n)
		for _, w := range got {
			if w.at < 0 || int(w.at) >= n || seen[w.at] || input[w.at] != w {
				t.Fatalf("round %d: record %+v lost, doubled or changed", round, w)
			}
			seen[w.at] = true
		}
		sc.ws = got
	}
}
