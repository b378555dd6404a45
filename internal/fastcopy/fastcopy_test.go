package fastcopy

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestCopyMatchesCopy checks Copy against the built-in copy for every
// destination and source alignment within 16 bytes, around the lengths
// where it changes strategy, and for overlapping slices of one buffer.
func TestCopyMatchesCopy(t *testing.T) {
	matchesCopy(t, Copy, []int{0, 1, 7, 15, 16, 100, minLong - 1, minLong, minLong + 1, 4095, 4096, 4097, 8000})
}

// matchesCopy checks f against the built-in copy: for each length, every
// destination and source alignment within 16 bytes, with a source longer
// than the destination (f must copy only what fits and touch nothing
// else); then a shorter source, and overlapping slices in both directions.
func matchesCopy(t *testing.T, f func(dst, src []byte) int, lengths []int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	src := make([]byte, 8192+64)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	for _, n := range lengths {
		for ds := range 16 {
			for ss := range 16 {
				want := make([]byte, 8192+64)
				got := make([]byte, 8192+64)
				for i := range want {
					want[i] = byte(i * 7)
				}
				copy(got, want)
				wn := copy(want[ds:ds+n], src[ss:ss+n+3])
				gn := f(got[ds:ds+n], src[ss:ss+n+3])
				if wn != gn || !bytes.Equal(want, got) {
					t.Fatalf("n=%d dst+%d src+%d: returned %d (want %d) or wrote other bytes", n, ds, ss, gn, wn)
				}
			}
		}
	}
	// Shorter source than destination.
	dst := make([]byte, 4096)
	if n := f(dst[1:], src[:3000]); n != 3000 || !bytes.Equal(dst[1:3001], src[:3000]) || dst[3001] != 0 {
		t.Fatalf("short source: copied %d", n)
	}
	// Overlap, both directions, as copy allows.
	for _, shift := range []int{1, 3, 8, 13, 16, 64, 100} {
		a := append([]byte(nil), src[:6000]...)
		b := append([]byte(nil), src[:6000]...)
		copy(a[shift:], a[:5000])
		f(b[shift:], b[:5000])
		if !bytes.Equal(a, b) {
			t.Fatalf("forward overlap by %d differs", shift)
		}
		copy(a[:5000], a[shift:])
		f(b[:5000], b[shift:])
		if !bytes.Equal(a, b) {
			t.Fatalf("backward overlap by %d differs", shift)
		}
	}
}

// BenchmarkCopy4K copies 4 KiB into a page-aligned buffer from random
// places of a 256 MiB buffer at a source offset misaligned by 13 bytes,
// with the built-in copy and with Copy.
func BenchmarkCopy4K(b *testing.B) {
	big := make([]byte, 256<<20)
	for i := range big {
		big[i] = byte(i)
	}
	for _, c := range []struct {
		name string
		fn   func(dst, src []byte) int
	}{{"builtin", func(d, s []byte) int { return copy(d, s) }}, {"fastcopy", Copy}} {
		for _, skew := range []int{0, 13} {
			b.Run(c.name+map[int]string{0: "/aligned", 13: "/misaligned"}[skew], func(b *testing.B) {
				p := make([]byte, 4096)
				rng := rand.New(rand.NewPCG(1, 1))
				n := int64(len(big)/4232 - 1)
				b.SetBytes(4096)
				for b.Loop() {
					off := rng.Int64N(n)*4232 + int64(skew)
					c.fn(p, big[off:off+4096])
				}
			})
		}
	}
}
