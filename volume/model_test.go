package volume

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/policies"
)

// model is the plain-[]byte reference of a volume, with what a crash may
// leave: every byte is its durable value (as of the last completed Flush)
// or one of the values written since.
type model struct {
	cur     []byte
	durable []byte
	alts    [][]byte // per byte: values written since the last Flush
}

func newModel(size int) *model {
	return &model{cur: make([]byte, size), durable: make([]byte, size), alts: make([][]byte, size)}
}

func (m *model) write(off int, p []byte) {
	copy(m.cur[off:], p)
	for i, b := range p {
		m.alts[off+i] = append(m.alts[off+i], b)
	}
}

func (m *model) flushed() {
	m.durable = append(m.durable[:0], m.cur...)
	for i := range m.alts {
		m.alts[i] = m.alts[i][:0]
	}
}

func (m *model) resize(size int) {
	if size < len(m.cur) {
		m.cur = m.cur[:size]
	} else {
		m.cur = append(m.cur, make([]byte, size-len(m.cur))...)
	}
	m.alts = make([][]byte, size)
	m.flushed() // a resize checkpoints
}

// crashed checks got against what a crash may leave and adopts it.
func (m *model) crashed(t *testing.T, got []byte) {
	t.Helper()
	bad := 0
	for i := range got {
		if got[i] == m.durable[i] || bytes.IndexByte(m.alts[i], got[i]) >= 0 {
			continue
		}
		if bad++; bad < 5 {
			t.Errorf("after crash byte %d = %#x: neither durable %#x nor one written since (%d values)", i, got[i], m.durable[i], len(m.alts[i]))
		}
	}
	if bad > 0 {
		t.Fatalf("%d bytes lost or invented by the crash", bad)
	}
	m.cur = append(m.cur[:0], got...)
	m.flushed()
}

func readAll(t *testing.T, v *volumeImpl) []byte {
	t.Helper()
	b := make([]byte, v.Size())
	if err := v.ReadAt(context.Background(), b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestModel(t *testing.T) {
	cases := []struct {
		bs    policies.Size
		size  int
		ops   int
		seeds int
	}{
		{512, 24 << 10, 300, 3},
		{4 << 10, 64 << 10, 300, 5},
		{64 << 10, 256 << 10, 150, 2},
	}
	if testing.Short() {
		for i := range cases {
			cases[i].seeds = 1
		}
	}
	for _, tc := range cases {
		for seed := 0; seed < tc.seeds; seed++ {
			t.Run(fmt.Sprintf("bs=%s/seed=%d", tc.bs, seed), func(t *testing.T) {
				runModel(t, tc.bs, tc.size, tc.ops, uint64(seed), nil)
			})
		}
	}
}

// TestModelSharedHolder runs the model over a store that names its holders
// (blocks.SyncHolders), the journal's holder among them, as on one node:
// each FLUSH then syncs that holder once, and must still lose nothing. It
// also reads through GetInto, and (256 KiB at 4 KiB chunks) reads large
// enough to go in parallel groups.
func TestModelSharedHolder(t *testing.T) {
	modelSeeds(t, 3, func(t *testing.T, seed int, bs policies.Size) {
		runModel(t, bs, 256<<10, 300, uint64(seed)+100, func(e *env, o *Options) {
			o.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) { return holderStore{casStore{e.hold}, e.hold}, nil }
		})
	})
}

// modelSeeds runs fn as a subtest for each of n seeds (one under -short),
// with 512-byte and 4 KiB chunks in turn.
func modelSeeds(t *testing.T, n int, fn func(t *testing.T, seed int, bs policies.Size)) {
	if testing.Short() {
		n = 1
	}
	for seed := range n {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			fn(t, seed, []policies.Size{512, 4 << 10}[seed%2])
		})
	}
}

// TestModelWriteBehind runs the model on a volume whose store and journal
// are local, as on one node, so that the WriteBehind after every third
// write acts whenever the volume was flushed within writeBehindWindow:
// pushes and appends between Flushes must lose and invent nothing, across
// crashes too. The window is widened so that it acts under -race as well.
func TestModelWriteBehind(t *testing.T) {
	defer func(w time.Duration) { writeBehindWindow = w }(writeBehindWindow)
	writeBehindWindow = time.Hour
	modelSeeds(t, 3, func(t *testing.T, seed int, bs policies.Size) {
		var hold *behindHold
		runModel(t, bs, 256<<10, 300, uint64(seed)+200, func(e *env, o *Options) {
			hold = &behindHold{localHold: localHold{e.hold}}
			useLocal(e, o, hold)
		})
		if hold.calls.Load() == 0 {
			t.Fatal("the volume never wrote behind")
		}
		t.Logf("%d writes behind", hold.calls.Load())
	})
}

// holderStore is a casStore that names a holder for blocks.SyncHolders
// (its own, possibly wrapped).
type holderStore struct {
	casStore
	holder blocks.Holder
}

func (s holderStore) SyncHolders() []blocks.Holder { return []blocks.Holder{s.holder} }

// GetInto implements blocks.GetterInto: Get, copied into dst when it fits
// (after scribbling over dst, which the contract allows).
func (s holderStore) GetInto(ctx context.Context, a blocks.Addr, dst []byte) ([]byte, error) {
	dst = dst[:cap(dst)]
	for i := range dst {
		dst[i] = 0xee
	}
	b, err := s.Get(ctx, a)
	if err != nil || len(b) > len(dst) {
		return b, err
	}
	return append(dst[:0], b...), nil
}

func runModel(t *testing.T, bs policies.Size, size, ops int, seed uint64, adjust func(*env, *Options)) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, uint64(bs)))
	e := newEnv(t)
	opts := e.options("node-a")
	if adjust != nil {
		adjust(e, &opts)
	}
	opts.DirtyLimit = int64(bs) * 6 // exercise pressure pushes
	opts.CheckpointRecords = 20
	opts.PageEntries = 4 // deep trees on small volumes
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", int64(size), testPolicy(bs)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	m := newModel(size)
	lends := &lender{}
	snaps := map[string][]byte{}
	randRange := func() (int, int) {
		sz := len(m.cur)
		off := rng.IntN(sz)
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 1 + rng.IntN(16)
		case 1:
			n = 1 + rng.IntN(int(bs)*3)
		case 2:
			off = off / int(bs) * int(bs)
			n = int(bs) * (1 + rng.IntN(3))
		default:
			n = 1 + rng.IntN(sz/4)
		}
		return off, min(n, sz-off)
	}
	for i := 0; i < ops; i++ {
		switch k := rng.IntN(100); {
		case k < 40: // write
			off, n := randRange()
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.IntN(255) + 1)
			}
			m.write(off, p) // before the volume may take p
			var err error
			if rng.IntN(2) == 0 {
				err = v.WriteAt(ctx, p, int64(off))
			} else {
				err = lends.take(t, v, p, int64(off))
			}
			if err != nil {
				t.Fatalf("op %d write [%d,+%d): %v", i, off, n, err)
			}
			if i%3 == 0 {
				// As the NBD server does after a WRITE; a no-op unless the
				// store and journal are local (TestModelWriteBehind).
				if err := v.WriteBehind(ctx); err != nil {
					t.Fatalf("op %d write behind: %v", i, err)
				}
			}
		case k < 50: // trim or zero
			off, n := randRange()
			var err error
			switch rng.IntN(3) {
			case 0:
				err = v.Trim(ctx, int64(off), int64(n))
			default:
				err = v.WriteZeroes(ctx, int64(off), int64(n), rng.IntN(2) == 0)
			}
			if err != nil {
				t.Fatalf("op %d zero [%d,+%d): %v", i, off, n, err)
			}
			m.write(off, make([]byte, n))
		case k < 70: // read
			off, n := randRange()
			p := make([]byte, n)
			if err := v.ReadAt(ctx, p, int64(off)); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, m.cur[off:off+n]) {
				t.Fatalf("op %d read [%d,+%d) differs from the model", i, off, n)
			}
		case k < 80:
			if err := v.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			m.flushed()
		case k < 84:
			if err := v.checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			m.flushed()
		case k < 91: // crash and reopen in a new process
			abandon(v)
			lends.abandoned()
			e.hold.Crash()
			c = e.catalog(opts)
			v = mustOpen(t, c, "vol", false)
			if int(v.Size()) != len(m.cur) {
				t.Fatalf("after crash size %d, want %d", v.Size(), len(m.cur))
			}
			m.crashed(t, readAll(t, v))
		case k < 95: // snapshot
			name := fmt.Sprintf("snap-%d", i)
			if err := c.Snapshot(ctx, "vol", name); err != nil {
				t.Fatal(err)
			}
			snaps[name] = bytes.Clone(m.cur)
			m.flushed()
		default: // resize
			ns := (1 + rng.IntN(size*2/SectorSize)) * SectorSize
			if err := c.Resize(ctx, "vol", int64(ns)); err != nil {
				t.Fatal(err)
			}
			m.resize(ns)
			if v.Size() != int64(ns) {
				t.Fatalf("size %d after resize to %d", v.Size(), ns)
			}
		}
		if i%50 == 49 {
			if got := readAll(t, v); !bytes.Equal(got, m.cur) {
				t.Fatalf("op %d: full read differs from the model", i)
			}
		}
	}
	if got := readAll(t, v); !bytes.Equal(got, m.cur) {
		t.Fatal("final read differs from the model")
	}
	// Extents agree with the model where it holds data.
	err := v.Extents(ctx, 0, v.Size(), func(off, n int64, hole bool) error {
		if hole && bytes.ContainsFunc(m.cur[off:off+n], func(r rune) bool { return r != 0 }) {
			return fmt.Errorf("extent [%d,+%d) reported a hole over data", off, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	lends.allReleased(t)
	for name, want := range snaps {
		s := mustOpen(t, c, name, false)
		if !s.ReadOnly() {
			t.Fatalf("snapshot %s opened writable", name)
		}
		if got := readAll(t, s); !bytes.Equal(got, want) {
			t.Fatalf("snapshot %s differs from the model at the time", name)
		}
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Reopen after a clean close: everything is there, the journal trimmed.
	v = mustOpen(t, c, "vol", false)
	if got := readAll(t, v); !bytes.Equal(got, m.cur) {
		t.Fatal("read after close and reopen differs from the model")
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// countingHolder counts Syncs of a memory holder.
type countingHolder struct {
	*memory.Store
	syncs atomic.Int64
}

func (h *countingHolder) Sync(ctx context.Context) error {
	h.syncs.Add(1)
	return h.Store.Sync(ctx)
}

// TestFlushSyncsSharedHolderOnce checks that a Flush syncs a holder that is
// both the store's and the journal's once, and that the data is durable.
func TestFlushSyncsSharedHolderOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	h := &countingHolder{Store: e.hold}
	opts := e.options("node-a")
	opts.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) { return holderStore{casStore{e.hold}, h}, nil }
	opts.Journals = func(blocks.ID, policies.Policy) ([]JournalHolder, error) { return []JournalHolder{h}, nil }
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 64<<10, testPolicy(4<<10)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	want := bytes.Repeat([]byte{0xab}, 4<<10)
	if err := v.WriteAt(ctx, want, 8<<10); err != nil {
		t.Fatal(err)
	}
	before := h.syncs.Load()
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.syncs.Load() - before; n != 1 {
		t.Errorf("Flush synced the shared holder %d times, want 1", n)
	}
	e.hold.Crash()
	abandon(v)
	v = mustOpen(t, e.catalog(opts), "vol", false)
	got := make([]byte, len(want))
	if err := v.ReadAt(ctx, got, 8<<10); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after crash: ReadAt = %v, data equal %v; want the flushed data", err, bytes.Equal(got, want))
	}
}

// lender lends buffers to TakeWrite as the NBD server does, and checks
// the volume's side of the contract: release comes once, and after it the
// volume never reads the buffer again. Its release scrambles every byte
// (xor 0x5a), so a chunk still served from a released buffer reads back
// wrong, and the race detector sees a read after it.
type lender struct {
	mu    sync.Mutex
	live  []*lentBuf // lent to the current volume, not yet released
	count int
}

type lentBuf struct {
	p        []byte
	released atomic.Bool
}

// take lends p (whose contents the caller has recorded) to v.TakeWrite.
func (l *lender) take(t *testing.T, v *volumeImpl, p []byte, off int64) error {
	b := &lentBuf{p: p}
	l.mu.Lock()
	l.live = append(l.live, b)
	l.count++
	l.mu.Unlock()
	return v.TakeWrite(context.Background(), p, off, func() {
		if b.released.Swap(true) {
			t.Errorf("a lent buffer of %d bytes was released twice", len(b.p))
			return
		}
		for i := range b.p {
			b.p[i] ^= 0x5a
		}
	})
}

// abandoned forgets the buffers lent to a volume that crashed: no one
// releases them.
func (l *lender) abandoned() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live = nil
}

// allReleased checks, after a clean Close, that every buffer lent since
// the last crash came back.
func (l *lender) allReleased(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.live {
		if !b.released.Load() {
			t.Fatalf("a buffer of %d bytes lent to TakeWrite was not released by Close (%d lent in all)", len(b.p), l.count)
		}
	}
}
