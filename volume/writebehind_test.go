package volume

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// behindHold is the local test holder that counts WriteBehind calls
// (blocks.WriteBehinder), as a node's silo has them.
type behindHold struct {
	localHold
	calls atomic.Int32
}

func (h *behindHold) WriteBehind() error {
	h.calls.Add(1)
	return nil
}

// TestWriteBehind: WriteBehind pushes a volume's few writes, appends
// their journal record and asks the holder to write behind, only while
// the volume is flushed often (a synced Flush within writeBehindWindow)
// and holds little unsynced data on this node; it makes nothing durable
// (a crash before the Flush may lose it), and a Flush after it makes
// everything durable, a later overwrite included.
func TestWriteBehind(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	far := openFar(t, e)
	if err := far.WriteAt(ctx, bytes.Repeat([]byte{9}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := far.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := far.WriteAt(ctx, bytes.Repeat([]byte{8}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := far.WriteBehind(ctx); err != nil || far.dirtyBytes == 0 {
		t.Fatalf("a volume whose journal and blocks are not local wrote behind (err %v, dirty %d)", err, far.dirtyBytes)
	}
	if err := far.Close(ctx); err != nil {
		t.Fatal(err)
	}

	hold := &behindHold{localHold: localHold{e.hold}}
	opts := e.options("n1")
	opts.DirtyLimit = 64 << 20 // no pushes under pressure
	useLocal(e, &opts, hold)
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 16<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	data := func(b byte) []byte { return bytes.Repeat([]byte{b}, 4096) }
	write := func(b byte, off int64) {
		t.Helper()
		if err := v.WriteAt(ctx, data(b), off); err != nil {
			t.Fatal(err)
		}
	}
	// behind runs WriteBehind and reports whether it wrote behind: the
	// dirty chunks pushed, a record appended, the holder asked.
	behind := func() bool {
		t.Helper()
		dirtyBytes := func() int64 {
			v.mu.Lock()
			defer v.mu.Unlock()
			return v.dirtyBytes
		}
		nextSeq := func() uint64 {
			v.flushMu.Lock()
			defer v.flushMu.Unlock()
			return v.nextSeq
		}
		calls, seq, dirty := hold.calls.Load(), nextSeq(), dirtyBytes()
		if err := v.WriteBehind(ctx); err != nil {
			t.Fatalf("WriteBehind: %v", err)
		}
		did := hold.calls.Load() > calls
		want := dirty
		if did {
			want = 0
		}
		if appended := nextSeq() > seq; did != appended || dirtyBytes() != want {
			t.Fatalf("WriteBehind did part of its work: holder asked %v, record appended %v, dirty %d then %d", did, appended, dirty, dirtyBytes())
		}
		return did
	}
	flush := func() {
		t.Helper()
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}

	write(1, 0)
	if behind() {
		t.Fatal("wrote behind before any Flush")
	}
	flush()
	write(2, 4096)
	if !behind() {
		t.Fatal("did not write behind a 4 KiB write right after a Flush")
	}
	v.mu.Lock()
	durable := v.durableSeq >= v.opSeq
	v.mu.Unlock()
	if durable {
		t.Fatal("WriteBehind made the write durable: only Flush may")
	}
	if behind() {
		t.Fatal("wrote behind with nothing dirty")
	}
	write(3, 4096) // overwrites what was written behind
	flush()
	write(4, 8192)
	v.syncedAt.Store(int64(time.Since(monoBase) - 2*writeBehindWindow))
	if behind() {
		t.Fatal("wrote behind although the last Flush is older than writeBehindWindow")
	}
	flush()
	write(5, 1<<20)
	if err := v.WriteAt(ctx, bytes.Repeat([]byte{6}, 2*quickFlush), 2<<20); err != nil {
		t.Fatal(err)
	}
	if behind() {
		t.Fatal("wrote behind more than quickFlush bytes")
	}
	flush()
	write(7, 12288)
	if !behind() {
		t.Fatal("did not write behind after the bulk write's Flush")
	}
	// A crash now: whatever was written behind may be lost, and the
	// flushed state must be whole.
	abandon(v)
	e.hold.Crash()
	v = mustOpen(t, c, "vol", false)
	check := func(off int64, b byte) {
		t.Helper()
		got := make([]byte, 4096)
		if err := v.ReadAt(ctx, got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data(b)) {
			t.Fatalf("offset %d reads %d..., want %d", off, got[0], b)
		}
	}
	check(0, 1)
	check(4096, 3)
	check(8192, 4)
	check(1<<20, 5)
	// A Flush after WriteBehind makes it durable.
	write(8, 12288)
	flush()
	write(9, 16384)
	if !behind() {
		t.Fatal("did not write behind after the reopened volume's Flush")
	}
	flush()
	abandon(v)
	e.hold.Crash()
	v = mustOpen(t, c, "vol", false)
	defer v.Close(ctx)
	check(12288, 8)
	check(16384, 9)
	ro := mustOpen(t, c, "vol", true)
	if err := ro.WriteBehind(ctx); err != nil {
		t.Fatalf("WriteBehind of a read-only view: %v", err)
	}
}
