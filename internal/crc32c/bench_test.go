package crc32c

import (
	"fmt"
	"hash/crc32"
	"testing"
)

var sink uint32

// BenchmarkUpdate compares Update with hash/crc32 on data in the caches,
// by size: where the fold starts to pay (foldMin).
func BenchmarkUpdate(b *testing.B) {
	buf := make([]byte, 8192)
	for _, n := range []int{64, 128, 192, 256, 512, 1024, 4096, 4232} {
		b.Run(fmt.Sprintf("crc32c/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				sink += Update(sink, buf[:n])
			}
		})
		b.Run(fmt.Sprintf("hash-crc32/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				sink += crc32.Update(sink, table, buf[:n])
			}
		})
	}
}

// BenchmarkCold checks 4 KiB records spread over 512 MiB, far more than
// the caches hold: what a large read over NBD does with page-cache pages.
func BenchmarkCold(b *testing.B) {
	big := make([]byte, 512<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	const rec = 4232 // a silo record holding a 4 KiB piece
	for _, side := range []string{"crc32c", "hash-crc32"} {
		f := Update
		if side == "hash-crc32" {
			f = func(crc uint32, p []byte) uint32 { return crc32.Update(crc, table, p) }
		}
		b.Run(side, func(b *testing.B) {
			b.SetBytes(1 << 20)
			off := 0
			for b.Loop() {
				for range 256 {
					if off+rec > len(big) {
						off = 0
					}
					sink += f(0, big[off+80:off+rec])
					off += rec
				}
			}
		})
	}
}
