package volume

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/policies"
	"cairn/volume/chunkmap"
)

// gatedMutable holds CompareAndSet calls (a raft proposal's wait) while
// armed: each announces itself on entered, then waits for release.
type gatedMutable struct {
	blocks.MutableStore
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedMutable) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, payload []byte) (blocks.Version, error) {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if armed {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.MutableStore.CompareAndSet(ctx, id, want, payload)
}

// TestFlushDuringCheckpointSwap: while a checkpoint waits for its root
// compare-and-set, a write and FLUSH complete; the checkpoint then
// swaps the root it prepared, keeps the FLUSH's record in the journal,
// and after a crash both the checkpointed and the later write read back.
func TestFlushDuringCheckpointSwap(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	g := &gatedMutable{MutableStore: e.mut, entered: make(chan struct{}), release: make(chan struct{})}
	opts := e.options("node-a")
	opts.Mutable = g
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	a, b := bytes.Repeat([]byte{0xa1}, 4096), bytes.Repeat([]byte{0xb2}, 4096)
	if err := v.WriteAt(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	ckpt := make(chan error, 1)
	go func() { ckpt <- v.checkpoint(ctx) }()
	<-g.entered // the checkpoint has written its map and waits on the swap
	flushed := make(chan error, 1)
	go func() {
		err := v.WriteAt(ctx, b, 4096)
		if err == nil {
			err = v.Flush(ctx)
		}
		flushed <- err
	}()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(g.release)
		t.Fatal("a FLUSH waited for a checkpoint's root swap")
	}
	close(g.release)
	if err := <-ckpt; err != nil {
		t.Fatal(err)
	}
	r, _, err := c.loadRoot(ctx, v.id)
	if err != nil {
		t.Fatal(err)
	}
	v.flushMu.Lock()
	since, next := v.sinceCkpt, v.nextSeq
	v.flushMu.Unlock()
	if r.CheckpointSeq != v.ckptSeq || r.CheckpointSeq >= next || since != int(next-r.CheckpointSeq) {
		t.Fatalf("after the checkpoint: root seq %d, volume's %d, next seq %d, records since %d", r.CheckpointSeq, v.ckptSeq, next, since)
	}
	abandon(v)
	e.hold.Crash()
	c = e.catalog(e.options("node-a"))
	v = mustOpen(t, c, "vol", false)
	defer v.Close(ctx)
	got := make([]byte, 8192)
	if err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:4096], a) || !bytes.Equal(got[4096:], b) {
		t.Fatal("after a crash, the checkpointed write or the one flushed during the swap is lost")
	}
}

// gatedStore holds the first Put made while armed: it announces itself on
// entered, then waits for release. Other Puts go through.
type gatedStore struct {
	blocks.Store
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if armed {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Store.Put(ctx, data)
}

// TestFlushDuringCheckpointPages: while a checkpoint writes its map pages
// (its snapshot taken, flushMu let go), a write and FLUSH complete; the
// checkpoint's root is the snapshot (it holds the first write and not the
// second, whose record stays in the journal), and after a crash both
// writes read back.
func TestFlushDuringCheckpointPages(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	g := &gatedStore{Store: casStore{e.hold}, entered: make(chan struct{}), release: make(chan struct{})}
	opts := e.options("node-a")
	opts.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) { return g, nil }
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	a, b := bytes.Repeat([]byte{0xa1}, 4096), bytes.Repeat([]byte{0xb2}, 4096)
	if err := v.WriteAt(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing is dirty now: the checkpoint's first Put is a map page's.
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
	ckpt := make(chan error, 1)
	go func() { ckpt <- v.checkpoint(ctx) }()
	<-g.entered
	flushed := make(chan error, 1)
	go func() {
		err := v.WriteAt(ctx, b, 4096)
		if err == nil {
			err = v.Flush(ctx)
		}
		flushed <- err
	}()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(g.release)
		t.Fatal("a FLUSH waited for a checkpoint's map pages")
	}
	close(g.release)
	if err := <-ckpt; err != nil {
		t.Fatal(err)
	}
	r, _, err := c.loadRoot(ctx, v.id)
	if err != nil {
		t.Fatal(err)
	}
	v.flushMu.Lock()
	since, next := v.sinceCkpt, v.nextSeq
	v.flushMu.Unlock()
	if r.CheckpointSeq != v.ckptSeq || r.CheckpointSeq >= next || since != int(next-r.CheckpointSeq) {
		t.Fatalf("after the checkpoint: root seq %d, volume's %d, next seq %d, records since %d", r.CheckpointSeq, v.ckptSeq, next, since)
	}
	if r.Allocated != 1 {
		t.Fatalf("the checkpoint's root counts %d allocated chunks, want 1 (the second write is past its snapshot)", r.Allocated)
	}
	// The root's map is the snapshot: the first write, a hole where the
	// second went.
	m, err := chunkmap.Load(ctx, g, r.MapRoot, r.Chunks, c.mapOptions(r))
	if err != nil {
		t.Fatal(err)
	}
	for chunk, want := range map[uint64]bool{0: true, 1: false} {
		got, err := m.Get(ctx, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if got.IsZero() == want {
			t.Fatalf("the checkpoint's map at chunk %d: %v, want data %v", chunk, got, want)
		}
	}
	abandon(v)
	e.hold.Crash()
	c = e.catalog(e.options("node-a"))
	v = mustOpen(t, c, "vol", false)
	defer v.Close(ctx)
	got := make([]byte, 8192)
	if err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:4096], a) || !bytes.Equal(got[4096:], b) {
		t.Fatal("after a crash, the checkpointed write or the one flushed during the checkpoint is lost")
	}
}
