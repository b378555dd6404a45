package fastcopy

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// TestCopyNTMatchesCopy checks CopyNT against the built-in copy for
// destination alignments within 16 bytes (the fast path needs 16),
// source alignments, lengths around the 64-byte blocks, a shorter source,
// and overlapping slices (left to Copy).
func TestCopyNTMatchesCopy(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	src := make([]byte, 8192+64)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	for _, n := range []int{0, 1, 63, 64, 65, 127, 128, 200, 4095, 4096, 4097, 8000} {
		for _, ds := range []int{0, 1, 8, 15, 16, 32} {
			for _, ss := range []int{0, 1, 7, 13, 16} {
				want := make([]byte, 8192+128)
				for i := range want {
					want[i] = byte(i * 5)
				}
				got := bytes.Clone(want)
				wn := copy(want[ds:ds+n], src[ss:ss+n+5])
				gn := CopyNT(got[ds:ds+n], src[ss:ss+n+5])
				if wn != gn || !bytes.Equal(want, got) {
					t.Fatalf("n=%d dst+%d src+%d: CopyNT returned %d (want %d) or wrote other bytes", n, ds, ss, gn, wn)
				}
			}
		}
	}
	dst := make([]byte, 4096)
	if n := CopyNT(dst, src[:1000]); n != 1000 || !bytes.Equal(dst[:1000], src[:1000]) || dst[1000] != 0 {
		t.Fatalf("short source: copied %d", n)
	}
	for _, shift := range []int{16, 64, 100} {
		a := bytes.Clone(src[:6000])
		b := bytes.Clone(src[:6000])
		copy(a[shift:], a[:5000])
		CopyNT(b[shift:], b[:5000])
		if !bytes.Equal(a, b) {
			t.Fatalf("forward overlap by %d differs", shift)
		}
		copy(a[:5000], a[shift:])
		CopyNT(b[:5000], b[shift:])
		if !bytes.Equal(a, b) {
			t.Fatalf("backward overlap by %d differs", shift)
		}
	}
}
