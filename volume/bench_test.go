package volume

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The benchmarks run the volume over the in-memory store (so they measure
// this layer's CPU cost) beside a plain os.File in b.TempDir doing the same
// I/O. The working set is 4096 chunks of 64 rotating buffers, so that the
// memory store (whose Sync copies its whole state) stays small.

const benchChunks = 4096

func benchBufs(n, size int) [][]byte {
	rng := rand.New(rand.NewPCG(7, 7))
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
		for j := range bufs[i] {
			bufs[i][j] = byte(rng.Uint32())
		}
	}
	return bufs
}

type benchTarget struct {
	write func(p []byte, off int64) error
	read  func(p []byte, off int64) error
	flush func() error
}

func benchTargets(b *testing.B, size int64) map[string]func() benchTarget {
	ctx := context.Background()
	return map[string]func() benchTarget{
		"volume": func() benchTarget {
			e := newEnv(b)
			c := e.catalog(e.options("bench"))
			if _, err := c.Create(ctx, "bench", size, testPolicy(4096)); err != nil {
				b.Fatal(err)
			}
			v := mustOpen(b, c, "bench", false)
			b.Cleanup(func() { v.Close(ctx) })
			return benchTarget{
				write: func(p []byte, off int64) error { return v.WriteAt(ctx, p, off) },
				read:  func(p []byte, off int64) error { return v.ReadAt(ctx, p, off) },
				flush: func() error { return v.Flush(ctx) },
			}
		},
		"file": func() benchTarget {
			f, err := os.Create(filepath.Join(b.TempDir(), "disk"))
			if err != nil {
				b.Fatal(err)
			}
			if err := f.Truncate(size); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { f.Close() })
			return benchTarget{
				write: func(p []byte, off int64) error { _, err := f.WriteAt(p, off); return err },
				read:  func(p []byte, off int64) error { _, err := f.ReadAt(p, off); return err },
				flush: func() error { return syscall.Fdatasync(int(f.Fd())) },
			}
		},
	}
}

func runTargets(b *testing.B, size int64, fn func(b *testing.B, t benchTarget)) {
	for _, name := range []string{"volume", "file"} {
		mk := benchTargets(b, size)[name]
		b.Run(name, func(b *testing.B) { fn(b, mk()) })
	}
}

func BenchmarkRandomWrite4K(b *testing.B) {
	bufs := benchBufs(64, 4096)
	runTargets(b, benchChunks*4096, func(b *testing.B, t benchTarget) {
		rng := rand.New(rand.NewPCG(1, 1))
		b.SetBytes(4096)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := t.write(bufs[i%64], rng.Int64N(benchChunks)*4096); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if err := t.flush(); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkWriteFlush4K(b *testing.B) {
	bufs := benchBufs(64, 4096)
	runTargets(b, benchChunks*4096, func(b *testing.B, t benchTarget) {
		rng := rand.New(rand.NewPCG(1, 1))
		b.SetBytes(4096)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := t.write(bufs[i%64], rng.Int64N(benchChunks)*4096); err != nil {
				b.Fatal(err)
			}
			if err := t.flush(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSequentialWrite1M(b *testing.B) {
	bufs := benchBufs(4, 1<<20)
	const size = 256 << 20
	runTargets(b, size, func(b *testing.B, t benchTarget) {
		b.SetBytes(1 << 20)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			// Rotating buffers dedup in the memory store after one pass.
			if err := t.write(bufs[i%4], int64(i%(size>>20))<<20); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if err := t.flush(); err != nil {
			b.Fatal(err)
		}
	})
}

func BenchmarkRandomRead4K(b *testing.B) {
	bufs := benchBufs(64, 4096)
	runTargets(b, benchChunks*4096, func(b *testing.B, t benchTarget) {
		for i := int64(0); i < benchChunks; i++ {
			if err := t.write(bufs[i%64], i*4096); err != nil {
				b.Fatal(err)
			}
		}
		if err := t.flush(); err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 1))
		p := make([]byte, 4096)
		b.SetBytes(4096)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := t.read(p, rng.Int64N(benchChunks)*4096); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkParallelWrite1M writes 1 MiB runs of whole chunks from several
// goroutines (an NBD client at queue depth 8, say) over a region that
// stays in the write-back cache: what the cache itself costs.
func BenchmarkParallelWrite1M(b *testing.B) {
	ctx := context.Background()
	bufs := benchBufs(4, 1<<20)
	const size = 512 << 20
	e := newEnv(b)
	opts := e.options("bench")
	opts.DirtyLimit = 2 * size
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "bench", size, testPolicy(4096)); err != nil {
		b.Fatal(err)
	}
	v := mustOpen(b, c, "bench", false)
	b.Cleanup(func() { v.Close(ctx) })
	var next atomic.Int64
	b.SetBytes(1 << 20)
	b.SetParallelism(4)
	b.ResetTimer()
	cpu0 := cpuNow()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			if err := v.WriteAt(ctx, bufs[i%4], i%(size>>20)<<20); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportCPU(b, cpu0)
}

// cpuNow is the process's CPU time (user and system) so far: on a busy
// machine, CPU per op varies far less than wall time per op.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per op since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuNow()-start)/float64(b.N), "cpu-ns/op")
}
