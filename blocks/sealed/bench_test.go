package sealed

import (
	"fmt"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/policies"
)

var benchOptions = []Options{
	{},
	{Compression: policies.CompressionLZ4},
	{Cipher: policies.CipherAES256, Key: key(1)},
	{Cipher: policies.CipherAES256, Key: key(1), Compression: policies.CompressionLZ4, Dedup: true},
	{Cipher: policies.CipherXChaCha, Key: key(1)},
	{Cipher: policies.CipherXChaCha, Key: key(1), Compression: policies.CompressionLZ4, Dedup: true},
}

// benchStores: "seal" is the sealed store over a map (the cost of sealing
// alone); "pipeline" is over 4+2 erasure coding on 6 memory holders.
func benchStore(b *testing.B, o Options, pipeline bool) *Store {
	if pipeline {
		return newStack(b, o, true).s
	}
	s, err := New(newRaw(), o)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// Data is half text, half random: lz4 compresses it about 2:1.
func benchData(size int) []byte {
	d := blockstest.Compressible(1, size)
	copy(d[size/2:], blockstest.Random(1, size/2))
	return d
}

func BenchmarkPut(b *testing.B) {
	for _, pipeline := range []bool{false, true} {
		for _, o := range benchOptions {
			for _, size := range []int{4 << 10, 1 << 20} {
				b.Run(fmt.Sprintf("pipeline=%v/%s/%s/dedup=%v/%dKiB", pipeline, o.Cipher, o.Compression, o.Dedup, size>>10), func(b *testing.B) {
					s := benchStore(b, o, pipeline)
					data := benchData(size)
					b.SetBytes(int64(size))
					i := 0
					for b.Loop() {
						data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
						i++
						if _, err := s.Put(b.Context(), data); err != nil {
							b.Fatal(err)
						}
						if i%256 == 0 { // bound the memory held
							b.StopTimer()
							s = benchStore(b, o, pipeline)
							b.StartTimer()
						}
					}
				})
			}
		}
	}
}

func BenchmarkGet(b *testing.B) {
	for _, pipeline := range []bool{false, true} {
		for _, o := range benchOptions {
			for _, size := range []int{4 << 10, 1 << 20} {
				b.Run(fmt.Sprintf("pipeline=%v/%s/%s/dedup=%v/%dKiB", pipeline, o.Cipher, o.Compression, o.Dedup, size>>10), func(b *testing.B) {
					s := benchStore(b, o, pipeline)
					a, err := s.Put(b.Context(), benchData(size))
					if err != nil {
						b.Fatal(err)
					}
					b.SetBytes(int64(size))
					for b.Loop() {
						if _, err := s.Get(b.Context(), a); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

var _ blocks.Store = (*rawStore)(nil)
