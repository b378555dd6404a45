package volume

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/policies"
)

// manyStore is casStore with blocks.ManyGetter: GetMany packs the blocks
// into the caller's buffer, as the silo does, and fails (or truncates) the
// blocks bad picks, so that the callers' fallback to a single read is
// exercised.
type manyStore struct {
	casStore
	calls atomic.Int64
	mu    sync.Mutex
	bad   func(a blocks.Addr) (truncate bool, fail bool)
}

func (s *manyStore) GetMany(ctx context.Context, addrs []blocks.Addr, buf *[]byte) ([][]byte, []error) {
	s.calls.Add(1)
	s.mu.Lock()
	bad := s.bad
	s.mu.Unlock()
	out := make([][]byte, len(addrs))
	errs := make([]error, len(addrs))
	total := 0
	for i, a := range addrs {
		out[i], errs[i] = s.Get(ctx, a)
		total += len(out[i])
	}
	if cap(*buf) < total {
		*buf = make([]byte, total)
	}
	b := (*buf)[:total]
	at := 0
	for i, a := range addrs {
		n := copy(b[at:], out[i])
		out[i] = b[at : at+n : at+n]
		at += n
		if bad == nil {
			continue
		}
		switch truncate, fail := bad(a); {
		case fail:
			out[i], errs[i] = nil, fmt.Errorf("many store: %v: %w", a, blocks.ErrCorrupt)
		case truncate && len(out[i]) > 0:
			out[i] = out[i][:len(out[i])-1]
		}
	}
	return out, errs
}

func (s *manyStore) setBad(f func(a blocks.Addr) (truncate, fail bool)) {
	s.mu.Lock()
	s.bad = f
	s.mu.Unlock()
}

// readVec reads [off, off+n) of v through ReadVec, into a fresh slice.
func readVec(ctx context.Context, v *volumeImpl, off int64, n int) ([]byte, error) {
	var got []byte
	calls := 0
	err := v.ReadVec(ctx, off, n, func(bufs [][]byte) error {
		calls++
		for _, b := range bufs {
			got = append(got, b...)
		}
		return nil
	})
	if err == nil && calls != 1 {
		return nil, fmt.Errorf("fn called %d times", calls)
	}
	if err != nil && calls != 0 {
		return nil, fmt.Errorf("fn called %d times and then %w", calls, err)
	}
	return got, err
}

// TestLargeReadsMatchModel: reads of many chunks (ReadAt and ReadVec,
// unaligned, across stored, dirty, trimmed and never-written chunks, one
// at a time and many at once) return exactly what was written, and go
// through GetMany; blocks GetMany fails or truncates are read again alone.
func TestLargeReadsMatchModel(t *testing.T) {
	ctx := context.Background()
	const bs, size = 4096, 2 << 20
	rng := rand.New(rand.NewPCG(5, 6))
	v, ms, model, write := manyVolume(t, bs, size, rng)

	// Stored chunks, then dirty ones over some of them, a trimmed range,
	// and the last quarter never written.
	write(0, size*3/4)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		write(rng.Int64N(size*3/4-bs*4), 1+rng.Int64N(bs*3))
	}
	if err := v.Trim(ctx, 64*bs, 16*bs); err != nil {
		t.Fatal(err)
	}
	clear(model[64*bs : 80*bs])

	check := func(what string, off int64, n int) {
		t.Helper()
		p := make([]byte, n)
		if err := v.ReadAt(ctx, p, off); err != nil {
			t.Fatalf("%s: ReadAt [%d, +%d): %v", what, off, n, err)
		}
		if !bytes.Equal(p, model[off:off+int64(n)]) {
			t.Fatalf("%s: ReadAt [%d, +%d): wrong bytes", what, off, n)
		}
		got, err := readVec(ctx, v, off, n)
		if err != nil {
			t.Fatalf("%s: ReadVec [%d, +%d): %v", what, off, n, err)
		}
		if !bytes.Equal(got, model[off:off+int64(n)]) {
			t.Fatalf("%s: ReadVec [%d, +%d): wrong bytes", what, off, n)
		}
	}
	ranges := func() (int64, int) {
		n := 1 + rng.IntN(1<<20)
		return rng.Int64N(size - int64(n) + 1), n
	}
	for range 30 {
		off, n := ranges()
		check("alone", off, n)
	}
	check("whole", 0, size)
	if ms.calls.Load() == 0 {
		t.Fatal("GetMany was never called")
	}

	// Many at once: most reads find the cores busy and run inline.
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 10 {
				n := 1 + r.IntN(1<<20)
				off := r.Int64N(size - int64(n) + 1)
				p := make([]byte, n)
				if err := v.ReadAt(ctx, p, off); err != nil || !bytes.Equal(p, model[off:off+int64(n)]) {
					errc <- fmt.Errorf("concurrent ReadAt [%d, +%d): %v", off, n, err)
					return
				}
				got, err := readVec(ctx, v, off, n)
				if err != nil || !bytes.Equal(got, model[off:off+int64(n)]) {
					errc <- fmt.Errorf("concurrent ReadVec [%d, +%d): %v", off, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	// GetMany fails or truncates a third of the blocks: they are read alone.
	ms.setBad(func(a blocks.Addr) (bool, bool) { return a[0]%3 == 0, a[0]%3 == 1 })
	for range 10 {
		off, n := ranges()
		check("bad batch", off, n)
	}
}

// TestReadVecErrors: ReadVec refuses what ReadAt refuses without calling
// fn, reports a block that cannot be read at all, and returns fn's error.
func TestReadVecErrors(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("a"))
	const bs, size = 4096, 1 << 20
	if _, err := c.Create(ctx, "v", size, testPolicy(bs)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "v", false)
	defer v.Close(ctx)
	if _, err := readVec(ctx, v, size-bs, 2*bs); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("read past the end: %v, want ErrOutOfRange", err)
	}
	if got, err := readVec(ctx, v, 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("empty read: %d bytes, %v", len(got), err)
	}
	if got, err := readVec(ctx, v, 0, size); err != nil || !bytes.Equal(got, make([]byte, size)) {
		t.Fatalf("never written: %v", err)
	}
	p := bytes.Repeat([]byte{7}, 8*bs)
	if err := v.WriteAt(ctx, p, 0); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("stop")
	if err := v.ReadVec(ctx, 0, 8*bs, func([][]byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn's error: got %v", err)
	}
	// Lose a stored block: the read fails, fn is not called.
	a, err := v.m.Get(ctx, 3)
	if err != nil || a.IsZero() {
		t.Fatalf("chunk 3: %v %v", a, err)
	}
	if err := e.hold.DeletePiece(ctx, a); err != nil {
		t.Fatal(err)
	}
	if _, err := readVec(ctx, v, 0, 8*bs); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("lost block: %v, want ErrNotFound", err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := readVec(ctx, v, 0, 8*bs); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed: %v, want ErrClosed", err)
	}
}

// TestReadVecManyBatches: a ReadVec larger than one batch (readBatchBytes),
// read by one goroutine batch after batch, returns exactly what was
// written across the batches' edges (stored, dirty and never-written
// chunks), and each batch goes to the store in one GetMany.
func TestReadVecManyBatches(t *testing.T) {
	ctx := context.Background()
	const bs = 4096
	const size = 2*readBatchBytes + 3*bs*64
	v, ms, model, write := manyVolume(t, bs, size, rand.New(rand.NewPCG(7, 8)))
	write(0, size-bs*100) // the last 100 chunks never written
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Dirty chunks on both sides of the first batch's edge.
	write(readBatchBytes-bs-100, 2*bs+200)
	for _, r := range []struct {
		off int64
		n   int
	}{
		{0, size},
		{1, size - 2},
		{readBatchBytes - 3, readBatchBytes + 7},
		{bs * 5, 2*readBatchBytes - bs*3},
	} {
		calls := ms.calls.Load()
		got, err := readVec(ctx, v, r.off, r.n)
		if err != nil {
			t.Fatalf("ReadVec [%d, +%d): %v", r.off, r.n, err)
		}
		if !bytes.Equal(got, model[r.off:r.off+int64(r.n)]) {
			t.Fatalf("ReadVec [%d, +%d): wrong bytes", r.off, r.n)
		}
		first, last := r.off/bs, (r.off+int64(r.n)-1)/bs
		batches := (last-first)/(readBatchBytes/bs) + 1
		if d := ms.calls.Load() - calls; d != batches {
			t.Fatalf("ReadVec [%d, +%d): %d GetMany calls, want one per batch (%d)", r.off, r.n, d, batches)
		}
	}
}

// manyVolume opens a volume of size bytes (chunks of bs) over a manyStore,
// closed when the test ends, with write, which writes n random bytes
// (drawn from rng) at off and copies them into model.
func manyVolume(t *testing.T, bs, size int64, rng *rand.Rand) (*volumeImpl, *manyStore, []byte, func(off, n int64)) {
	t.Helper()
	ctx := context.Background()
	e := newEnv(t)
	ms := &manyStore{casStore: casStore{e.hold}}
	opts := e.options("a")
	opts.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) { return ms, nil }
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "v", size, testPolicy(policies.Size(bs))); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "v", false)
	t.Cleanup(func() { v.Close(ctx) })
	model := make([]byte, size)
	write := func(off, n int64) {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if err := v.WriteAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	return v, ms, model, write
}
