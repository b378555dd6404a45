package consensus

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
)

// BenchmarkOpenReady measures the start of a one-node host with 16 shards
// until every shard has a leader (first start, then restart).
func BenchmarkOpenReady(b *testing.B) {
	for i := 0; i < b.N; i++ {
		dir, addr := b.TempDir(), freeAddr(b)
		cfg := Config{NodeID: 1, DataDir: dir, RaftAddress: addr, Shards: 16, Members: map[uint64]string{1: addr}, Logger: testLogger()}
		for _, phase := range []string{"first", "restart"} {
			start := time.Now()
			h, err := Open(context.Background(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			ready(b, h)
			b.ReportMetric(time.Since(start).Seconds(), phase+"-s")
			h.Close()
		}
	}
}

// BenchmarkCompareAndSet measures CAS throughput on a one-node host with 16
// shards, with 1 and 64 concurrent proposers (each on its own block).
func BenchmarkCompareAndSet(b *testing.B) {
	for _, proposers := range []int{1, 64} {
		b.Run(fmt.Sprintf("proposers=%d", proposers), func(b *testing.B) {
			dir, addr := b.TempDir(), freeAddr(b)
			h := openHost(b, Config{NodeID: 1, DataDir: dir, RaftAddress: addr, Shards: 16, Members: map[uint64]string{1: addr}, RTTMillisecond: 100})
			defer h.Close()
			ready(b, h)
			payload := make([]byte, 256)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for p := 0; p < proposers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := blocks.NameID(fmt.Sprint("bench", p))
					var v blocks.Version
					for next.Add(1) <= int64(b.N) {
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						nv, err := h.CompareAndSet(ctx, id, v, payload)
						cancel()
						if err != nil {
							b.Error(err)
							return
						}
						v = nv
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
		})
	}
}
