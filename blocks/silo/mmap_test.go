package silo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
)

// TestMappedReadOfAShrunkFile: a segment file cut short behind the silo's
// back, after the silo mapped it, makes reads past the cut fail with an
// I/O error (the mapping's fault caught), not crash the process; pieces
// before the cut still read back.
func TestMappedReadOfAShrunkFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentSize: 1 << 20})
	const n = 200 // 800 KiB: all in the first segment
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 8192)
	got, err := s.GetPieceInto(ctx, keyOf(0), buf)
	if err != nil || !bytes.Equal(got, pieceData(0, 4000)) {
		t.Fatalf("first read: %v", err)
	}
	s.mu.RLock()
	e, _ := s.index.get(keyOf(0))
	seg := s.segs[e.seg]
	s.mu.RUnlock()
	if seg.mm.ptr.Load() == nil {
		t.Fatal("the segment was not mapped by a read")
	}
	if err := os.Truncate(seg.name, 64<<10); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetPieceInto(ctx, keyOf(1), buf)
	if err != nil || !bytes.Equal(got, pieceData(1, 4000)) {
		t.Fatalf("piece before the cut: %v", err)
	}
	_, err = s.GetPieceInto(ctx, keyOf(n-1), buf)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("piece past the cut: %v, want EIO", err)
	}
}
