package chunkmap

import (
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"cairn/blocks"
)

// checkMap compares every chunk of m with want, by Get and by Range.
func checkMap(t *testing.T, m *Map, n uint64, want map[uint64]blocks.Addr) {
	t.Helper()
	ctx := context.Background()
	if m.Len() != n {
		t.Fatalf("Len = %d, want %d", m.Len(), n)
	}
	for c := uint64(0); c < n; c++ {
		got, err := m.Get(ctx, c)
		if err != nil {
			t.Fatalf("Get(%d): %v", c, err)
		}
		if got != want[c] {
			t.Fatalf("Get(%d) = %x, want %x", c, got[:16], want[c])
		}
	}
	var keys []uint64
	for c := range want {
		keys = append(keys, c)
	}
	slices.Sort(keys)
	var got []uint64
	err := m.Range(ctx, 0, n, func(c uint64, a blocks.Addr) error {
		if a != want[c] {
			t.Fatalf("Range: chunk %d = %x, want %x", c, a[:16], want[c])
		}
		got = append(got, c)
		return nil
	})
	if err != nil {
		t.Fatalf("Range: %v", err)
	}
	if !slices.Equal(got, keys) {
		t.Fatalf("Range chunks = %v, want %v", got, keys)
	}
}

// rebuild returns the root of a fresh map with the contents of want: the
// canonical root a Flush must produce.
func rebuild(t *testing.T, st blocks.Store, n uint64, e int, want map[uint64]blocks.Addr) blocks.Addr {
	t.Helper()
	ctx := context.Background()
	m := New(st, n, Options{PageEntries: e})
	for c, a := range want {
		if err := m.Set(ctx, c, a); err != nil {
			t.Fatal(err)
		}
	}
	r, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestModel(t *testing.T) {
	seeds := 40
	steps := 400
	if testing.Short() {
		seeds = 10
	}
	if s, err := strconv.Atoi(os.Getenv("CHUNKMAP_SEEDS")); err == nil {
		seeds = s // a longer soak: CHUNKMAP_SEEDS=2000 go test -run Model
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		e := 2 + rng.IntN(7)
		// A cache of a few pages at most, sometimes none at all.
		opts := Options{PageEntries: e, CacheBytes: PageBytes(e) * int64(rng.IntN(6)+1)}
		if seed%5 == 0 {
			opts.CacheBytes = 1
		}
		ctx := context.Background()
		st := newTestStore()
		n := uint64(rng.IntN(200))
		m := New(st, n, opts)
		want := map[uint64]blocks.Addr{}
		ver := uint64(0)
		for step := range steps {
			switch op := rng.IntN(100); {
			case op < 45 && n > 0: // Set
				c := rng.Uint64N(n)
				var a blocks.Addr
				if rng.IntN(4) > 0 {
					ver++
					a = addr(c, ver)
					want[c] = a
				} else {
					delete(want, c)
				}
				if err := m.Set(ctx, c, a); err != nil {
					t.Fatalf("seed %d step %d: Set: %v", seed, step, err)
				}
			case op < 70 && n > 0: // Get
				c := rng.Uint64N(n)
				a, err := m.Get(ctx, c)
				if err != nil || a != want[c] {
					t.Fatalf("seed %d step %d: Get(%d) = %x, %v; want %x", seed, step, c, a[:16], err, want[c])
				}
			case op < 75: // Get out of range
				if _, err := m.Get(ctx, n+rng.Uint64N(10)); !errors.Is(err, ErrRange) {
					t.Fatalf("seed %d step %d: Get beyond Len: %v, want ErrRange", seed, step, err)
				}
				if err := m.Set(ctx, n, addr(n, 1)); !errors.Is(err, ErrRange) {
					t.Fatalf("seed %d step %d: Set beyond Len: %v, want ErrRange", seed, step, err)
				}
			case op < 82: // Resize
				n2 := uint64(rng.IntN(300))
				if rng.IntN(8) == 0 {
					n2 = 0
				}
				if err := m.Resize(ctx, n2); err != nil {
					t.Fatalf("seed %d step %d: Resize(%d): %v", seed, step, n2, err)
				}
				for c := range want {
					if c >= n2 {
						delete(want, c)
					}
				}
				n = n2
			case op < 87: // Range over a random window
				from, to := rng.Uint64N(n+3), rng.Uint64N(n+3)
				var got []uint64
				err := m.Range(ctx, from, to, func(c uint64, a blocks.Addr) error {
					if a != want[c] {
						t.Fatalf("seed %d step %d: Range chunk %d = %x, want %x", seed, step, c, a[:16], want[c])
					}
					got = append(got, c)
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				var exp []uint64
				for c := range want {
					if c >= from && c < to {
						exp = append(exp, c)
					}
				}
				slices.Sort(exp)
				if !slices.Equal(got, exp) {
					t.Fatalf("seed %d step %d: Range(%d, %d) = %v, want %v", seed, step, from, to, got, exp)
				}
			case op < 91: // GetRange over a random window, sometimes past the end
				from := rng.Uint64N(n + 3)
				out := make([]blocks.Addr, rng.IntN(int(n)+10))
				err := m.GetRange(ctx, from, out)
				if from+uint64(len(out)) > n {
					if len(out) > 0 && !errors.Is(err, ErrRange) {
						t.Fatalf("seed %d step %d: GetRange(%d, %d) of %d chunks: %v, want ErrRange", seed, step, from, len(out), n, err)
					}
					break
				}
				if err != nil {
					t.Fatalf("seed %d step %d: GetRange(%d, %d): %v", seed, step, from, len(out), err)
				}
				for i, a := range out {
					if c := from + uint64(i); a != want[c] {
						t.Fatalf("seed %d step %d: GetRange(%d, %d) chunk %d = %x, want %x", seed, step, from, len(out), c, a[:16], want[c])
					}
				}
			default: // Flush, then maybe reload from the root
				root, err := m.Flush(ctx)
				if err != nil {
					t.Fatalf("seed %d step %d: Flush: %v", seed, step, err)
				}
				if m.DirtyPages() != 0 || m.Root() != root {
					t.Fatalf("seed %d step %d: after Flush: %d dirty pages, Root %v, Flush returned %v", seed, step, m.DirtyPages(), m.Root(), root)
				}
				if (len(want) == 0) != root.IsZero() {
					t.Fatalf("seed %d step %d: root %v for %d chunks", seed, step, root, len(want))
				}
				if canon := rebuild(t, st, n, e, want); canon != root {
					t.Fatalf("seed %d step %d: root %v, a fresh map of the same contents gives %v", seed, step, root, canon)
				}
				if rng.IntN(2) == 0 {
					m, err = Load(ctx, st, root, n, opts)
					if err != nil {
						t.Fatalf("seed %d step %d: Load: %v", seed, step, err)
					}
				}
			}
			if s := m.CacheStats(); s.Bytes > opts.CacheBytes {
				t.Fatalf("seed %d step %d: cache holds %d bytes, limit %d", seed, step, s.Bytes, opts.CacheBytes)
			}
			checkLeafIndex(t, m)
		}
		checkMap(t, m, n, want)
		root, err := m.Flush(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := Load(ctx, st, root, n, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkMap(t, m2, n, want)
	}
}

func TestEmpty(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	m := New(st, 1000, Options{PageEntries: 4})
	checkMap(t, m, 1000, nil)
	if err := m.Set(ctx, 10, blocks.Addr{}); err != nil {
		t.Fatal(err)
	}
	if m.DirtyPages() != 0 {
		t.Fatalf("a hole in an empty map dirtied %d pages", m.DirtyPages())
	}
	r, err := m.Flush(ctx)
	if err != nil || !r.IsZero() || st.puts.Load() != 0 {
		t.Fatalf("Flush of an empty map = %v, %v after %d puts; want the zero address and no puts", r, err, st.puts.Load())
	}
	// Set then unset: the pages are dirty but all-hole, and not written.
	m.Set(ctx, 999, addr(999, 1))
	m.Set(ctx, 999, blocks.Addr{})
	if r, err := m.Flush(ctx); err != nil || !r.IsZero() || st.puts.Load() != 0 {
		t.Fatalf("Flush of an all-hole map = %v, %v after %d puts; want the zero address and no puts", r, err, st.puts.Load())
	}
	m, err = Load(ctx, st, blocks.Addr{}, 5, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkMap(t, m, 5, nil)
}

// TestSharing checks that a Flush after one change writes only the pages
// on the changed chunk's path.
func TestSharing(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const e, n = 4, 4 * 4 * 4 * 4 // height 3: four levels
	m := New(st, n, Options{PageEntries: e})
	for c := uint64(0); c < n; c++ {
		m.Set(ctx, c, addr(c, 1))
	}
	if got, want := m.DirtyPages(), 64+16+4+1; got != want {
		t.Fatalf("DirtyPages = %d, want %d", got, want)
	}
	r1, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.puts.Load(); got != 85 {
		t.Fatalf("first Flush put %d pages, want 85", got)
	}
	m.Set(ctx, 77, addr(77, 2))
	if got := m.DirtyPages(); got != 4 {
		t.Fatalf("DirtyPages after one Set = %d, want 4", got)
	}
	r2, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.puts.Load() - 85; got != 4 {
		t.Fatalf("second Flush put %d pages, want 4 (one path)", got)
	}
	if r1 == r2 {
		t.Fatal("root unchanged")
	}
	// A Flush with nothing dirty writes nothing and keeps the root.
	if r3, err := m.Flush(ctx); err != nil || r3 != r2 || st.puts.Load() != 89 {
		t.Fatalf("idle Flush = %v, %v with %d puts", r3, err, st.puts.Load())
	}
	// The old root still reads the old value (snapshot).
	old, err := Load(ctx, st, r1, n, Options{PageEntries: e})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := old.Get(ctx, 77); a != addr(77, 1) {
		t.Fatalf("old root reads %x", a[:16])
	}
	// Walk of the new root shares all but four pages with the old.
	pages := func(root blocks.Addr) map[blocks.Addr]bool {
		s := map[blocks.Addr]bool{}
		if err := Walk(ctx, st, root, func(a blocks.Addr) error { s[a] = true; return nil }, func(blocks.Addr) error { return nil }); err != nil {
			t.Fatal(err)
		}
		return s
	}
	p1, p2 := pages(r1), pages(r2)
	shared := 0
	for a := range p2 {
		if p1[a] {
			shared++
		}
	}
	if len(p1) != 85 || len(p2) != 85 || shared != 81 {
		t.Fatalf("pages: %d and %d, %d shared; want 85, 85, 81", len(p1), len(p2), shared)
	}
}

// TestRangeSkipsEmpty checks that Range reads only the pages on the paths
// to non-hole chunks.
func TestRangeSkipsEmpty(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const e = 4
	n := uint64(1 << 20) // height 9: ten levels
	m := New(st, n, Options{PageEntries: e})
	set := []uint64{5, 6, 700_000, n - 1}
	for _, c := range set {
		m.Set(ctx, c, addr(c, 1))
	}
	root, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err = Load(ctx, st, root, n, Options{PageEntries: e})
	if err != nil {
		t.Fatal(err)
	}
	before := st.gets.Load()
	var got []uint64
	if err := m.Range(ctx, 0, n, func(c uint64, a blocks.Addr) error {
		got = append(got, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, set) {
		t.Fatalf("Range = %v, want %v", got, set)
	}
	// Three distinct paths below the (already read) root: 9 pages each.
	if reads := st.gets.Load() - before; reads > 27 {
		t.Fatalf("Range read %d pages, want at most 27", reads)
	}
	// A window with nothing in it reads nothing new.
	before = st.gets.Load()
	if err := m.Range(ctx, 10, 600_000, func(c uint64, a blocks.Addr) error {
		t.Fatalf("Range of an empty window called fn(%d)", c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if reads := st.gets.Load() - before; reads != 0 {
		t.Fatalf("Range of an empty, cached window read %d pages", reads)
	}
	// An error from fn stops Range and comes back as is.
	stop := errors.New("stop")
	calls := 0
	if err := m.Range(ctx, 0, n, func(uint64, blocks.Addr) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("Range = %v after %d calls, want stop after 1", err, calls)
	}
}

func TestWalk(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 5000
	m := New(st, n, Options{PageEntries: 8})
	chunks := map[blocks.Addr]bool{}
	for range 300 {
		c := rng.Uint64N(n)
		a := addr(c, rng.Uint64())
		m.Set(ctx, c, a)
	}
	m.Range(ctx, 0, n, func(c uint64, a blocks.Addr) error { chunks[a] = true; return nil })
	root, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantPages := map[blocks.Addr]bool{}
	for _, a := range st.putAddrs {
		wantPages[a] = true
	}
	gotPages, gotChunks := map[blocks.Addr]bool{}, map[blocks.Addr]bool{}
	err = Walk(ctx, st, root,
		func(a blocks.Addr) error { gotPages[a] = true; return nil },
		func(a blocks.Addr) error { gotChunks[a] = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(gotPages) != len(wantPages) || len(gotChunks) != len(chunks) {
		t.Fatalf("Walk found %d pages and %d chunks, want %d and %d", len(gotPages), len(gotChunks), len(wantPages), len(chunks))
	}
	for a := range wantPages {
		if !gotPages[a] {
			t.Fatalf("Walk missed page %v", a)
		}
	}
	for a := range chunks {
		if !gotChunks[a] {
			t.Fatalf("Walk missed chunk %x", a[:16])
		}
	}
	if err := Walk(ctx, st, blocks.Addr{}, nil, nil); err != nil {
		t.Fatalf("Walk of the empty root: %v", err)
	}
	// A missing page is the store's error, wrapped.
	st.h.DeletePiece(ctx, st.putAddrs[0])
	err = Walk(ctx, st, root, func(blocks.Addr) error { return nil }, func(blocks.Addr) error { return nil })
	if !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("Walk with a missing leaf: %v, want ErrNotFound", err)
	}
}

// TestCorrupt checks that corrupt, malformed or misplaced pages give
// errors wrapping blocks.ErrCorrupt and never wrong data.
func TestCorrupt(t *testing.T) {
	ctx := context.Background()
	const e, n = 4, 64 // height 2
	build := func() (*testStore, blocks.Addr) {
		st := newTestStore()
		m := New(st, n, Options{PageEntries: e})
		for c := uint64(0); c < n; c += 3 {
			m.Set(ctx, c, addr(c, 1))
		}
		root, err := m.Flush(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st, root
	}
	noop := func(blocks.Addr) error { return nil }

	// Bit rot in a leaf: the store's hash check catches it.
	st, root := build()
	leaf := pageAddr(0, addr(0, 1), blocks.Addr{}, blocks.Addr{}, addr(3, 1))
	if ok, _ := st.Has(ctx, leaf); !ok {
		t.Fatal("no leaf 0")
	}
	st.h.Corrupt(leaf)
	m, err := Load(ctx, st, root, n, Options{PageEntries: e})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, 0); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Get through a rotten leaf: %v, want ErrCorrupt", err)
	}

	// A store that serves unverified bytes: the decoder catches them.
	st, root = build()
	st.raw = true
	good, _ := st.h.GetPiece(ctx, leaf)
	st.h.DeletePiece(ctx, leaf)
	st.h.PutPiece(ctx, leaf, good[:len(good)-1]) // torn
	m, _ = Load(ctx, st, root, n, Options{PageEntries: e})
	if _, err := m.Get(ctx, 0); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Get through a malformed leaf: %v, want ErrCorrupt", err)
	}
	if err := Walk(ctx, st, root, noop, noop); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Walk through a malformed leaf: %v, want ErrCorrupt", err)
	}
	st.h.DeletePiece(ctx, root)
	st.h.PutPiece(ctx, root, []byte("CMPG\x02 not a page"))
	if _, err := Load(ctx, st, root, n, Options{PageEntries: e}); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Load of a malformed root: %v, want ErrCorrupt", err)
	}

	// Well-formed pages in the wrong place: a leaf as the root, a root
	// loaded with the wrong PageEntries or size.
	st, root = build()
	if _, err := Load(ctx, st, leaf, n, Options{PageEntries: e}); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Load of a leaf as root: %v, want ErrCorrupt", err)
	}
	if _, err := Load(ctx, st, root, n, Options{PageEntries: 8}); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Load with other PageEntries: %v, want ErrCorrupt", err)
	}
	if _, err := Load(ctx, st, root, n*4, Options{PageEntries: e}); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Load with another depth: %v, want ErrCorrupt", err)
	}
	// An inner page whose child is a leaf one level too high.
	inner, _ := encodePage(nil, 2, []blocks.Addr{leaf, {}, {}, {}})
	badRoot, _ := st.Put(ctx, inner)
	m, err = Load(ctx, st, badRoot, n, Options{PageEntries: e})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(ctx, 0); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Get through a misplaced page: %v, want ErrCorrupt", err)
	}
	if err := Walk(ctx, st, badRoot, noop, noop); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Walk through a misplaced page: %v, want ErrCorrupt", err)
	}
	// A missing page.
	if _, err := Load(ctx, st, blocks.Sum([]byte("nothing")), n, Options{}); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("Load of a missing root: %v, want ErrNotFound", err)
	}
}

// TestTerabyte maps 1 TiB of 4 KiB chunks (2^28) with the default page size
// and a 2 MiB cache: scattered Sets, Flushes, then scattered Gets from a
// reloaded map, with the cache within its bound throughout.
func TestTerabyte(t *testing.T) {
	ctx := context.Background()
	const n = 1 << 28
	const limit = 2 << 20
	sets := 3000
	if testing.Short() {
		sets = 600
	}
	st := newTestStore()
	opts := Options{CacheBytes: limit}
	m := New(st, n, opts)
	rng := rand.New(rand.NewPCG(3, 4))
	want := map[uint64]blocks.Addr{}
	check := func(m *Map) {
		if s := m.CacheStats(); s.Bytes > limit {
			t.Fatalf("cache holds %d bytes, limit %d", s.Bytes, limit)
		}
	}
	var root blocks.Addr
	for i := range sets {
		c := rng.Uint64N(n)
		want[c] = addr(c, uint64(i))
		if err := m.Set(ctx, c, want[c]); err != nil {
			t.Fatal(err)
		}
		check(m)
		if i%1000 == 999 || i == sets-1 {
			var err error
			if root, err = m.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			check(m)
		}
	}
	m, err := Load(ctx, st, root, n, opts)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]uint64, 0, len(want))
	for c := range want {
		keys = append(keys, c)
	}
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for i, c := range keys {
		got, err := m.Get(ctx, c)
		if err != nil || got != want[c] {
			t.Fatalf("Get(%d) = %x, %v; want %x", c, got[:16], err, want[c])
		}
		hole := rng.Uint64N(n)
		if got, err := m.Get(ctx, hole); err != nil || got != want[hole] {
			t.Fatalf("Get(%d) = %x, %v; want %x", hole, got[:16], err, want[hole])
		}
		if i%64 == 0 {
			check(m)
		}
	}
	s := m.CacheStats()
	t.Logf("%d chunks set; %d pages stored, %d bytes; cache %+v", len(want), st.puts.Load(), st.h.Bytes(), s)
	if s.Bytes > limit || s.Evictions == 0 || s.Misses == 0 {
		t.Fatalf("cache stats %+v: want evictions and misses within %d bytes", s, limit)
	}
}

// TestConcurrent runs Gets and Ranges against Sets, Flushes and Resizes
// with a tiny cache, for the race detector; every value read must be one
// written for that chunk.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const n = 4096
	opts := Options{PageEntries: 4, CacheBytes: 8 * PageBytes(4)}
	m := New(st, n, opts)
	var wg sync.WaitGroup
	done := make(chan struct{})
	errc := make(chan error, 4)
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for {
				select {
				case <-done:
					return
				default:
				}
				c := rng.Uint64N(n)
				a, err := m.Get(ctx, c)
				if errors.Is(err, ErrRange) {
					continue
				}
				if err != nil || !a.IsZero() && binary.BigEndian.Uint64(a[:]) != c {
					errc <- err
					return
				}
				m.Range(ctx, c, c+40, func(c uint64, a blocks.Addr) error {
					if binary.BigEndian.Uint64(a[:]) != c {
						t.Errorf("Range: chunk %d holds %x", c, a[:16])
					}
					return nil
				})
			}
		}()
	}
	wg.Add(1)
	go func() { // the checkpointer
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := m.Flush(ctx); err != nil {
				errc <- err
				return
			}
		}
	}()
	rng := rand.New(rand.NewPCG(5, 6))
	steps := 3000
	if testing.Short() {
		steps = 600
	}
	size := uint64(n)
	want := map[uint64]blocks.Addr{}
	for i := range steps {
		if i%500 == 499 {
			size = n/2 + rng.Uint64N(n/2)
			if err := m.Resize(ctx, size); err != nil {
				t.Fatal(err)
			}
			for c := range want {
				if c >= size {
					delete(want, c)
				}
			}
			continue
		}
		c := rng.Uint64N(size)
		a := addr(c, uint64(i))
		if i%7 == 0 {
			a = blocks.Addr{}
			delete(want, c)
		} else {
			want[c] = a
		}
		if err := m.Set(ctx, c, a); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatalf("reader or flusher: %v", err)
	default:
	}
	checkMap(t, m, size, want)
	root, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if canon := rebuild(t, st, size, 4, want); root != canon {
		t.Fatalf("final root %v, want %v", root, canon)
	}
}

// TestStaleRead holds a Get's page read in the store while a Set and a
// Flush replace that page and the cache evicts the new one: the Get must
// not install the old page afterwards.
func TestStaleRead(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const e, n = 4, 64 // height 2
	opts := Options{PageEntries: e, CacheBytes: 3 * PageBytes(e)}
	m := New(st, n, opts)
	for _, c := range []uint64{0, 20, 40, 60} {
		m.Set(ctx, c, addr(c, 1))
	}
	root, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaf0 := pageAddr(0, addr(0, 1), blocks.Addr{}, blocks.Addr{}, blocks.Addr{})
	m, err = Load(ctx, st, root, n, opts)
	if err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	armed.Store(true)
	entered, release := make(chan struct{}), make(chan struct{})
	st.hook = func(a blocks.Addr) {
		if a == leaf0 && armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
	}
	got := make(chan blocks.Addr)
	go func() {
		a, err := m.Get(ctx, 0)
		if err != nil {
			t.Error(err)
		}
		got <- a
	}()
	<-entered
	if err := m.Set(ctx, 0, addr(0, 2)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []uint64{20, 40, 60} { // evict the new leaf of chunk 0
		m.Get(ctx, c)
	}
	close(release)
	if a := <-got; a != addr(0, 1) && a != addr(0, 2) {
		t.Fatalf("concurrent Get(0) = %x", a[:16])
	}
	if a, err := m.Get(ctx, 0); err != nil || a != addr(0, 2) {
		t.Fatalf("Get(0) after the Set = %x, %v; want %x", a[:16], err, addr(0, 2))
	}
}

// pageAddr returns the address (in a testStore) of the page with entries ent.
func pageAddr(level int, ent ...blocks.Addr) blocks.Addr {
	data, _ := encodePage(nil, level, ent)
	return blocks.Sum(data)
}

// TestFlushSnapshot holds a Flush's Puts while Sets change a dirty leaf, a
// clean leaf and an empty subtree: the root it returns is the map as of its
// start, the Sets stay dirty, and the next Flush includes them.
func TestFlushSnapshot(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const e, n = 4, 256 // height 3
	opts := Options{PageEntries: e, CacheBytes: 4 * PageBytes(e)}
	m := New(st, n, opts)
	want := map[uint64]blocks.Addr{}
	set := func(c, v uint64) {
		t.Helper()
		a := addr(c, v)
		if v == 0 {
			a = blocks.Addr{}
			delete(want, c)
		} else {
			want[c] = a
		}
		if err := m.Set(ctx, c, a); err != nil {
			t.Fatal(err)
		}
	}
	for c := uint64(0); c < 128; c += 5 {
		set(c, 1)
	}
	if _, err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	set(0, 2)   // dirty leaf 0 and its path
	set(64, 0)  // dirty leaf 16 (a hole now)
	set(160, 1) // dirty leaf 40 under level-2 page 2, left alone below
	snapshot := maps.Clone(want)
	var armed atomic.Bool
	armed.Store(true)
	entered, release := make(chan struct{}), make(chan struct{})
	st.putHook = func() {
		if armed.CompareAndSwap(true, false) {
			close(entered)
		}
		<-release
	}
	type result struct {
		root blocks.Addr
		err  error
	}
	res := make(chan result)
	go func() {
		r, err := m.Flush(ctx)
		res <- result{r, err}
	}()
	<-entered
	set(1, 3)   // the dirty leaf again
	set(64, 4)  // the other dirty leaf
	set(100, 5) // a clean leaf
	set(200, 6) // an empty subtree: new pages
	set(5, 0)   // a clean leaf becomes a hole
	set(180, 7) // new pages under level-2 page 2, whose snapshot is unchanged
	for c := range uint64(n) {
		if a, err := m.Get(ctx, c); err != nil || a != want[c] {
			t.Fatalf("Get(%d) during Flush = %x, %v; want %x", c, a[:16], err, want[c])
		}
	}
	close(release)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	st.putHook = nil
	if canon := rebuild(t, st, n, e, snapshot); r.root != canon {
		t.Fatalf("Flush returned %v, the snapshot's root is %v", r.root, canon)
	}
	if m.DirtyPages() == 0 {
		t.Fatal("the Sets made during Flush are not dirty")
	}
	checkMap(t, m, n, want)
	r2, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if canon := rebuild(t, st, n, e, want); r2 != canon {
		t.Fatalf("second Flush returned %v, want %v", r2, canon)
	}
	old, err := Load(ctx, st, r.root, n, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkMap(t, old, n, snapshot)
	cur, err := Load(ctx, st, r2, n, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkMap(t, cur, n, want)
}

// TestFlushSnapshotTaken: FlushSnapshot calls taken once, before its
// first Put; a Set made in taken is not in the returned root and stays
// dirty; with nothing dirty, taken is called too.
func TestFlushSnapshotTaken(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const e, n = 4, 256
	m := New(st, n, Options{PageEntries: e, CacheBytes: 64 * PageBytes(e)})
	want := map[uint64]blocks.Addr{}
	for c := uint64(0); c < n; c += 7 {
		want[c] = addr(c, 1)
		if err := m.Set(ctx, c, want[c]); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := maps.Clone(want)
	calls := 0
	root, err := m.FlushSnapshot(ctx, func() {
		calls++
		if p := st.puts.Load(); p != 0 {
			t.Errorf("taken called after %d Puts", p)
		}
		for _, c := range []uint64{0, 3, 200} {
			want[c] = addr(c, 2)
			if err := m.Set(ctx, c, want[c]); err != nil {
				t.Error(err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("taken called %d times, want 1", calls)
	}
	if canon := rebuild(t, st, n, e, snapshot); root != canon {
		t.Fatalf("FlushSnapshot returned %v, the snapshot's root is %v", root, canon)
	}
	if m.DirtyPages() == 0 {
		t.Fatal("the Sets made in taken are not dirty")
	}
	checkMap(t, m, n, want)
	root2, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if canon := rebuild(t, st, n, e, want); root2 != canon {
		t.Fatalf("second Flush returned %v, want %v", root2, canon)
	}
	calls = 0
	root3, err := m.FlushSnapshot(ctx, func() { calls++ })
	if err != nil || root3 != root2 || calls != 1 {
		t.Fatalf("FlushSnapshot of a clean map: %v, %v, taken called %d times; want %v, nil, once", root3, err, calls, root2)
	}
}

// TestHuge uses the whole uint64 chunk range with two entries per page: 64
// levels.
func TestHuge(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const n = math.MaxUint64
	opts := Options{PageEntries: 2, CacheBytes: 1}
	m := New(st, n, opts)
	want := map[uint64]blocks.Addr{}
	for _, c := range []uint64{0, 1, 1 << 40, n - 2, n - 1} {
		want[c] = addr(c, 1)
		if err := m.Set(ctx, c, want[c]); err != nil {
			t.Fatal(err)
		}
	}
	root, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err = Load(ctx, st, root, n, opts)
	if err != nil {
		t.Fatal(err)
	}
	for c, a := range want {
		if got, err := m.Get(ctx, c); err != nil || got != a {
			t.Fatalf("Get(%d) = %x, %v", c, got[:16], err)
		}
	}
	var got []uint64
	if err := m.Range(ctx, 2, n, func(c uint64, a blocks.Addr) error { got = append(got, c); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []uint64{1 << 40, n - 2, n - 1}) {
		t.Fatalf("Range = %v", got)
	}
	if err := m.Resize(ctx, 1<<40); err != nil {
		t.Fatal(err)
	}
	if r, err := m.Flush(ctx); err != nil || r != rebuild(t, st, 1<<40, 2, map[uint64]blocks.Addr{0: want[0], 1: want[1]}) {
		t.Fatalf("Flush after shrinking = %v, %v", r, err)
	}
}
