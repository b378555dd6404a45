package chunkmap

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"cairn/blocks"
)

// checkLeafIndex checks that m's leaf index mirrors pages[0] and counts
// its groups and memory right.
func checkLeafIndex(t *testing.T, m *Map) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	x := &m.leaf
	leaves := m.leaves(m.n)
	if want := min((leaves+leafGroup-1)/leafGroup, maxLeafDirs); uint64(len(x.dir)) != want {
		t.Fatalf("leaf index of %d dirs for %d leaves, want %d", len(x.dir), leaves, want)
	}
	groups := 0
	for d, dir := range x.dir {
		if dir.g == nil {
			if dir.n != 0 {
				t.Fatalf("dir %d: no group but count %d", d, dir.n)
			}
			continue
		}
		groups++
		cnt := 0
		for i, s := range dir.g {
			idx := uint64(d)*leafGroup + uint64(i)
			p := s.p
			if q := m.pages[0][idx]; p != q {
				t.Fatalf("leaf index %d = %p, pages[0] has %p", idx, p, q)
			}
			if p != nil && s.ent != &p.ent[0] || p == nil && s.ent != nil {
				t.Fatalf("leaf index %d: entries at %p, page's at %p", idx, s.ent, p)
			}
			if p != nil {
				cnt++
			}
		}
		if cnt == 0 || cnt != dir.n {
			t.Fatalf("dir %d: %d leaves, count %d", d, cnt, dir.n)
		}
	}
	if groups != x.groups {
		t.Fatalf("%d groups, counted %d", groups, x.groups)
	}
	for idx, p := range m.pages[0] {
		if q, ok := x.get(idx); ok && q.p != p {
			t.Fatalf("pages[0][%d] = %p, leaf index has %p", idx, p, q)
		}
		if idx >= leaves {
			t.Fatalf("leaf %d in memory in a map of %d leaves", idx, leaves)
		}
	}
	want := int64(len(x.dir))*16 + int64(groups)*4096
	if got := x.bytes(); got != want {
		t.Fatalf("IndexBytes = %d, want %d", got, want)
	}
}

// TestLeafIndexModel runs random Sets, Gets, Resizes, Flushes and Loads
// with tiny caches (so leaves are evicted and re-read all the time) against
// a model, with an index that covers only part of the map, and checks
// after every step that the index mirrors pages[0] and that Get agrees
// with the path before the index (getOld).
func TestLeafIndexModel(t *testing.T) {
	defer func(v uint64) { maxLeafDirs = v }(maxLeafDirs)
	ctx := context.Background()
	for seed := range 30 {
		rng := rand.New(rand.NewPCG(uint64(seed), 11))
		maxLeafDirs = uint64(1 + rng.IntN(3))
		e := 2 + rng.IntN(7)
		opts := Options{PageEntries: e, CacheBytes: PageBytes(e) * int64(rng.IntN(40)+1)}
		st := newTestStore()
		n := uint64(rng.IntN(4000))
		m := New(st, n, opts)
		want := map[uint64]blocks.Addr{}
		ver := uint64(0)
		for step := range 600 {
			switch op := rng.IntN(100); {
			case op < 45 && n > 0:
				c := rng.Uint64N(n)
				ver++
				a := addr(c, ver)
				if rng.IntN(5) == 0 {
					a = blocks.Addr{}
					delete(want, c)
				} else {
					want[c] = a
				}
				if err := m.Set(ctx, c, a); err != nil {
					t.Fatalf("seed %d step %d: Set: %v", seed, step, err)
				}
			case op < 80 && n > 0:
				c := rng.Uint64N(n)
				a, err := m.Get(ctx, c)
				if err != nil || a != want[c] {
					t.Fatalf("seed %d step %d: Get(%d) = %x, %v; want %x", seed, step, c, a[:16], err, want[c])
				}
				if b, err := m.getOld(ctx, c); err != nil || b != a {
					t.Fatalf("seed %d step %d: getOld(%d) = %x, %v; Get gave %x", seed, step, c, b[:16], err, a[:16])
				}
			case op < 83:
				if _, err := m.Get(ctx, n+rng.Uint64N(3)); !errors.Is(err, ErrRange) {
					t.Fatalf("seed %d step %d: Get beyond Len: %v", seed, step, err)
				}
			case op < 90:
				n2 := uint64(rng.IntN(4000))
				if rng.IntN(6) == 0 {
					n2 = 0
				}
				if err := m.Resize(ctx, n2); err != nil {
					t.Fatalf("seed %d step %d: Resize: %v", seed, step, err)
				}
				for c := range want {
					if c >= n2 {
						delete(want, c)
					}
				}
				n = n2
			default:
				root, err := m.Flush(ctx)
				if err != nil {
					t.Fatalf("seed %d step %d: Flush: %v", seed, step, err)
				}
				if rng.IntN(2) == 0 {
					if m, err = Load(ctx, st, root, n, opts); err != nil {
						t.Fatalf("seed %d step %d: Load: %v", seed, step, err)
					}
				}
			}
			checkLeafIndex(t, m)
			if s := m.CacheStats(); s.Bytes > opts.CacheBytes {
				t.Fatalf("seed %d step %d: cache holds %d bytes, limit %d", seed, step, s.Bytes, opts.CacheBytes)
			}
		}
		checkMap(t, m, n, want)
		checkLeafIndex(t, m)
	}
}

// TestLeafIndexHuge checks a map of 2^64-1 chunks: the index stops at
// maxLeafDirs (512 KiB) and leaves beyond it are found through pages[0].
func TestLeafIndexHuge(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const n = math.MaxUint64
	m := New(st, n, Options{})
	if s := m.CacheStats(); s.IndexBytes != int64(maxLeafDirs)*16 {
		t.Fatalf("empty huge map: IndexBytes = %d, want %d", s.IndexBytes, maxLeafDirs*16)
	}
	covered := maxLeafDirs * leafGroup * DefaultPageEntries // first chunk beyond the index
	chunks := []uint64{0, 1, 5000, covered - 1, covered, covered + 1, 1 << 40, n - 2, n - 1}
	want := map[uint64]blocks.Addr{}
	for i, c := range chunks {
		want[c] = addr(c, uint64(i+1))
		if err := m.Set(ctx, c, want[c]); err != nil {
			t.Fatal(err)
		}
	}
	checkLeafIndex(t, m)
	for c, a := range want {
		if got, err := m.Get(ctx, c); err != nil || got != a {
			t.Fatalf("Get(%d) = %x, %v", c, got[:16], err)
		}
	}
	root, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err = Load(ctx, st, root, n, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for c, a := range want {
		if got, err := m.Get(ctx, c); err != nil || got != a {
			t.Fatalf("after Load: Get(%d) = %x, %v", c, got[:16], err)
		}
		if got, err := m.Get(ctx, c^0x10000); err != nil || got != want[c^0x10000] {
			t.Fatalf("after Load: Get(%d) = %x, %v", c^0x10000, got[:16], err)
		}
	}
	checkLeafIndex(t, m)
	// Groups: chunks 0, 1 and 5000 share one; covered-1 has its own; the
	// rest are beyond the index.
	if s := m.CacheStats(); s.IndexBytes != int64(maxLeafDirs)*16+2*4096 {
		t.Fatalf("IndexBytes = %d, want %d", s.IndexBytes, maxLeafDirs*16+2*4096)
	}
	if err := m.Resize(ctx, 3*DefaultPageEntries); err != nil {
		t.Fatal(err)
	}
	checkLeafIndex(t, m)
	if s := m.CacheStats(); s.IndexBytes != 16+4096 {
		t.Fatalf("after shrinking: IndexBytes = %d, want %d", s.IndexBytes, 16+4096)
	}
	if err := m.Resize(ctx, 0); err != nil {
		t.Fatal(err)
	}
	checkLeafIndex(t, m)
	if s := m.CacheStats(); s.IndexBytes != 0 {
		t.Fatalf("empty map: IndexBytes = %d", s.IndexBytes)
	}
}

// TestLeafIndexEviction checks that evicting the leaves frees the index's
// groups: a map of 1 TiB read at random with a 2 MiB cache keeps its
// IndexBytes within the directory plus a group per cached leaf.
func TestLeafIndexEviction(t *testing.T) {
	ctx := context.Background()
	st := newTestStore()
	const n = 1 << 28
	m := New(st, n, Options{})
	rng := rand.New(rand.NewPCG(5, 5))
	var set []uint64
	for i := range 2000 {
		c := rng.Uint64N(n)
		set = append(set, c)
		if err := m.Set(ctx, c, addr(c, uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	root, err := m.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const limit = 2 << 20
	m, err = Load(ctx, st, root, n, Options{CacheBytes: limit})
	if err != nil {
		t.Fatal(err)
	}
	dirBytes := int64(n/DefaultPageEntries/leafGroup) * 16
	most := int64(0)
	for i := range 5000 {
		c := set[rng.IntN(len(set))] // a leaf: its path and it are read
		if _, err := m.Get(ctx, c); err != nil {
			t.Fatal(err)
		}
		s := m.CacheStats()
		most = max(most, s.IndexBytes)
		if max := dirBytes + int64(s.Pages)*4096; s.IndexBytes > max {
			t.Fatalf("Get %d: IndexBytes = %d with %d pages cached, want at most %d", i, s.IndexBytes, s.Pages, max)
		}
	}
	checkLeafIndex(t, m)
	s := m.CacheStats()
	if s.Evictions == 0 || dirBytes != 16<<10 || most <= dirBytes {
		t.Fatalf("stats %+v, directory %d bytes, at most %d: want evictions, a 16 KiB directory and groups", s, dirBytes, most)
	}
	t.Logf("1 TiB map, 2 MiB cache: %+v", s)
}
