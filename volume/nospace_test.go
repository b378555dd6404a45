package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/policies"
)

// fullStore is casStore that refuses every Put with blocks.ErrNoSpace
// while full is set, and counts the Puts it was asked for.
type fullStore struct {
	casStore
	full atomic.Bool
	puts atomic.Int64
}

func (s *fullStore) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	s.puts.Add(1)
	if s.full.Load() {
		return blocks.Addr{}, fmt.Errorf("test store: %w", blocks.ErrNoSpace)
	}
	return s.casStore.Put(ctx, data)
}

// TestFlushOnAFullStoreFailsFast: a FLUSH of many dirty chunks onto a
// store out of space stops trying once a Put reports it, returns an error
// wrapping blocks.ErrNoSpace, and loses nothing: once space is back, the
// next FLUSH pushes every chunk, and they read back after a reopen.
func TestFlushOnAFullStoreFailsFast(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	st := &fullStore{casStore: casStore{e.hold}}
	opts := e.options("node-a")
	opts.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) { return st, nil }
	opts.DirtyLimit = 64 << 20
	c := e.catalog(opts)
	const bs, chunks = 4096, 2000
	if _, err := c.Create(ctx, "vol", chunks*bs, testPolicy(bs)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	want := make([]byte, chunks*bs)
	for i := range want {
		want[i] = byte(i/bs) ^ byte(i)
	}
	if err := v.WriteAt(ctx, want, 0); err != nil {
		t.Fatal(err)
	}
	st.full.Store(true)
	before := st.puts.Load()
	err := v.Flush(ctx)
	if !errors.Is(err, blocks.ErrNoSpace) {
		t.Fatalf("Flush onto a full store: %v, want ErrNoSpace", err)
	}
	if n := st.puts.Load() - before; n > int64(2*max(opts.PutParallel, 16)) {
		t.Fatalf("Flush onto a full store tried %d Puts for %d dirty chunks; want it to stop at the first refusals", n, chunks)
	}
	got := make([]byte, len(want))
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after the failed Flush: %v (equal %v)", err, bytes.Equal(got, want))
	}
	st.full.Store(false)
	if err := v.Flush(ctx); err != nil {
		t.Fatalf("Flush once space is back: %v", err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	v = mustOpen(t, c, "vol", false)
	clear(got)
	if err := v.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after a reopen: %v (equal %v)", err, bytes.Equal(got, want))
	}
}
