package crc32c

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkScattered checks 256 records of 4,232 bytes at random places
// of a 1 GiB buffer per op (a large read's records after random writes),
// one after another (Update) and four at a time (Update4).
func BenchmarkScattered(b *testing.B) {
	const rec = 4232
	big := make([]byte, 1<<30)
	for i := 0; i < len(big); i += 4096 {
		big[i] = byte(i >> 12) // fault every page in
	}
	nrec := len(big) / rec
	recs := make([]int, 256)
	piece := func(r int) []byte { return big[r*rec+80 : (r+1)*rec] }
	for _, mode := range []string{"one", "four"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(1 << 20)
			for b.Loop() {
				b.StopTimer()
				for i := range recs {
					recs[i] = rand.IntN(nrec)
				}
				b.StartTimer()
				if mode == "one" {
					for _, r := range recs {
						sink += Update(0, piece(r))
					}
					continue
				}
				var c [4]uint32
				var p [4][]byte
				for i := 0; i < len(recs); i += 4 {
					for j := range 4 {
						p[j] = piece(recs[i+j])
					}
					Update4(&c, &p)
					sink += c[0] + c[1] + c[2] + c[3]
				}
			}
		})
	}
}
