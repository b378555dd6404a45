package chunkmap

import (
	"context"
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
