package peer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/internal/bloom"
)

// fakeCollector sweeps a set of addresses: Sweep deletes those the filter
// does not contain.
type fakeCollector struct {
	mu     sync.Mutex
	held   map[blocks.Addr]bool
	live   []blocks.Addr
	next   uint64
	open   map[uint64]bool
	slow   time.Duration // per address swept, to make progress items
	ended  []uint64
	filter *bloom.Filter
}

func (f *fakeCollector) BeginSweep(context.Context) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.open[f.next] = true
	return f.next, nil
}

func (f *fakeCollector) LiveRefs(ctx context.Context, mark func(blocks.Addr) error) error {
	for _, a := range f.live {
		if err := mark(a); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeCollector) Sweep(ctx context.Context, id uint64, filter *bloom.Filter, progress func(checked, swept int64) error) (SweepResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.open[id] {
		return SweepResult{}, fmt.Errorf("no sweep %d: %w", id, blocks.ErrNotFound)
	}
	delete(f.open, id)
	f.ended = append(f.ended, id)
	var r SweepResult
	r.DiskBefore = int64(len(f.held))
	if filter != nil {
		for a := range f.held {
			r.Checked++
			if !filter.Has(a) {
				delete(f.held, a)
				r.Swept++
			}
			time.Sleep(f.slow)
			if err := progress(r.Checked, r.Swept); err != nil {
				return r, err
			}
		}
	}
	r.DiskAfter = int64(len(f.held))
	return r, nil
}

func gcAddr(i int) blocks.Addr { return blocks.Sum([]byte(fmt.Sprint("gc ", i))) }

// TestGCRoundTrip: begin, live, sweep over the wire; a sweep slower than
// the client's timeout stays alive through its progress items.
func TestGCRoundTrip(t *testing.T) {
	ctx := testCtx(t)
	col := &fakeCollector{held: map[blocks.Addr]bool{}, open: map[uint64]bool{}, slow: 3 * time.Millisecond}
	for i := range 1000 {
		col.held[gcAddr(i)] = true
	}
	for i := range 20000 { // more than one stream batch
		col.live = append(col.live, gcAddr(i))
	}
	ts := startServer(t, nil, "", func(o *ServerOptions) { o.Collector = col })
	c := newClient(t, ts.addr, func(o *ClientOptions) { o.Timeout = 1500 * time.Millisecond })
	id, err := c.GCBegin(ctx)
	if err != nil || id != 1 {
		t.Fatalf("GCBegin: %d, %v", id, err)
	}
	var live []blocks.Addr
	if err := c.GCLive(ctx, func(a blocks.Addr) error { live = append(live, a); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(live) != len(col.live) || live[0] != col.live[0] || live[len(live)-1] != col.live[len(live)-1] {
		t.Fatalf("GCLive: %d addresses, want %d", len(live), len(col.live))
	}
	f := bloom.New(500, 16, 7)
	for i := range 500 {
		f.Add(gcAddr(i))
	}
	start := time.Now()
	r, err := c.GCSweep(ctx, id, f.Encode())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sweep took %v: %+v", time.Since(start), r)
	if r.Checked != 1000 || r.Swept < 495 || r.Swept > 500 || r.DiskBefore != 1000 || r.DiskAfter != 1000-r.Swept {
		t.Fatalf("sweep result %+v", r)
	}
	for i := range 500 {
		if !col.held[gcAddr(i)] {
			t.Fatalf("live address %d swept", i)
		}
	}
	// The sweep ended: a second run of it fails, as does a made-up one.
	if _, err := c.GCSweep(ctx, id, f.Encode()); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("second sweep: %v, want not found", err)
	}
	// Abort ends a sweep without sweeping.
	id2, err := c.GCBegin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := len(col.held)
	if r, err := c.GCSweep(ctx, id2, nil); err != nil || r.Swept != 0 || len(col.held) != before {
		t.Fatalf("abort: %+v %v", r, err)
	}
	// A filter that does not decode is refused, and ends the sweep.
	id3, _ := c.GCBegin(ctx)
	if _, err := c.GCSweep(ctx, id3, []byte("not a filter")); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad filter: %v, want a bad-request error", err)
	}
	if len(col.held) != before || col.open[id3] {
		t.Fatalf("bad filter: held %d (want %d), sweep still open %v", len(col.held), before, col.open[id3])
	}
	// The connection is still good.
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestGCWithoutCollector: a node that serves no collection answers every
// gc request with a bad-request error, and keeps the connection.
func TestGCWithoutCollector(t *testing.T) {
	ctx := testCtx(t)
	ts := startServer(t, nil, "")
	c := newClient(t, ts.addr)
	if _, err := c.GCBegin(ctx); !errors.Is(err, ErrProtocol) {
		t.Fatalf("GCBegin: %v", err)
	}
	if err := c.GCLive(ctx, func(blocks.Addr) error { return nil }); !errors.Is(err, ErrProtocol) {
		t.Fatalf("GCLive: %v", err)
	}
	if _, err := c.GCSweep(ctx, 1, nil); !errors.Is(err, ErrProtocol) {
		t.Fatalf("GCSweep: %v", err)
	}
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeGCSweep(t *testing.T) {
	f := bloom.New(10, 16, 1).Encode()
	id, raw, abort, err := decodeGCSweep(encodeGCSweep(9, f))
	if err != nil || id != 9 || abort || string(raw) != string(f) {
		t.Fatalf("round trip: %d %v %v", id, abort, err)
	}
	if id, raw, abort, err := decodeGCSweep(encodeGCSweep(3, nil)); err != nil || id != 3 || !abort || raw != nil {
		t.Fatalf("abort round trip: %d %v %v", id, abort, err)
	}
	for name, p := range map[string][]byte{
		"short":          make([]byte, 8),
		"bad flags":      append(make([]byte, 8), 2),
		"abort + filter": append(append(make([]byte, 8), gcAbort), f...),
	} {
		if _, _, _, err := decodeGCSweep(p); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}
