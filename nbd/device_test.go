package nbd

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
)

// chunk is the allocation granularity of memDevice.
const chunk = 4096

// memDevice is an in-memory Device: a byte slice, a set of allocated 4 KiB
// chunks for Extents, a durable copy updated by Flush, and counters.
type memDevice struct {
	mu       sync.Mutex
	data     []byte
	durable  []byte         // contents as of the last Flush
	alloc    map[int64]bool // chunk index -> allocated
	readOnly bool
	bs       int
	failRead error // returned by ReadAt when set
	failAll  error // returned by every I/O method when set
	reads    []span

	readBytes atomic.Int64
	flushes   atomic.Int64
	opens     atomic.Int64
	closes    atomic.Int64
}

type span struct{ off, n int64 }

var _ Device = (*memHandle)(nil)

func newMem(size int64) *memDevice {
	return &memDevice{data: make([]byte, size), durable: make([]byte, size), alloc: map[int64]bool{}, bs: 4096}
}

// memHandle is one connection's view of a memDevice; Close flushes.
type memHandle struct {
	*memDevice
	closed atomic.Bool
}

func (d *memDevice) Size() int64    { return int64(len(d.data)) }
func (d *memDevice) BlockSize() int { return d.bs }
func (d *memDevice) ReadOnly() bool { return d.readOnly }

func (d *memDevice) check(off, n int64) error {
	if off < 0 || n < 0 || off+n > int64(len(d.data)) {
		return fmt.Errorf("mem: [%d, +%d) out of range: %w", off, n, ErrInvalid)
	}
	return nil
}

func (d *memDevice) ReadAt(ctx context.Context, p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, int64(len(p))); err != nil {
		return err
	}
	if d.failRead != nil {
		return d.failRead
	}
	if d.failAll != nil {
		return d.failAll
	}
	copy(p, d.data[off:])
	d.readBytes.Add(int64(len(p)))
	d.reads = append(d.reads, span{off, int64(len(p))})
	return nil
}

func (d *memDevice) markAlloc(off, n int64) {
	for c := off / chunk; c*chunk < off+n; c++ {
		d.alloc[c] = true
	}
}

func (d *memDevice) WriteAt(ctx context.Context, p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, int64(len(p))); err != nil {
		return err
	}
	if d.readOnly {
		return ErrReadOnly
	}
	if d.failAll != nil {
		return d.failAll
	}
	copy(d.data[off:], p)
	d.markAlloc(off, int64(len(p)))
	return nil
}

func (d *memDevice) zero(off, n int64, mayTrim bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, n); err != nil {
		return err
	}
	if d.readOnly {
		return ErrReadOnly
	}
	if d.failAll != nil {
		return d.failAll
	}
	clear(d.data[off : off+n])
	// Whole chunks become holes when trimming is allowed; the rest stays
	// (or becomes) allocated.
	for c := off / chunk; c*chunk < off+n; c++ {
		whole := c*chunk >= off && (c+1)*chunk <= off+n
		if whole && mayTrim {
			delete(d.alloc, c)
		} else if !mayTrim || d.alloc[c] {
			d.alloc[c] = true
		}
	}
	return nil
}

func (d *memDevice) Trim(ctx context.Context, off, n int64) error { return d.zero(off, n, true) }

func (d *memDevice) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	return d.zero(off, n, mayTrim)
}

func (d *memDevice) Flush(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failAll != nil {
		return d.failAll
	}
	copy(d.durable, d.data)
	d.flushes.Add(1)
	return nil
}

func (d *memDevice) Extents(ctx context.Context, off, n int64, fn func(off, n int64, hole bool) error) error {
	d.mu.Lock()
	if err := d.check(off, n); err != nil {
		d.mu.Unlock()
		return err
	}
	type ext struct {
		off, n int64
		hole   bool
	}
	var list []ext
	for c := off / chunk; c*chunk < off+n; c++ {
		s, e := max(c*chunk, off), min((c+1)*chunk, off+n)
		hole := !d.alloc[c]
		if k := len(list); k > 0 && list[k-1].hole == hole {
			list[k-1].n += e - s
			continue
		}
		list = append(list, ext{s, e - s, hole})
	}
	d.mu.Unlock()
	for _, e := range list {
		if err := fn(e.off, e.n, e.hole); err != nil {
			return err
		}
	}
	return nil
}

func (h *memHandle) Close(ctx context.Context) error {
	if h.closed.Swap(true) {
		panic("memHandle closed twice")
	}
	h.closes.Add(1)
	return h.Flush(ctx)
}

// readSpans returns the ranges read so far, sorted.
func (d *memDevice) readSpans() []span {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := append([]span(nil), d.reads...)
	sort.Slice(s, func(i, j int) bool { return s[i].off < s[j].off })
	return s
}

func (d *memDevice) snapshot() (data, durable []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.data...), append([]byte(nil), d.durable...)
}

// memExports serves a fixed set of memDevices. Names in denied are refused
// with ErrDenied (as if another writer had them attached).
type memExports struct {
	mu      sync.Mutex
	devs    map[string]*memDevice
	desc    map[string]string
	denied  map[string]bool
	handles []*memHandle
}

func (e *memExports) List(ctx context.Context) ([]ExportInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []ExportInfo
	for n := range e.devs {
		out = append(out, ExportInfo{Name: n, Description: e.desc[n]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (e *memExports) Open(ctx context.Context, name string) (Device, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.denied[name] {
		return nil, fmt.Errorf("mem: %q attached elsewhere: %w", name, ErrDenied)
	}
	d, ok := e.devs[name]
	if !ok {
		return nil, fmt.Errorf("mem: %q: %w", name, ErrNotFound)
	}
	d.opens.Add(1)
	h := &memHandle{memDevice: d}
	e.handles = append(e.handles, h)
	return h, nil
}

// allClosed reports whether every opened handle was closed.
func (e *memExports) allClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range e.handles {
		if !h.closed.Load() {
			return false
		}
	}
	return true
}

func TestMemDeviceExtents(t *testing.T) {
	d := newMem(64 << 10)
	ctx := context.Background()
	d.WriteAt(ctx, []byte{1}, 5000)
	d.WriteAt(ctx, make([]byte, 8192), 16384)
	d.Trim(ctx, 16384, 4096)
	var got []span
	var holes []bool
	d.Extents(ctx, 0, 64<<10, func(off, n int64, hole bool) error {
		got = append(got, span{off, n})
		holes = append(holes, hole)
		return nil
	})
	want := []span{{0, 4096}, {4096, 4096}, {8192, 12288}, {20480, 4096}, {24576, 40960}}
	wantHoles := []bool{true, false, true, false, true}
	if fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(holes) != fmt.Sprint(wantHoles) {
		t.Fatalf("extents %v %v, want %v %v", got, holes, want, wantHoles)
	}
}

// wrapExports serves memExports' devices through wrap, which returns the
// test's device around the opened one (to gate or watch some calls).
type wrapExports struct {
	*memExports
	wrap func(Device) Device
}

func (e *wrapExports) Open(ctx context.Context, name string) (Device, error) {
	d, err := e.memExports.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return e.wrap(d), nil
}
