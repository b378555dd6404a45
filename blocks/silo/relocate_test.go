package silo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
)

func TestScattered(t *testing.T) {
	seg1, seg2 := &segment{id: 1}, &segment{id: 2}
	run := func(seg *segment, from uint32, k int) []viewRec {
		var r []viewRec
		for j := range k {
			r = append(r, viewRec{seg: seg, l: loc{seg: seg.id, off: from + uint32(j)*(hdrSize+4096), n: 4096}})
		}
		return r
	}
	var apart []viewRec
	for j := range 64 {
		apart = append(apart, run(seg1, uint32(j)*3*(hdrSize+4096), 1)...)
	}
	for _, c := range []struct {
		name string
		recs []viewRec
		want bool
	}{
		{"one run", run(seg1, 0, 256), false},
		{"too few records", apart[:relocMinRecs-1], false},
		{"every record apart", apart, true},
		{"runs of 8", append(append(run(seg1, 0, 8), run(seg2, 0, 8)...), append(run(seg1, 1<<20, 8), run(seg2, 1<<20, 8)...)...), false},
		{"runs of 4", append(append(run(seg1, 0, 4), run(seg2, 0, 4)...), append(append(run(seg1, 1<<20, 4), run(seg2, 1<<20, 4)...), append(run(seg1, 2<<20, 8), run(seg2, 2<<20, 8)...)...)...), true},
		{"same offsets, two segments", append(run(seg1, 0, 16), run(seg2, 16*(hdrSize+4096), 16)...), false},
	} {
		if got := scattered(c.recs); got != c.want {
			t.Errorf("%s: scattered = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestNoRelocationByDefault: a silo opened without Options.Relocate moves
// nothing, however scattered its reads.
func TestNoRelocationByDefault(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	const n = 256
	keys := make([]blocks.Addr, n)
	for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		keys[i] = keyOf(i)
		if err := s.PutPiece(ctx, keys[i], pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	views := make([][]byte, n)
	release := s.ViewPieces(ctx, keys, views)
	release()
	if s.relocQ != nil || s.Stats().Relocated != 0 {
		t.Fatalf("relocation ran: queue %v, %d moved", s.relocQ != nil, s.Stats().Relocated)
	}
	if !scatteredKeys(s, keys) {
		t.Fatal("the pieces were not scattered: the test proves nothing")
	}
}

// scatteredKeys reports whether the records of keys, in that order, are
// scattered as ViewPieces judges it.
func scatteredKeys(s *Silo, keys []blocks.Addr) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var recs []viewRec
	for i, k := range keys {
		e, _ := s.index.get(k)
		recs = append(recs, viewRec{i: int32(i), seg: s.segs[e.seg], l: e.loc})
	}
	return scattered(recs)
}

// waitRelocated waits until the silo has moved at least n pieces.
func waitRelocated(t *testing.T, s *Silo, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for s.Stats().Relocated < n {
		if time.Now().After(deadline) {
			t.Fatalf("relocated %d pieces, want %d", s.Stats().Relocated, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitRelocatorIdle waits until the relocator's queue is empty and its
// count stops moving.
func waitRelocatorIdle(t *testing.T, s *Silo) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for last := int64(-1); ; {
		time.Sleep(20 * time.Millisecond)
		now := s.Stats().Relocated
		if len(s.relocQ) == 0 && now == last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the relocator did not go idle")
		}
		last = now
	}
}

// TestReadRelocation writes pieces in a shuffled order, reads them in
// key order, and checks that the relocator lays them down in that order
// (the index's locations run contiguously), that they read back right
// before and after a reopen, that a piece moves only once, and that
// compaction then reclaims the old copies.
func TestReadRelocation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentSize: 1 << 20, CompactRatio: 1, Relocate: true}) // only dead segments compact by themselves
	const n = 512
	for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	keys := make([]blocks.Addr, n)
	for i := range keys {
		keys[i] = keyOf(i)
	}
	view := func() (got int) {
		views := make([][]byte, n)
		release := s.ViewPieces(ctx, keys, views)
		defer release()
		for i, v := range views {
			if v == nil {
				continue
			}
			if !bytes.Equal(v, pieceData(i, 4096)) {
				t.Fatalf("piece %d: wrong view", i)
			}
			got++
		}
		return got
	}
	written := s.Stats()
	if got := view(); got != n {
		t.Fatalf("%d views of %d synced pieces", got, n)
	}
	waitRelocated(t, s, n)
	// Laid down in key order: contiguous but where a segment rolled.
	breaks := 0
	s.mu.RLock()
	var prev entry
	for i := range n {
		e, ok := s.index.get(keyOf(i))
		if !ok || !e.moved {
			s.mu.RUnlock()
			t.Fatalf("piece %d: in the index %v, moved %v", i, ok, e.moved)
		}
		if i > 0 && (e.seg != prev.seg || int64(e.off) != int64(prev.off)+prev.size()) {
			breaks++
		}
		prev = e
	}
	s.mu.RUnlock()
	if max := n*(hdrSize+4096)/(1<<20) + 1; breaks > max {
		t.Errorf("%d breaks in the relocated pieces, want at most %d (segment rolls)", breaks, max)
	}
	// A second read queues nothing: every piece has moved once.
	view()
	if q := len(s.relocQ); q != 0 {
		t.Errorf("%d batches queued after a read of moved pieces", q)
	}
	if got := s.Stats().Relocated; got != n {
		t.Errorf("relocated %d, want %d", got, n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened (the segments mapped whole), the pieces are views in one
	// run, which is not scattered: nothing moves again.
	s = openT(t, dir, Options{SegmentSize: 1 << 20, CompactRatio: 1, Relocate: true})
	defer s.Close()
	if got := view(); got != n {
		t.Errorf("%d views of %d relocated pieces after reopen", got, n)
	}
	if q := len(s.relocQ); q != 0 {
		t.Errorf("%d batches queued after a read of pieces in order", q)
	}
	for i := range n {
		got, err := s.GetPiece(ctx, keyOf(i))
		if err != nil || !bytes.Equal(got, pieceData(i, 4096)) {
			t.Fatalf("piece %d after reopen: %v", i, err)
		}
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if after := s.Stats().DiskBytes; after > written.DiskBytes+1<<20 {
		t.Errorf("disk bytes %d after compaction, %d before the moves: the old copies stayed", after, written.DiskBytes)
	}
	for i := range n {
		got, err := s.GetPiece(ctx, keyOf(i))
		if err != nil || !bytes.Equal(got, pieceData(i, 4096)) {
			t.Fatalf("piece %d after compaction: %v", i, err)
		}
	}
}

// TestReadRelocationRaces reads scattered windows of pieces (which the
// relocator moves) while other goroutines delete and put them again and
// compact, then checks after a reopen that every piece is what the last
// operation on it left: present with its bytes, or gone (a relocation
// racing a delete must not bring a piece back).
func TestReadRelocationRaces(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{SegmentSize: 256 << 10, CompactRatio: 0.3, Relocate: true}
	s := openT(t, dir, opts)
	const n = 1024
	size := func(i int) int { return 1000 + i*37%3000 }
	for _, i := range rand.New(rand.NewPCG(3, 4)).Perm(n) {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, size(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var present [n]atomic.Bool // what the last operation on each piece left
	for i := range present {
		present[i].Store(true)
	}
	var locks [n]sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	fail := make(chan error, 8)
	report := func(err error) {
		select {
		case fail <- err:
		default:
		}
	}
	for w := range 2 { // deleters and putters
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rnd.IntN(n)
				locks[i].Lock()
				var err error
				if present[i].Load() {
					err = s.DeletePiece(ctx, keyOf(i))
					present[i].Store(false)
				} else {
					err = s.PutPiece(ctx, keyOf(i), pieceData(i, size(i)))
					present[i].Store(true)
				}
				locks[i].Unlock()
				if err != nil {
					report(err)
					return
				}
				if rnd.IntN(16) == 0 {
					if err := s.Sync(ctx); err != nil {
						report(err)
						return
					}
				}
			}
		})
	}
	wg.Go(func() { // compaction
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Compact(ctx); err != nil {
				report(err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	// Every fourth move finds its piece deleted, or deleted and put
	// again, between its read and its copy.
	index := make(map[blocks.Addr]int, n)
	for i := range n {
		index[keyOf(i)] = i
	}
	var hooked atomic.Int64
	s.relocHook = func(key blocks.Addr) {
		c := hooked.Add(1)
		if c%4 != 0 {
			return
		}
		i := index[key]
		locks[i].Lock()
		defer locks[i].Unlock()
		if !present[i].Load() {
			return
		}
		err := s.DeletePiece(ctx, key)
		present[i].Store(false)
		if err == nil && c%8 == 0 {
			err = s.PutPiece(ctx, key, pieceData(i, size(i)))
			present[i].Store(true)
		}
		if err != nil {
			report(err)
		}
	}
	var moved int64
	rnd := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 400 && moved < 3*n/2; round++ {
		idx := rnd.Perm(n)[:64]
		keys := make([]blocks.Addr, len(idx))
		for j, i := range idx {
			keys[j] = keyOf(i)
		}
		views := make([][]byte, len(keys))
		release := s.ViewPieces(ctx, keys, views)
		for j, v := range views {
			if v != nil && !bytes.Equal(v, pieceData(idx[j], size(idx[j]))) {
				release()
				t.Fatalf("piece %d: wrong view", idx[j])
			}
		}
		release()
		moved = s.Stats().Relocated
		time.Sleep(500 * time.Microsecond)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-fail:
		t.Fatal(err)
	default:
	}
	if moved == 0 {
		t.Fatal("no piece was relocated")
	}
	check := func(when string) {
		for i := range n {
			got, err := s.GetPiece(ctx, keyOf(i))
			switch {
			case present[i].Load() && err != nil:
				t.Fatalf("%s: piece %d: %v", when, i, err)
			case present[i].Load() && !bytes.Equal(got, pieceData(i, size(i))):
				t.Fatalf("%s: piece %d: wrong bytes", when, i)
			case !present[i].Load() && !errors.Is(err, blocks.ErrNotFound):
				t.Fatalf("%s: piece %d deleted, read: %v", when, i, err)
			}
		}
	}
	waitRelocatorIdle(t, s)
	check("open")
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, opts)
	defer s.Close()
	check("reopened")
	t.Logf("relocated %d pieces", moved)
}
