package silo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"cairn/blocks"
)

// TestCompactionNeverLaundersRot: a live piece whose bytes rotted in a
// sealed segment is not copied by compaction (the copy would carry a fresh
// checksum of the rotten bytes and be served as good: "wrong bytes served"
// in TestCorruption, one run in a hundred). It reads as corrupt before and
// after compaction and after a reopen; once a PutPiece replaces it (the
// repair a reader makes), compaction removes the segment, and every piece
// reads back.
func TestCompactionNeverLaundersRot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{SegmentSize: 32 << 10}
	s := openT(t, dir, opts)
	const n = 24 // 4 KiB each: three segments
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	victim, _ := s.index.get(keyOf(1))
	seg := s.segs[victim.seg]
	active := seg == s.active
	s.mu.RUnlock()
	if active {
		t.Fatal("the victim piece is in the active segment: make more pieces")
	}
	// Garbage in the victim's segment makes it a candidate, and rot.
	for _, i := range []int{0, 2, 3} {
		if err := s.DeletePiece(ctx, keyOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.OpenFile(seg.name, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xee}, int64(victim.off)+hdrSize+1234); err != nil {
		t.Fatal(err)
	}
	f.Close()
	corrupt := func(when string) {
		t.Helper()
		got, err := s.GetPiece(ctx, keyOf(1))
		if !errors.Is(err, blocks.ErrCorrupt) {
			t.Fatalf("%s: GetPiece of the rotten piece: %v (equal to the data: %v), want ErrCorrupt", when, err, bytes.Equal(got, pieceData(1, 4000)))
		}
	}
	corrupt("before compaction")
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	corrupt("after compaction")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, opts)
	corrupt("after reopen")
	if err := s.PutPiece(ctx, keyOf(1), pieceData(1, 4000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(seg.name); !os.IsNotExist(err) {
		t.Fatalf("the repaired segment %s is still there after compaction: %v", seg.name, err)
	}
	for i := range n {
		if i == 0 || i == 2 || i == 3 {
			continue
		}
		mustGet(t, s, keyOf(i), pieceData(i, 4000))
	}
}
