package volume

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"cairn/blocks"
)

func TestLease(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ca := e.catalog(e.options("node-a"))
	cb := e.catalog(e.options("node-b"))
	if _, err := ca.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	a := mustOpen(t, ca, "vol", false)
	old := bytes.Repeat([]byte{1}, 8192)
	if err := a.WriteAt(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// A second writer, here or elsewhere, is refused while the lease lives.
	for _, tc := range []struct {
		name string
		c    *Catalogue
		msg  []string
	}{
		{"same process", ca, []string{"already open read-write in this process"}},
		{"other node", cb, []string{`"node-a" holds the lease until`, "2026-01-01T00:00:15Z", "epoch 1"}},
	} {
		_, err := tc.c.Open(ctx, "vol", OpenOptions{})
		if !errors.Is(err, ErrAttached) {
			t.Fatalf("%s: open = %v, want ErrAttached", tc.name, err)
		}
		for _, m := range tc.msg {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, m)
			}
		}
	}
	if err := cb.Delete(ctx, "vol"); !errors.Is(err, ErrAttached) {
		t.Fatalf("delete while attached elsewhere = %v, want ErrAttached", err)
	}
	if in, err := cb.Inspect(ctx, "vol"); err != nil || !in.Attached || in.Epoch != 1 {
		t.Fatalf("inspect = %+v, %v; want attached at epoch 1", in, err)
	}

	// A read-only view needs no lease and refuses writes.
	ro := mustOpen(t, cb, "vol", true)
	if err := ro.WriteAt(ctx, []byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write on a read-only view = %v, want ErrReadOnly", err)
	}
	got := make([]byte, len(old))
	if err := ro.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("read-only view read = %v, data equal %v", err, bytes.Equal(got, old))
	}
	ro.Close(ctx)

	// A writes more, unflushed; A's lease expires; B takes the volume over.
	lost := bytes.Repeat([]byte{2}, 8192)
	if err := a.WriteAt(ctx, lost, 0); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(16 * time.Second)
	b := mustOpen(t, cb, "vol", false)
	if b.epoch != 2 {
		t.Fatalf("new writer epoch %d, want 2", b.epoch)
	}
	if err := b.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("new writer reads %v (err %v), want the flushed data", got[:4], err)
	}

	// A is fenced: its Flush fails, its appends are refused, it stays fenced.
	if err := a.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("old writer flush = %v, want ErrFenced", err)
	}
	if err := e.hold.Append(ctx, a.id, a.epoch, 99, []byte("x")); !errors.Is(err, blocks.ErrFenced) {
		t.Fatalf("old epoch append = %v, want blocks.ErrFenced", err)
	}
	for name, err := range map[string]error{
		"write": a.WriteAt(ctx, []byte{3}, 0),
		"read":  a.ReadAt(ctx, got, 0),
		"flush": a.Flush(ctx),
		"close": a.Close(ctx),
	} {
		if !errors.Is(err, ErrFenced) {
			t.Errorf("old writer %s = %v, want ErrFenced", name, err)
		}
	}
	// The old writer's unflushed write never appears, now or after B reopens.
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, cb, "vol", false)
	if err := b.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("after takeover and reopen reads %v (err %v), want the flushed data", got[:4], err)
	}
	// Close released the lease: A's node may take it back at once.
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	a2 := mustOpen(t, ca, "vol", false)
	if err := a2.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A lease renewal that finds a newer epoch fences the writer.
func TestRenewFences(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ca := e.catalog(e.options("node-a"))
	if _, err := ca.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	a := mustOpen(t, ca, "vol", false)
	e.clock.Add(time.Minute)
	b := mustOpen(t, e.catalog(e.options("node-b")), "vol", false)
	if err := a.renew(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("renew = %v, want ErrFenced", err)
	}
	if err := a.WriteAt(ctx, []byte{1}, 0); !errors.Is(err, ErrFenced) {
		t.Fatalf("write after fence = %v, want ErrFenced", err)
	}
	// A checkpoint from the old writer must not touch the root either.
	if err := a.checkpoint(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("checkpoint after fence = %v, want ErrFenced", err)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	abandon(a)
}

// Raft stays off the write path: write+Flush pairs make no proposals
// beyond the occasional checkpoint.
func TestFlushMakesNoProposals(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	opts := e.options("node-a")
	opts.CheckpointRecords = 2000
	opts.LeaseTTL = time.Hour // no renewal during the test, however slow the machine
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 64<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	n := 10000
	if testing.Short() {
		n = 2000
	}
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{byte(i + 1)}, 4096)
	}
	syncs := e.hold.Syncs()
	before := e.mut.Proposals()
	for i := 0; i < n; i++ {
		if err := v.WriteAt(ctx, bufs[i%16], int64(i%1000)*4096); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	proposals := e.mut.Proposals() - before
	t.Logf("%d write+Flush pairs: %d proposals, %d syncs", n, proposals, e.hold.Syncs()-syncs)
	if proposals >= 20 {
		t.Fatalf("%d write+Flush pairs made %d proposals; want < 20 (only checkpoints and lease renewals)", n, proposals)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// A journal record whose block never became durable is skipped on replay;
// the others are applied.
func TestReplaySkipsMissingBlocks(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("node-a"))
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	id := mustID(t, c, "vol")
	r, _, err := c.loadRoot(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	present := bytes.Repeat([]byte{5}, 4096)
	a, err := casStore{e.hold}.Put(ctx, present)
	if err != nil {
		t.Fatal(err)
	}
	rec := encodeRecord([]change{{Chunk: 0, Addr: blocks.Sum([]byte("never stored"))}, {Chunk: 1, Addr: a}, {Chunk: 1 << 30, Addr: a}})
	if err := e.hold.Append(ctx, id, r.Epoch, r.CheckpointSeq, rec); err != nil {
		t.Fatal(err)
	}
	v = mustOpen(t, c, "vol", false)
	got := make([]byte, 8192)
	if err := v.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:4096], make([]byte, 4096)) || !bytes.Equal(got[4096:], present) {
		t.Fatal("replay did not skip the missing block and apply the present one")
	}
	if v.nextSeq != r.CheckpointSeq+1 {
		t.Fatalf("next seq %d, want %d", v.nextSeq, r.CheckpointSeq+1)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
