package silo

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
)

// gateFS blocks the first file Sync after it is armed until released.
type gateFS struct {
	*memFS
	entered, release chan struct{}
	once             sync.Once
	armed            atomic.Bool
}

type gateFile struct {
	File
	g *gateFS
}

func (g *gateFS) Open(name string) (File, error) {
	f, err := g.memFS.Open(name)
	if err != nil {
		return nil, err
	}
	return gateFile{f, g}, nil
}

func (g *gateFS) Create(name string) (File, error) {
	f, err := g.memFS.Create(name)
	if err != nil {
		return nil, err
	}
	return gateFile{f, g}, nil
}

func (f gateFile) Sync() error {
	if !f.g.armed.Load() {
		return f.File.Sync()
	}
	f.g.once.Do(func() {
		close(f.g.entered)
		<-f.g.release
	})
	return f.File.Sync()
}

// TestGroupCommit: callers that arrive while a sync is in flight all share
// the next one.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	g := &gateFS{memFS: newMemFS(), entered: make(chan struct{}), release: make(chan struct{})}
	s, err := Open(ctx, "/silo", Options{FS: g, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitSpare(t, s) // its sync must not take the gate
	g.armed.Store(true)
	if err := s.PutPiece(ctx, keyOf(0), []byte("first")); err != nil {
		t.Fatal(err)
	}
	first := make(chan error)
	go func() { first <- s.Sync(ctx) }()
	select { // the first sync is in flight
	case <-g.entered:
	case <-time.After(time.Minute):
		t.Fatal("Sync did not reach the file system")
	}
	const n = 10
	errs := make(chan error, n)
	for i := 1; i <= n; i++ {
		go func() {
			if err := s.PutPiece(ctx, keyOf(i), []byte("queued")); err != nil {
				errs <- err
				return
			}
			errs <- s.Sync(ctx)
		}()
	}
	for deadline := time.Now().Add(time.Minute); ; {
		s.smu.Lock()
		w := 0
		if s.next != nil {
			w = s.next.waiters
		}
		s.smu.Unlock()
		if w == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d callers queued", w)
		}
		time.Sleep(time.Millisecond)
	}
	before := s.syncs.Load()
	close(g.release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := s.syncs.Load() - before; got != 2 {
		t.Fatalf("%d fdatasyncs for 1 + %d queued callers, want 2", got, n)
	}
	// Everything is durable: a power cut keeps it.
	crashed := g.memFS.Crash(nil)
	s2, err := Open(ctx, "/silo", Options{FS: crashed, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for i := 1; i <= n; i++ {
		mustGet(t, s2, keyOf(i), []byte("queued"))
	}
}

// TestTombstoneOutlivesOlderSegment: a tombstone is kept through
// compactions while an older segment still holds the deleted put, so the
// piece never comes back; once that segment is gone, the tombstone goes too.
func TestTombstoneOutlivesOlderSegment(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{SegmentSize: 64 << 10, CompactRatio: 1}
	s := openT(t, dir, opts)
	victim := keyOf(1000)
	if err := s.PutPiece(ctx, victim, pieceData(1000, 4096)); err != nil {
		t.Fatal(err)
	}
	// Fill the rest of segment 1 with pieces that stay live.
	for i := 0; i < 16; i++ {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeletePiece(ctx, victim); err != nil {
		t.Fatal(err)
	}
	// Segment 1 is 1/17 dead; the tombstone's segment is compacted
	// repeatedly (it holds dead bytes), each time copying the tombstone.
	for i := 100; i < 140; i++ {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
		if err := s.DeletePiece(ctx, keyOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.RLock()
	firstTomb := s.tombs[victim].tombSeg
	s.mu.RUnlock()
	for round := range 3 {
		s.mu.Lock()
		s.opts.CompactRatio = 0.5 // segment 1 stays: only 1/17 dead
		s.mu.Unlock()
		s.compactMu.Lock()
		err := s.compactLocked(ctx, false)
		s.compactMu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = openT(t, dir, opts)
		if _, err := s.GetPiece(ctx, victim); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("round %d: deleted piece: %v", round, err)
		}
		s.mu.RLock()
		_, has1 := s.segs[1]
		s.mu.RUnlock()
		if !has1 {
			t.Fatalf("round %d: segment 1 was compacted", round)
		}
		s.mu.RLock()
		tomb := s.tombs[victim]
		_, hasFirst := s.segs[firstTomb]
		s.mu.RUnlock()
		if tomb.tombStamp == 0 || hasFirst || tomb.tombSeg == firstTomb {
			t.Fatalf("round %d: tombstone %+v not moved from segment %d (still there: %v)", round, tomb, firstTomb, hasFirst)
		}
	}
	// Now compact everything: segment 1 goes, and with it the need for the
	// tombstone.
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.RLock()
	ntombs := len(s.tombs)
	s.mu.RUnlock()
	if ntombs != 0 {
		t.Fatalf("%d tombstones kept after every older segment is gone", ntombs)
	}
	s.Close()
	s = openT(t, dir, opts)
	if _, err := s.GetPiece(ctx, victim); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("deleted piece after full compaction: %v", err)
	}
	for i := 0; i < 16; i++ {
		mustGet(t, s, keyOf(i), pieceData(i, 4096))
	}
}

// TestBackgroundCompaction: deleting most pieces makes the background
// compactor shrink the silo without an explicit Compact.
func TestBackgroundCompaction(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{SegmentSize: 32 << 10, CompactRatio: 0.5})
	const n = 200
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	before := s.Stats()
	for i := range n {
		if i%5 != 0 {
			if err := s.DeletePiece(ctx, keyOf(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(time.Minute)
	for s.Stats().DiskBytes > before.DiskBytes/2 {
		if time.Now().After(deadline) {
			t.Fatalf("no background compaction: %+v (before %+v)", s.Stats(), before)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := 0; i < n; i += 5 {
		mustGet(t, s, keyOf(i), pieceData(i, 4096))
	}
}

// waitSpare waits until the background spare segment is ready.
func waitSpare(t testing.TB, s *Silo) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; {
		s.spareMu.Lock()
		ok := s.spare != nil
		s.spareMu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no spare segment after a minute")
		}
		time.Sleep(time.Millisecond)
	}
}
