package chunkmap

import (
	"context"
	"fmt"

	"cairn/blocks"
	"math/rand/v2"
	"testing"
)

// BenchmarkGetCached measures a Get whose leaf page is in the cache.
func BenchmarkGetCached(b *testing.B) {
	ctx := context.Background()
	st := newTestStore()
	const n = 1 << 20
	m := New(st, n, Options{})
	for c := uint64(0); c < n; c += 7 {
		m.Set(ctx, c, addr(c, 1))
	}
	root, err := m.Flush(ctx)
	if err != nil {
		b.Fatal(err)
	}
	m, _ = Load(ctx, st, root, n, Options{})
	for c := uint64(0); c < n; c += 1024 { // warm every leaf
		m.Get(ctx, c)
	}
	b.ReportAllocs()
	b.ResetTimer()
	c := uint64(0)
	for b.Loop() {
		c = (c + 7919) % n
		if _, err := m.Get(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSet measures Sets scattered over a 1 TiB map (2^28 chunks)
// whose pages are mostly dirty already.
func BenchmarkSet(b *testing.B) {
	ctx := context.Background()
	m := New(newTestStore(), 1<<28, Options{})
	rng := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	for b.Loop() {
		c := rng.Uint64N(1 << 16)
		c = (c&63)<<22 | c>>6 // 64 leaves, dirty after warm-up
		if err := m.Set(ctx, c, addr(c, 1)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFlush1000 measures a Flush of 1000 dirty leaves (one change
// each) of a 2^28-chunk map, plus their inner pages.
func BenchmarkFlush1000(b *testing.B) {
	ctx := context.Background()
	st := newTestStore()
	const n = 1 << 28
	m := New(st, n, Options{})
	ver := uint64(0)
	dirty := func() {
		ver++
		for i := uint64(0); i < 1000; i++ {
			c := i * (n / 1000)
			m.Set(ctx, c, addr(c, ver))
		}
	}
	dirty()
	m.Flush(ctx)
	b.ReportAllocs()
	pages := 0
	for b.Loop() {
		b.StopTimer()
		dirty()
		pages = m.DirtyPages()
		b.StartTimer()
		if _, err := m.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(pages), "pages/flush")
}

// coldMap returns a loaded map of n chunks, every one set, with every page
// cached (CacheBytes holds them all).
func coldMap(b testing.TB, n uint64) *Map {
	ctx := context.Background()
	st := newTestStore()
	m := New(st, n, Options{})
	for c := range n {
		m.Set(ctx, c, addr(c, 1))
	}
	root, err := m.Flush(ctx)
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{CacheBytes: int64(n/DefaultPageEntries+16) * PageBytes(DefaultPageEntries)}
	m, err = Load(ctx, st, root, n, opts)
	if err != nil {
		b.Fatal(err)
	}
	for c := uint64(0); c < n; c += DefaultPageEntries { // cache every page
		m.Get(ctx, c)
	}
	return m
}

// getOld is Get's path for a leaf in memory as it was before the leaf
// index (a Go map lookup, two divisions, defer), kept for comparison.
func (m *Map) getOld(ctx context.Context, chunk uint64) (blocks.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if chunk >= m.n {
		return blocks.Addr{}, fmt.Errorf("chunkmap: get chunk %d of %d: %w", chunk, m.n, ErrRange)
	}
	if p := m.pages[0][chunk/m.e]; p != nil {
		m.touch(p)
		return p.ent[chunk%m.e], nil
	}
	m.mu.Unlock()
	defer m.mu.Lock()
	return m.Get(ctx, chunk)
}

// evictBuf is the 256 MiB the cold benchmarks copy 4 KiB from between
// Gets, as a volume's random read copies its block out of a mapping: it
// pushes the map's pages out of the CPU's caches as a real read does.
var evictBuf []byte

func initEvictBuf() {
	if evictBuf == nil {
		evictBuf = make([]byte, 256<<20)
		for i := range evictBuf {
			evictBuf[i] = byte(i)
		}
	}
}

// coldLoop runs ops random Gets (get; none when nil) of a map of n chunks,
// each after a 4 KiB copy from a random place in evictBuf when copying.
func coldLoop(ops int, n uint64, copying bool, get func(uint64) (blocks.Addr, error)) error {
	x := uint64(88172645463325252)
	var dst [4096]byte
	var sink byte
	for range ops {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if copying {
			off := (x >> 20) % (uint64(len(evictBuf)) / 4096) * 4096
			copy(dst[:], evictBuf[off:off+4096])
			sink += dst[0]
		}
		if get != nil {
			a, err := get(x % n)
			if err != nil {
				return err
			}
			// The next op depends on this Get, as a read's copy does, so
			// the CPU cannot overlap its miss with the next op's.
			x ^= uint64(a[31] & 0x80)
		}
	}
	_ = sink
	return nil
}

// BenchmarkGetCold measures random Gets of cached leaves with cold CPU
// caches: each op is a Get plus a 4 KiB copy from a random place in 256
// MiB ("copy"; "copyonly" is the copy alone, to subtract), or a Get alone
// ("nocopy", cold only when the leaves exceed L2). "old" is the path
// before the leaf index (getOld).
func BenchmarkGetCold(b *testing.B) {
	ctx := context.Background()
	initEvictBuf()
	for _, n := range []uint64{1 << 16, 1 << 20, 1 << 23} {
		m := coldMap(b, n)
		b.Run(fmt.Sprintf("n=%d/copyonly", n), func(b *testing.B) {
			for b.Loop() {
				coldLoop(1, n, true, nil)
			}
		})
		for _, mode := range []string{"copy", "nocopy"} {
			for _, impl := range []string{"old", "new"} {
				get := func(c uint64) (blocks.Addr, error) { return m.Get(ctx, c) }
				if impl == "old" {
					get = func(c uint64) (blocks.Addr, error) { return m.getOld(ctx, c) }
				}
				b.Run(fmt.Sprintf("n=%d/%s/%s", n, mode, impl), func(b *testing.B) {
					b.ReportAllocs()
					b.ResetTimer()
					if err := coldLoop(b.N, n, mode == "copy", get); err != nil {
						b.Fatal(err)
					}
				})
			}
		}
	}
}
