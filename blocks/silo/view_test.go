package silo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"testing"

	"cairn/blocks"
)

// TestViewPieces: views are the pieces GetPiece returns, for records in
// sealed and active segments; buffered, missing, deleted and rotten pieces
// get no view (the ordinary read reports the rot).
func TestViewPieces(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentSize: 256 << 10})
	const n = 150 // several segments
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePiece(ctx, keyOf(7)); err != nil {
		t.Fatal(err)
	}
	// Pieces rot on disk: 9 in its payload, 22 in its last byte (which the
	// four-at-a-time check leaves to its tail), 33 in its header.
	rot := func(i int, at int64) {
		t.Helper()
		s.mu.RLock()
		e, _ := s.index.get(keyOf(i))
		name := s.segs[e.seg].name
		s.mu.RUnlock()
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, int64(e.off)+at); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{b[0] ^ 0x10}, int64(e.off)+at); err != nil {
			t.Fatal(err)
		}
	}
	rot(9, hdrSize+100)
	rot(22, hdrSize+4000-1)
	rot(33, 20)
	bad := func(i int) bool { return i == 9 || i == 22 || i == 33 }
	// One more piece stays in the write buffer (no sync).
	if err := s.PutPiece(ctx, keyOf(n), pieceData(n, 4000)); err != nil {
		t.Fatal(err)
	}
	keys := make([]blocks.Addr, 0, n+2)
	for i := range n + 1 {
		keys = append(keys, keyOf(i))
	}
	keys = append(keys, keyOf(-1)) // never stored
	for _, four := range []bool{true, false} {
		checkFour = four
		views := make([][]byte, len(keys))
		release := s.ViewPieces(ctx, keys, views)
		for i := range n + 2 {
			switch {
			case i == 7 || bad(i) || i == n || i == n+1:
				if views[i] != nil {
					t.Errorf("checks four at a time %v: piece %d: got a view, want none", four, i)
				}
			case !bytes.Equal(views[i], pieceData(i, 4000)):
				t.Errorf("checks four at a time %v: piece %d: view differs from the piece (%d bytes)", four, i, len(views[i]))
			}
		}
		release()
	}
	checkFour = true
	for _, i := range []int{9, 22, 33} {
		if _, err := s.GetPiece(ctx, keyOf(i)); !errors.Is(err, blocks.ErrCorrupt) {
			t.Fatalf("rotten piece %d: %v, want ErrCorrupt", i, err)
		}
	}
	mustGet(t, s, keyOf(n), pieceData(n, 4000))
	// Without views to release, nothing is pinned.
	s.mu.RLock()
	for _, seg := range s.segs {
		if p := seg.mm.pins.Load(); p != 0 {
			t.Errorf("segment %s: %d pins after release", seg.name, p)
		}
	}
	s.mu.RUnlock()
}

// TestViewsOutliveCompactionAndClose: a view stays readable, with its
// bytes, while compaction removes its segment and while the silo closes;
// the mapping goes with the release (pinned segments are not unmapped
// before it).
func TestViewsOutliveCompactionAndClose(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentSize: 128 << 10, CompactRatio: 1})
	const n = 100
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	keys := []blocks.Addr{keyOf(0), keyOf(1), keyOf(n - 1)}
	views := make([][]byte, len(keys))
	release := s.ViewPieces(ctx, keys, views)
	for j, i := range []int{0, 1, n - 1} {
		if !bytes.Equal(views[j], pieceData(i, 4000)) {
			t.Fatalf("piece %d: view differs", i)
		}
	}
	s.mu.RLock()
	e, _ := s.index.get(keyOf(0))
	first := s.segs[e.seg]
	s.mu.RUnlock()
	maps := s.maps.Load()
	// Everything in the first segment dies; compaction removes its file.
	for i := range n - 1 {
		if err := s.DeletePiece(ctx, keyOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(first.name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("compacted segment still on disk: %v", err)
	}
	if !bytes.Equal(views[0], pieceData(0, 4000)) || !bytes.Equal(views[1], pieceData(1, 4000)) {
		t.Fatal("a view changed when compaction removed its segment")
	}
	if s.maps.Load() != maps {
		t.Fatalf("mappings %d after compaction, want %d (the pinned one kept)", s.maps.Load(), maps)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(views[2], pieceData(n-1, 4000)) {
		t.Fatal("a view changed when the silo closed")
	}
	if s.maps.Load() == 0 {
		t.Fatal("pinned mappings were unmapped at Close")
	}
	release()
	if m := s.maps.Load(); m != 0 {
		t.Fatalf("%d mappings left after the last release", m)
	}
	// A closed silo hands out no views.
	if rel := s.ViewPieces(ctx, keys, make([][]byte, len(keys))); rel == nil {
		t.Fatal("nil release")
	}
}

// TestViewsUnderCompactionChurn: readers take views of live pieces and
// check every byte, then release, while a writer deletes and puts back
// pieces and compaction removes segments under them (the writer also
// holds views across each compaction). A view never shows
// other bytes than its piece's (a mapping unmapped under a pinned view
// would fault or show another file), and every pin is released at the
// end.
func TestViewsUnderCompactionChurn(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{SegmentSize: 64 << 10, CompactRatio: 0.5})
	const n = 64
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 3000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errc := make(chan error, 3)
	var readers sync.WaitGroup
	for r := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			keys := make([]blocks.Addr, n)
			for i := range keys {
				keys[i] = keyOf(i)
			}
			views := make([][]byte, n)
			for round := 0; ; round++ {
				select {
				case <-stop:
					return
				default:
				}
				clear(views)
				release := s.ViewPieces(ctx, keys, views)
				for i, v := range views {
					if v != nil && !bytes.Equal(v, pieceData(i, 3000)) {
						errc <- fmt.Errorf("reader %d round %d: view of piece %d shows other bytes", r, round, i)
						release()
						return
					}
				}
				release()
			}
		}()
	}
	// The writer: delete, compact, put back (the same bytes: a piece's
	// content never changes under its key), sync; in every round it also
	// holds views of its own across the compaction, checked after it.
	keys := make([]blocks.Addr, n)
	for i := range keys {
		keys[i] = keyOf(i)
	}
	held := make([][]byte, n)
	for round := range 60 {
		clear(held)
		release := s.ViewPieces(ctx, keys, held)
		for i := round % 4; i < n; i += 4 {
			if err := s.DeletePiece(ctx, keyOf(i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Compact(ctx); err != nil {
			t.Fatal(err)
		}
		for i := round % 4; i < n; i += 4 {
			if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 3000)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		for i, v := range held {
			if v != nil && !bytes.Equal(v, pieceData(i, 3000)) {
				t.Fatalf("round %d: a view of piece %d held across compaction shows other bytes", round, i)
			}
		}
		release()
	}
	close(stop)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	s.mu.RLock()
	for _, seg := range s.segs {
		if p := seg.mm.pins.Load(); p != 0 {
			t.Errorf("segment %s: %d pins left", seg.name, p)
		}
	}
	s.mu.RUnlock()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if m := s.maps.Load(); m != 0 {
		t.Fatalf("%d mappings left after Close with no views", m)
	}
}

// BenchmarkViewPieces1M: ViewPieces of 1 MiB (256 pieces of 4 KiB) from
// 512 MiB of pieces, larger than most caches: in the order they were
// written (a sequential read of data written sequentially), and scattered
// (each piece far from the one before, as after random overwrites). Read
// relocation is off (the default), or it would turn the second into the
// first.
func BenchmarkViewPieces1M(b *testing.B) {
	ctx := context.Background()
	s := openBench(b)
	data := pieceData(1, 4096)
	const per, total = 256, 131072
	for i := range total {
		if err := s.PutPiece(ctx, benchKey(uint64(i)), data); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	keys := make([]blocks.Addr, per)
	views := make([][]byte, per)
	// Map every segment's pages first (a first read's page faults).
	for i := 0; i < total; i += per {
		for j := range keys {
			keys[j] = benchKey(uint64(i + j))
		}
		s.ViewPieces(ctx, keys, views)()
	}
	type benchCase struct {
		warm      bool
		scattered bool
		four      bool
	}
	var cases []benchCase
	for range 2 {
		for _, scattered := range []bool{false, true} {
			cases = append(cases, benchCase{true, scattered, true}, benchCase{true, scattered, false}, benchCase{false, scattered, true})
		}
	}
	for _, c := range cases {
		warm := c.warm
		order := "written"
		if c.scattered {
			order = "scattered"
		}
		checks := "one"
		if c.four {
			checks = "four"
		}
		b.Run(fmt.Sprintf("order=%s/prefetch=%v/checks=%s", order, warm, checks), func(b *testing.B) {
			prefetchViews, checkFour = warm, c.four
			defer func() { prefetchViews, checkFour = true, true }()
			b.SetBytes(per * 4096)
			b.ReportAllocs()
			var k uint64
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			defer func() {
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
				cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
			}()
			for b.Loop() {
				for j := range keys {
					if c.scattered {
						// An odd multiplier permutes the pieces modulo total
						// (a power of two): neighbours land far apart.
						keys[j] = benchKey(k * 2654435761 % total)
					} else {
						keys[j] = benchKey(k % total)
					}
					k++
				}
				release := s.ViewPieces(ctx, keys, views)
				for j := range views {
					if len(views[j]) != 4096 {
						b.Fatalf("piece %d: view of %d bytes", j, len(views[j]))
					}
				}
				release()
			}
		})
	}
}

// TestViewsOfAShrunkFile: ViewPieces over a segment file cut short behind
// the silo's back, after it was mapped, loads ahead into the cut (the
// slots, the headers, the next record while one is checked) without
// crashing: pieces before the cut get their views (but the last before it,
// whose check loaded the faulting next record, may get none), pieces past
// it none, and the ordinary read reports them as I/O errors.
func TestViewsOfAShrunkFile(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{SegmentSize: 1 << 20})
	const n = 200 // 800 KiB: all in the first segment
	keys := make([]blocks.Addr, n)
	for i := range n {
		keys[i] = keyOf(i)
		if err := s.PutPiece(ctx, keys[i], pieceData(i, 4000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	views := make([][]byte, n)
	s.ViewPieces(ctx, keys, views)() // maps the segment
	for i := range n {
		if !bytes.Equal(views[i], pieceData(i, 4000)) {
			t.Fatalf("piece %d: no view before the cut", i)
		}
	}
	s.mu.RLock()
	e, _ := s.index.get(keys[0])
	seg := s.segs[e.seg]
	s.mu.RUnlock()
	const cut = 64 << 10
	if err := os.Truncate(seg.name, cut); err != nil {
		t.Fatal(err)
	}
	clear(views)
	release := s.ViewPieces(ctx, keys, views)
	defer release()
	before := 0
	for i := range n {
		s.mu.RLock()
		e, _ := s.index.get(keys[i])
		s.mu.RUnlock()
		end := int64(e.off) + e.size()
		switch {
		case end > cut && views[i] != nil:
			t.Fatalf("piece %d (ends at %d, past the cut): got a view", i, end)
		case end <= cut && views[i] != nil:
			if !bytes.Equal(views[i], pieceData(i, 4000)) {
				t.Fatalf("piece %d: view differs from the piece", i)
			}
			before++
		}
	}
	if before == 0 {
		t.Fatal("no piece before the cut got a view")
	}
	if _, err := s.GetPieceInto(ctx, keys[n-1], make([]byte, 0, 8192)); !errors.Is(err, syscall.EIO) {
		t.Fatalf("piece past the cut: %v, want EIO", err)
	}
}

// TestViewsAcrossManySegments: one ViewPieces call whose pieces alternate
// between more segments than it keeps track of at once (it replaces them
// in turn) gets every view right, and leaves no pin after its release.
func TestViewsAcrossManySegments(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{SegmentSize: 64 << 10})
	const n = 400 // 15 pieces a segment: about 27 segments
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Visit piece j of every segment before piece j+1 of any: each key
	// is in another segment than the one before it.
	var keys []blocks.Addr
	var want []int
	for j := range 15 {
		for i := j; i < n; i += 15 {
			keys = append(keys, keyOf(i))
			want = append(want, i)
		}
	}
	views := make([][]byte, len(keys))
	release := s.ViewPieces(ctx, keys, views)
	for x, i := range want {
		if !bytes.Equal(views[x], pieceData(i, 4000)) {
			t.Errorf("piece %d: view differs from the piece (%d bytes)", i, len(views[x]))
		}
	}
	release()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.segs) < 20 {
		t.Fatalf("only %d segments: the test needs more than eight", len(s.segs))
	}
	for _, seg := range s.segs {
		if p := seg.mm.pins.Load(); p != 0 {
			t.Errorf("segment %s: %d pins after release", seg.name, p)
		}
	}
}
