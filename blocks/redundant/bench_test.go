package redundant

import (
	"fmt"
	"testing"

	"cairn/blocks/blockstest"
)

// BenchmarkPut and BenchmarkGet measure the redundancy layer alone over
// memory holders (so they include the holders' copies, not disks).
func BenchmarkPut(b *testing.B) {
	for _, cfg := range []config{
		{name: "replicas3", replicas: 3, holders: 3},
		{name: "ec4+2", data: 4, parity: 2, holders: 6},
	} {
		for _, size := range []int{4 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%dKiB", cfg.name, size>>10), func(b *testing.B) {
				c := newCluster(b, cfg)
				data := blockstest.Random(1, size)
				b.SetBytes(int64(size))
				i := 0
				for b.Loop() {
					// A distinct block each time, so holders really store it.
					data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
					i++
					if _, err := c.s.Put(b.Context(), data); err != nil {
						b.Fatal(err)
					}
					if i%256 == 0 { // bound the memory the holders keep
						b.StopTimer()
						c = newCluster(b, cfg)
						b.StartTimer()
					}
				}
			})
		}
	}
}

func BenchmarkGet(b *testing.B) {
	for _, cfg := range []config{
		{name: "replicas3", replicas: 3, holders: 3},
		{name: "ec4+2", data: 4, parity: 2, holders: 6},
		{name: "ec4+2-degraded", data: 4, parity: 2, holders: 6},
	} {
		for _, size := range []int{4 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%dKiB", cfg.name, size>>10), func(b *testing.B) {
				c := newCluster(b, cfg)
				addr, err := c.s.Put(b.Context(), blockstest.Random(1, size))
				if err != nil {
					b.Fatal(err)
				}
				if cfg.name == "ec4+2-degraded" { // a data holder is down: every read reconstructs
					c.holder(addr, 1).down.Store(true)
				}
				b.SetBytes(int64(size))
				for b.Loop() {
					if _, err := c.s.Get(b.Context(), addr); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
