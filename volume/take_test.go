package volume

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// TestTakeWriteAccounting: a TakeWrite keeps the whole chunks of its
// buffer and counts the buffer whole in the dirty bytes until the last
// chunk lets go (overwritten or pushed); the partial chunks at its ends are
// copied; the buffer comes back exactly once; a refused write gives it
// back at once.
func TestTakeWriteAccounting(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("node-a"))
	const bs = 4 << 10
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(bs)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	p := make([]byte, 64<<10, 80<<10) // cap counts: the whole allocation is pinned
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	want := bytes.Clone(p)
	released := 0
	const off = 1000 // partial first and last chunks
	if err := v.TakeWrite(ctx, p, off, func() { released++ }); err != nil {
		t.Fatal(err)
	}
	dirty := func() int64 {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.dirtyBytes
	}
	// [1000, 66536) touches chunks 0..16: 1..15 whole (slices of p), 0 and
	// 16 partial (copied into pool buffers).
	if got, wantB := dirty(), int64(cap(p))+2*bs; got != wantB || c.dirty.Load() != wantB {
		t.Fatalf("dirty bytes %d (catalogue %d), want %d: the lent buffer whole and two copied chunks", got, c.dirty.Load(), wantB)
	}
	got := make([]byte, len(p))
	if err := v.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, want))
	}
	// Overwrite every whole chunk but one: the buffer is still held.
	other := bytes.Repeat([]byte{0xcd}, 14*bs)
	if err := v.WriteAt(ctx, other, bs); err != nil {
		t.Fatal(err)
	}
	if released != 0 {
		t.Fatal("the buffer came back while a chunk still slices it")
	}
	copy(want[bs-off:], other)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if released != 1 {
		t.Fatalf("released %d times after the Flush pushed every chunk, want 1", released)
	}
	if d := dirty(); d != 0 || c.dirty.Load() != 0 {
		t.Fatalf("dirty bytes %d (catalogue %d) after Flush, want 0", d, c.dirty.Load())
	}
	for i := range p {
		p[i] = 0xee // the volume must no longer read it
	}
	if err := v.ReadAt(ctx, got, off); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after release: %v, equal %v", err, bytes.Equal(got, want))
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Refused (read-only): released before TakeWrite returns, nothing counted.
	ro := mustOpen(t, c, "vol", true)
	released = 0
	err := ro.TakeWrite(ctx, make([]byte, 8<<10), 0, func() { released++ })
	if !errors.Is(err, ErrReadOnly) || released != 1 || c.dirty.Load() != 0 {
		t.Fatalf("read-only TakeWrite: err %v, released %d, dirty %d; want ErrReadOnly, 1, 0", err, released, c.dirty.Load())
	}
	if err := ro.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
