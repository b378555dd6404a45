package volume

import (
	"bytes"
	"context"
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/policies"
)

// localHold is the test holder marked local (blocks.Local), as a node's
// silo is.
type localHold struct{ *memory.Store }

func (localHold) IsLocal() bool { return true }

// localStore is casStore naming h, a local holder, as the holder a Flush
// syncs (blocks.SyncHolders), as a one-node volume's store does.
type localStore struct {
	casStore
	h blocks.Holder
}

func (s localStore) SyncHolders() []blocks.Holder { return []blocks.Holder{s.h} }

// localHolder is a holder that keeps a volume's journal too.
type localHolder interface {
	blocks.Holder
	JournalHolder
}

// useLocal makes opts keep a volume's blocks (in e.hold, through h) and
// its journal on h, as on one node: every holder a Flush syncs is local.
func useLocal(e *env, opts *Options, h localHolder) {
	opts.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) {
		return localStore{casStore{e.hold}, h}, nil
	}
	opts.Journals = func(blocks.ID, policies.Policy) ([]JournalHolder, error) { return []JournalHolder{h}, nil }
}

// openFar opens a volume "far" of a catalogue whose store and journal are
// not local (e's defaults).
func openFar(t *testing.T, e *env) *volumeImpl {
	t.Helper()
	remote := e.catalog(e.options("n0"))
	if _, err := remote.Create(context.Background(), "far", 16<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	return mustOpen(t, remote, "far", false)
}

// TestFlushIsQuick: a Flush is called quick while the volume holds at
// most quickFlush bytes of writes not yet synced, whether still dirty or
// already pushed (a bulk write makes it slow until a Flush completes),
// and only when its journal and blocks are all on this node.
func TestFlushIsQuick(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	far := openFar(t, e)
	if far.FlushIsQuick(0) {
		t.Fatal("a volume whose journal and blocks are not local was called quick")
	}
	if err := far.Close(ctx); err != nil {
		t.Fatal(err)
	}

	opts := e.options("n1")
	opts.DirtyLimit = 64 << 20 // no pushes under pressure
	useLocal(e, &opts, localHold{e.hold})
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 16<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	defer v.Close(ctx)
	quick := func(want bool, when string) {
		t.Helper()
		if got := v.FlushIsQuick(0); got != want {
			t.Fatalf("%s: FlushIsQuick = %v, want %v", when, got, want)
		}
	}
	quick(true, "fresh volume")
	small := bytes.Repeat([]byte{1}, 4096)
	if err := v.WriteAt(ctx, small, 0); err != nil {
		t.Fatal(err)
	}
	quick(true, "after a 4 KiB write")
	if v.FlushIsQuick(2 * quickFlush) {
		t.Fatal("a FUA write of twice quickFlush was called quick")
	}
	bulk := bytes.Repeat([]byte{2}, 2*quickFlush)
	if err := v.WriteAt(ctx, bulk, 1<<20); err != nil {
		t.Fatal(err)
	}
	quick(false, "after a bulk write")
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	quick(true, "after Flush")
	// Pushed but not synced (as the background push leaves it): still
	// a slow Flush, whose sync writes all of it.
	if err := v.WriteAt(ctx, bulk, 8<<20); err != nil {
		t.Fatal(err)
	}
	v.flushMu.Lock()
	_, err := v.pushLocked(ctx)
	v.flushMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	quick(false, "after a push of a bulk write, before any sync")
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	quick(true, "after the Flush that synced the push")
}
