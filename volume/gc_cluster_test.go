package volume

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/policies"
)

// chunkFill returns n bytes of 4 KiB chunks, each distinct within the
// fill and from other values of b (so no two fills share a block).
func chunkFill(b byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i/4096) ^ b
		if i%4096 == 0 {
			p[i] = b
		}
	}
	return p
}

// TestLiveRefsAndMarkStoredCoverAWriter plays a cluster collection
// against a writer on another node: the blocks held when the sweep began,
// minus what the writer's node reports from memory (LiveRefs) and what the
// collector reads from roots and journals (MarkStored), are deleted; the
// writer then reads everything back, and so does a fresh open after a
// flush. A previous collection wrote the writer's map pages out between
// checkpoints, so that only its memory references them: the test checks
// that some are, so that it would fail without LiveRefs.
func TestLiveRefsAndMarkStoredCoverAWriter(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	optsA := e.options("node-a")
	optsA.PageEntries = 8
	a := e.catalog(optsA)
	collector := e.catalog(e.options("node-b"))
	if _, err := a.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Create(ctx, "old", 64<<10, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, a, "vol", false)
	want := chunkFill(1, 1<<20)
	if err := v.WriteAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// Overwritten and checkpointed: garbage.
	copy(want, chunkFill(3, 256<<10))
	if err := v.WriteAt(ctx, want[:256<<10], 0); err != nil {
		t.Fatal(err)
	}
	if err := v.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	// Flushed, not checkpointed: in the journal.
	for off := 0; off < 1<<20; off += 64 << 10 {
		p := chunkFill(byte(off>>16)+10, 8<<10)
		copy(want[off:], p)
		if err := v.WriteAt(ctx, p, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Garbage: a deleted volume's blocks, and the overwritten chunks.
	o := mustOpen(t, a, "old", false)
	if err := o.WriteAt(ctx, chunkFill(99, 64<<10), 0); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "old"); err != nil {
		t.Fatal(err)
	}

	// A previous collection wrote the writer's dirty map pages out: until
	// the next checkpoint, only the writer's memory references them.
	if err := a.LiveRefs(ctx, func(blocks.Addr) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, chunkFill(5, 4096), 1<<19); err != nil {
		t.Fatal(err)
	}
	copy(want[1<<19:], chunkFill(5, 4096))

	// The sweep begins: what is held now may go.
	held := map[blocks.Addr]bool{}
	if err := e.hold.Walk(ctx, func(k blocks.Addr) error { held[k] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	live, stored := map[blocks.Addr]bool{}, map[blocks.Addr]bool{}
	if err := a.LiveRefs(ctx, func(x blocks.Addr) error { live[x] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := collector.MarkStored(ctx, func(x blocks.Addr) error { stored[x] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	onlyLive, swept := 0, 0
	for k := range held {
		if live[k] && !stored[k] {
			onlyLive++
		}
		if !live[k] && !stored[k] {
			if err := e.hold.DeletePiece(ctx, k); err != nil {
				t.Fatal(err)
			}
			swept++
		}
	}
	t.Logf("%d blocks held, %d swept, %d referenced from the writer's memory only", len(held), swept, onlyLive)
	if onlyLive == 0 {
		t.Fatal("no block was referenced from the writer's memory only: the test does not exercise LiveRefs")
	}
	if swept == 0 {
		t.Fatal("nothing swept: the test made no garbage")
	}
	if got := readAll(t, v); !bytes.Equal(got, want) {
		t.Fatal("the writer reads different data after the sweep")
	}
	// More writes, a checkpoint (whose root references the pages written
	// out before), a crash of the writer: the data is all there.
	copy(want[4096:], chunkFill(7, 4096))
	if err := v.WriteAt(ctx, want[4096:8192], 4096); err != nil {
		t.Fatal(err)
	}
	if err := v.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	abandon(v)
	e.clock.Add(time.Minute) // the dead writer's lease runs out
	r := mustOpen(t, collector, "vol", false)
	defer r.Close(ctx)
	if got := readAll(t, r); !bytes.Equal(got, want) {
		t.Fatal("data differs after the sweep and a reopen")
	}
}

// checkpointingJournal is a journal holder whose first Replay runs
// before() first: a checkpoint landing while a collector reads the
// journal.
type checkpointingJournal struct {
	JournalHolder
	once   *sync.Once
	before func()
}

func (j *checkpointingJournal) Replay(ctx context.Context, log blocks.ID, from uint64, fn func(blocks.Epoch, uint64, []byte) error) error {
	j.once.Do(j.before)
	return j.JournalHolder.Replay(ctx, log, from, fn)
}

// TestMarkStoredRereadsAMovedRoot: a checkpoint that lands between the
// collector's read of a root and its read of the journal trims the
// records the old root lacks; MarkStored reads the new root then, and
// nothing the volume references is swept.
func TestMarkStoredRereadsAMovedRoot(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	a := e.catalog(e.options("node-a"))
	if _, err := a.Create(ctx, "vol", 256<<10, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, a, "vol", false)
	want := chunkFill(1, 256<<10)
	if err := v.WriteAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	copy(want, chunkFill(2, 64<<10))
	if err := v.WriteAt(ctx, want[:64<<10], 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil { // in the journal only
		t.Fatal(err)
	}
	held := map[blocks.Addr]bool{}
	if err := e.hold.Walk(ctx, func(k blocks.Addr) error { held[k] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	opts := e.options("node-b")
	checkpoints := 0
	var once sync.Once
	opts.Journals = func(blocks.ID, policies.Policy) ([]JournalHolder, error) {
		return []JournalHolder{&checkpointingJournal{JournalHolder: e.hold, once: &once, before: func() {
			if err := v.checkpoint(ctx); err != nil {
				t.Error(err)
			}
			checkpoints++
		}}}, nil
	}
	collector := e.catalog(opts)
	marked := map[blocks.Addr]bool{}
	if err := collector.MarkStored(ctx, func(x blocks.Addr) error { marked[x] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if checkpoints != 1 {
		t.Fatalf("%d checkpoints ran during the marking, want 1", checkpoints)
	}
	for k := range held {
		if !marked[k] {
			if err := e.hold.DeletePiece(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	abandon(v)
	e.clock.Add(time.Minute)
	r := mustOpen(t, collector, "vol", false)
	defer r.Close(ctx)
	if got := readAll(t, r); !bytes.Equal(got, want) {
		t.Fatal("data differs after a sweep whose marking met a checkpoint")
	}
}
