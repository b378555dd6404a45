package volume

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestDirtyLimitIsShared: the write-back cache is one budget for all the
// catalogue's open volumes. Writing past it into one volume while another
// holds most of it makes the other push too (its background is asked),
// so the total comes back under the limit; everything reads back, and
// closing a volume returns its share.
func TestDirtyLimitIsShared(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	opts := e.options("n1")
	const limit = 1 << 20
	opts.DirtyLimit = limit
	c := e.catalog(opts)
	for _, name := range []string{"a", "b"} {
		if _, err := c.Create(ctx, name, 16<<20, testPolicy(4096)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := mustOpen(t, c, "a", false), mustOpen(t, c, "b", false)
	data := bytes.Repeat([]byte("cairn!"), 4096/6+1)[:4096]
	// Volume a: a quarter of the limit, so nothing pushes yet.
	for i := range limit / 2 / 4096 / 2 {
		if err := a.WriteAt(ctx, data, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.dirty.Load(); got == 0 || got > limit/2 {
		t.Fatalf("after writing a: %d dirty bytes in the catalogue", got)
	}
	// Volume b: well past the limit.
	for i := range 3 * limit / 4096 {
		if err := b.WriteAt(ctx, data, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(time.Minute); c.dirty.Load() > limit; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d dirty bytes a minute after the writes, over the %d limit", c.dirty.Load(), limit)
		}
	}
	got := make([]byte, 4096)
	for _, v := range []*volumeImpl{a, b} {
		if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("volume %s: read back %v", v.name, err)
		}
	}
	for _, v := range []*volumeImpl{a, b} {
		if err := v.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.dirty.Load(); got != 0 {
		t.Fatalf("%d dirty bytes after both volumes closed", got)
	}
}

// TestIdleVolumePushesItsCache: dirty chunks of a volume nobody writes to
// are pushed by the background (a FLUSH then only syncs), and read back.
func TestIdleVolumePushesItsCache(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("n1"))
	if _, err := c.Create(ctx, "v", 16<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "v", false)
	defer v.Close(ctx)
	data := bytes.Repeat([]byte{7}, 3*4096)
	if err := v.WriteAt(ctx, data, 8192); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		v.mu.Lock()
		db := v.dirtyBytes
		v.mu.Unlock()
		if db == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dirty bytes a minute after the last write", db)
		}
	}
	got := make([]byte, len(data))
	if err := v.ReadAt(ctx, got, 8192); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
}
