package silo

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cairn/blocks"
)

// TestSweepDeletesOnlyStalePieces: a sweep deletes pieces stored before it
// began, and spares those stored after, put again after, or already gone;
// compaction (which moves records) keeps a record's age.
func TestSweepDeletesOnlyStalePieces(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{SegmentSize: 64 << 10, CompactRatio: 1})
	defer s.Close()
	put := func(k int) {
		t.Helper()
		if err := s.PutPiece(ctx, keyOf(k), pieceData(k, 3000)); err != nil {
			t.Fatal(err)
		}
	}
	for k := range 40 {
		put(k)
	}
	// Kill half of the first segments' records and compact: the live ones
	// move, keeping their stamps.
	for k := 20; k < 30; k++ {
		if err := s.DeletePiece(ctx, keyOf(k)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	sw, err := s.BeginSweep()
	if err != nil {
		t.Fatal(err)
	}
	put(40)                                              // new since the sweep began
	put(1)                                               // written again
	if err := s.DeletePiece(ctx, keyOf(2)); err != nil { // gone
		t.Fatal(err)
	}
	deleted := map[int]bool{}
	for k := range 41 {
		ok, err := sw.DeleteStale(ctx, keyOf(k))
		if err != nil {
			t.Fatalf("piece %d: %v", k, err)
		}
		deleted[k] = ok
	}
	for k := range 41 {
		want := k != 1 && k != 2 && k != 40 && (k < 20 || k >= 30)
		if deleted[k] != want {
			t.Errorf("piece %d: deleted %v, want %v", k, deleted[k], want)
		}
		has, err := s.HasPiece(ctx, keyOf(k))
		if err != nil {
			t.Fatal(err)
		}
		if stays := k == 1 || k == 40; has != stays {
			t.Errorf("piece %d: held %v after the sweep, want %v", k, has, stays)
		}
	}
	mustGet(t, s, keyOf(1), pieceData(1, 3000))
	mustGet(t, s, keyOf(40), pieceData(40, 3000))
	sw.End()
	sw.End()
	if _, err := sw.DeleteStale(ctx, keyOf(40)); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("DeleteStale after End: %v, want ErrClosed", err)
	}
	mustGet(t, s, keyOf(40), pieceData(40, 3000))
}

// TestSweepsAreIndependent: a piece put again during one sweep is spared
// by every sweep open at the time, and not by one begun after it.
func TestSweepsAreIndependent(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	for k := range 3 {
		if err := s.PutPiece(ctx, keyOf(k), pieceData(k, 100)); err != nil {
			t.Fatal(err)
		}
	}
	a, err := s.BeginSweep()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutPiece(ctx, keyOf(0), pieceData(0, 100)); err != nil {
		t.Fatal(err)
	}
	b, err := s.BeginSweep()
	if err != nil {
		t.Fatal(err)
	}
	defer a.End()
	defer b.End()
	if ok, err := a.DeleteStale(ctx, keyOf(0)); err != nil || ok {
		t.Fatalf("sweep a deleted piece 0 put again during it: %v %v", ok, err)
	}
	if ok, err := b.DeleteStale(ctx, keyOf(0)); err != nil || !ok {
		t.Fatalf("sweep b spared piece 0, put again before it began: %v %v", ok, err)
	}
	if ok, err := b.DeleteStale(ctx, keyOf(1)); err != nil || !ok {
		t.Fatalf("sweep b: piece 1: %v %v", ok, err)
	}
	if ok, err := a.DeleteStale(ctx, keyOf(1)); err != nil || ok {
		t.Fatalf("sweep a: piece 1 already deleted: %v %v", ok, err)
	}
	mustGet(t, s, keyOf(2), pieceData(2, 100))
}

// TestPeekPiece reads the first bytes of pieces buffered, written, sealed
// and compacted, on the real file system and on the in-memory one, and
// reports missing pieces and records that are not the piece asked for.
func TestPeekPiece(t *testing.T) {
	ctx := context.Background()
	for _, fsys := range []FS{nil, newMemFS()} {
		dir := t.TempDir()
		if fsys != nil {
			dir = "/peek"
		}
		s := openT(t, dir, Options{SegmentSize: 64 << 10, FS: fsys})
		check := func(k, n int) {
			t.Helper()
			want := pieceData(k, n)
			for _, size := range []int{0, 1, 56, n, n + 10} {
				got, err := s.PeekPiece(ctx, keyOf(k), make([]byte, size))
				if err != nil {
					t.Fatalf("piece %d, %d bytes: %v", k, size, err)
				}
				if !bytes.Equal(got, want[:min(size, n)]) {
					t.Fatalf("piece %d, %d bytes: wrong bytes", k, size)
				}
			}
		}
		for k := range 60 {
			if err := s.PutPiece(ctx, keyOf(k), pieceData(k, 1000+k*50)); err != nil {
				t.Fatal(err)
			}
		}
		check(59, 1000+59*50) // still in the write buffer
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		for k := range 60 {
			check(k, 1000+k*50)
		}
		for k := range 30 {
			if err := s.DeletePiece(ctx, keyOf(k)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		for k := 30; k < 60; k++ {
			check(k, 1000+k*50)
		}
		if _, err := s.PeekPiece(ctx, keyOf(3), make([]byte, 8)); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("deleted piece: %v", err)
		}
		s.Close()
		if _, err := s.PeekPiece(ctx, keyOf(40), make([]byte, 8)); !errors.Is(err, blocks.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	}
}
