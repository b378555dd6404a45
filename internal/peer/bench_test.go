package peer

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
)

// BenchmarkPiece measures 4 KiB PutPiece and GetPiece over loopback, client
// and server in one process, a memory store behind the server, at 1 and 32
// concurrent callers. Reported: ns/op and MB/s (b.SetBytes), ops/s.
//
//	go test -run '^$' -bench Piece -benchtime 2s ./internal/peer
func BenchmarkPiece(b *testing.B) {
	for _, conns := range []int{1, 2} {
		for _, callers := range []int{1, 32} {
			for _, op := range []string{"put", "get"} {
				b.Run(fmt.Sprintf("%s/callers=%d/conns=%d", op, callers, conns), func(b *testing.B) {
					benchPiece(b, op, callers, conns)
				})
			}
		}
	}
}

func benchPiece(b *testing.B, op string, callers, conns int) {
	ts := startServer(b, nil, "")
	c := newClient(b, ts.addr, func(o *ClientOptions) { o.Conns = conns })
	ctx := context.Background()
	data := blockstest.Random(1, 4096)
	key := func(i uint64) blocks.Addr {
		var k blocks.Addr
		binary.BigEndian.PutUint64(k[:], i)
		return k
	}
	const nget = 1024
	if op == "get" {
		for i := range uint64(nget) {
			if err := c.PutPiece(ctx, key(i), data); err != nil {
				b.Fatal(err)
			}
		}
	}
	var next atomic.Uint64
	b.SetBytes(int64(len(data)))
	b.SetParallelism(max(1, callers/max(1, runtimeProcs())))
	b.ResetTimer()
	if callers == 1 {
		for i := 0; b.Loop(); i++ {
			benchOne(b, c, op, key, data, next.Add(1), nget)
		}
	} else {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				benchOne(b, c, op, key, data, next.Add(1), nget)
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func benchOne(b *testing.B, c *Client, op string, key func(uint64) blocks.Addr, data []byte, i uint64, nget uint64) {
	ctx := context.Background()
	if op == "put" {
		// Keys cycle so that the store stays small: the first round stores,
		// later rounds are the holder's "replaces nothing" no-ops; either
		// way the whole piece crosses the wire.
		if err := c.PutPiece(ctx, key(1<<32+i%8192), data); err != nil {
			b.Error(err)
		}
		return
	}
	if _, err := c.GetPiece(ctx, key(i%nget)); err != nil {
		b.Error(err)
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
