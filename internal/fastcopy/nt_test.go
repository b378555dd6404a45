package fastcopy

import (
	"bytes"
	"testing"
	"unsafe"
)

// TestCopyNTMatchesCopy checks CopyNT against the built-in copy (see
// matchesCopy) around its 64-byte blocks and its 16-byte destination
// alignment: only 16-aligned destinations take the non-temporal path,
// overlapping slices are left to Copy. Then the fast path on a destination
// aligned by hand, from a source at every offset within 16 bytes.
func TestCopyNTMatchesCopy(t *testing.T) {
	matchesCopy(t, CopyNT, []int{0, 1, 63, 64, 65, 127, 128, 200, 4095, 4096, 4097, 8000})
	src := make([]byte, 4096+16)
	for i := range src {
		src[i] = byte(i*13 + 5)
	}
	for off := range 16 {
		buf := make([]byte, 4096+16)
		skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(buf))) % 16)
		dst := buf[skip : skip+4096] // 16-byte aligned (allocations are not, under -race)
		if n := CopyNT(dst, src[off:]); n != 4096 || !bytes.Equal(dst, src[off:off+4096]) {
			t.Fatalf("source offset %d: copied %d, equal %v", off, n, bytes.Equal(dst, src[off:off+4096]))
		}
	}
}
