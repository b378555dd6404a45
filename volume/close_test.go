package volume

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/policies"
)

// flakyPuts is casStore whose Puts fail while fail is above zero (each
// failed Put counts it down): a store that is out for a moment.
type flakyPuts struct {
	casStore
	fail *atomic.Int64
}

var errOut = errors.New("test store: out for a moment")

func (s flakyPuts) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	if s.fail.Add(-1) >= 0 {
		return blocks.Addr{}, errOut
	}
	return s.casStore.Put(ctx, data)
}

// TestCloseRetriesTheFinalPush: writes never flushed are pushed by Close;
// a store that fails the first try does not lose them (Close tries again),
// and one that keeps failing makes Close return its error.
func TestCloseRetriesTheFinalPush(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		fails int64
		ok    bool
	}{
		{"fails once", 1, true},
		{"keeps failing", 1 << 40, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			opts := e.options("n1")
			var fail atomic.Int64
			opts.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) {
				return flakyPuts{casStore{e.hold}, &fail}, nil
			}
			cat := e.catalog(opts)
			if _, err := cat.Create(ctx, "v", 1<<20, testPolicy(4096)); err != nil {
				t.Fatal(err)
			}
			v := mustOpen(t, cat, "v", false)
			data := bytes.Repeat([]byte("unflushed"), 4096/9+1)[:4096]
			if err := v.WriteAt(ctx, data, 8192); err != nil {
				t.Fatal(err)
			}
			fail.Store(c.fails)
			err := v.Close(ctx)
			if !c.ok {
				if !errors.Is(err, errOut) {
					t.Fatalf("Close with a failing store: %v, want its error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Close: %v", err)
			}
			v = mustOpen(t, e.catalog(e.options("n1")), "v", false)
			defer v.Close(ctx)
			got := make([]byte, 4096)
			if err := v.ReadAt(ctx, got, 8192); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("after Close and reopen: %v, equal %v", err, bytes.Equal(got, data))
			}
		})
	}
}
