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

// gate holds the first call made while it is armed: the call announces
// itself on entered, then waits for release.
type gate struct {
	mu      sync.Mutex
	armed   bool
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) arm() {
	g.mu.Lock()
	g.armed = true
	g.mu.Unlock()
}

// pass is called at the start of a gated call.
func (g *gate) pass() {
	g.mu.Lock()
	armed := g.armed
	g.armed = false
	g.mu.Unlock()
	if armed {
		g.entered <- struct{}{}
		<-g.release
	}
}

// gatedMutable holds a CompareAndSet (a raft proposal's wait) at its gate.
type gatedMutable struct {
	blocks.MutableStore
	*gate
}

func (g gatedMutable) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, payload []byte) (blocks.Version, error) {
	g.pass()
	return g.MutableStore.CompareAndSet(ctx, id, want, payload)
}

// gatedStore holds a Put at its gate.
type gatedStore struct {
	blocks.Store
	*gate
}

func (g gatedStore) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	g.pass()
	return g.Store.Put(ctx, data)
}

// flushDuringCheckpoint arms g, runs a checkpoint of v until g holds it,
// and meanwhile writes b at 4096 and flushes, which must complete
// (where names what holds the checkpoint); then it lets the checkpoint
// end, and checks that the root's checkpoint seq is the volume's and that
// the FLUSH's record stays in the journal. It returns the root.
func flushDuringCheckpoint(t *testing.T, c *Catalogue, v *volumeImpl, g *gate, b []byte, where string) *rootRecord {
	t.Helper()
	ctx := context.Background()
	g.arm()
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
		t.Fatalf("a FLUSH waited for a checkpoint's %s", where)
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
	return r
}

// writtenVolume creates and opens volume "vol" with opts, writes a at 0
// and returns a second chunk's worth, b, for the test to write.
func writtenVolume(t *testing.T, e *env, opts Options) (c *Catalogue, v *volumeImpl, a, b []byte) {
	t.Helper()
	ctx := context.Background()
	c = e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v = mustOpen(t, c, "vol", false)
	a, b = bytes.Repeat([]byte{0xa1}, 4096), bytes.Repeat([]byte{0xb2}, 4096)
	if err := v.WriteAt(ctx, a, 0); err != nil {
		t.Fatal(err)
	}
	return c, v, a, b
}

// crashReads abandons v as a crash would, reopens it and checks that a
// and b read back at 0 and 4096.
func crashReads(t *testing.T, e *env, v *volumeImpl, a, b []byte) {
	t.Helper()
	ctx := context.Background()
	abandon(v)
	e.hold.Crash()
	c := e.catalog(e.options("node-a"))
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

// TestFlushDuringCheckpointSwap: while a checkpoint waits for its root
// compare-and-set, a write and FLUSH complete; the checkpoint then
// swaps the root it prepared, keeps the FLUSH's record in the journal,
// and after a crash both the checkpointed and the later write read back.
func TestFlushDuringCheckpointSwap(t *testing.T) {
	e := newEnv(t)
	g := newGate()
	opts := e.options("node-a")
	opts.Mutable = gatedMutable{e.mut, g}
	c, v, a, b := writtenVolume(t, e, opts)
	flushDuringCheckpoint(t, c, v, g, b, "root swap")
	crashReads(t, e, v, a, b)
}

// TestFlushDuringCheckpointPages: while a checkpoint writes its map pages
// (its snapshot taken, flushMu let go), a write and FLUSH complete; the
// checkpoint's root is the snapshot (it holds the first write and not the
// second, whose record stays in the journal), and after a crash both
// writes read back.
func TestFlushDuringCheckpointPages(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	g := newGate()
	st := gatedStore{casStore{e.hold}, g}
	opts := e.options("node-a")
	opts.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) { return st, nil }
	c, v, a, b := writtenVolume(t, e, opts)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing is dirty now: the checkpoint's first Put is a map page's.
	r := flushDuringCheckpoint(t, c, v, g, b, "map pages")
	if r.Allocated != 1 {
		t.Fatalf("the checkpoint's root counts %d allocated chunks, want 1 (the second write is past its snapshot)", r.Allocated)
	}
	// The root's map is the snapshot: the first write, a hole where the
	// second went.
	m, err := chunkmap.Load(ctx, st, r.MapRoot, r.Chunks, c.mapOptions(r))
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
	crashReads(t, e, v, a, b)
}
