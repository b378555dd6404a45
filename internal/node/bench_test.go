package node_test

import (
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"cairn/internal/node"
	"cairn/nbd"
	"cairn/policies"
	"cairn/volume"
)

// The benchmarks run a volume over the real stack (silo, consensus,
// volume; the default policy: 4 KiB chunks, one replica, no compression,
// no encryption) beside a plain os.File on the same disk doing the same
// I/O, so that `go test -bench 'Volume|File' ./internal/node` prints the
// pairs side by side (BenchmarkVolume/RandWrite4K vs
// BenchmarkFile/RandWrite4K, ...). internal/benchnbd -go turns them into
// ratios. Every write carries unique content (a counter in its first bytes
// of every 4 KiB), so content addressing cannot dedup it away.

const (
	benchVolumeSize = 4 << 30   // the volume (thin) and the file (sparse)
	benchRegion     = 256 << 20 // the working set of every benchmark
	benchChunk      = 4096
)

// benchTarget is what one side of the comparison does.
type benchTarget struct {
	write func(p []byte, off int64) error
	read  func(p []byte, off int64) error
	flush func() error
	// send writes [off, off+n) to w as a server's READ reply would: the
	// volume with ReadVec's vectored write, the file read into a buffer,
	// then written (as nbdkit's file plugin does).
	send func(off int64, n int, w io.Writer) error
}

// BenchmarkVolume runs the suite against a volume of a real node. The node
// starts once (consensus start-up takes seconds); sub-benchmarks share it.
func BenchmarkVolume(b *testing.B) {
	ctx := context.Background()
	n, err := node.Open(ctx, node.Config{DataDir: b.TempDir(), RaftAddress: freeAddr(b)})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := n.Close(cctx); err != nil {
			b.Error(err)
		}
	}()
	if _, err := n.Catalog().Create(ctx, "bench", benchVolumeSize, policies.Default()); err != nil {
		b.Fatal(err)
	}
	v, err := n.Catalog().Open(ctx, "bench", volume.OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := v.Close(cctx); err != nil {
			b.Error(err)
		}
	}()
	runSuite(b, benchTarget{
		write: func(p []byte, off int64) error { return v.WriteAt(ctx, p, off) },
		read:  func(p []byte, off int64) error { return v.ReadAt(ctx, p, off) },
		flush: func() error { return v.Flush(ctx) },
		send: func(off int64, n int, w io.Writer) error {
			return v.(nbd.VectorReader).ReadVec(ctx, off, n, func(bufs [][]byte) error {
				nb := net.Buffers(bufs)
				_, err := nb.WriteTo(w)
				return err
			})
		},
	})
}

// BenchmarkFile runs the same suite against a sparse file on the same disk:
// pwrite, pread and fdatasync.
func BenchmarkFile(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "disk"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(benchVolumeSize); err != nil {
		b.Fatal(err)
	}
	runSuite(b, benchTarget{
		write: func(p []byte, off int64) error { _, err := f.WriteAt(p, off); return err },
		read:  func(p []byte, off int64) error { _, err := f.ReadAt(p, off); return err },
		flush: func() error { return syscall.Fdatasync(int(f.Fd())) },
		send: func(off int64, n int, w io.Writer) error {
			if cap(sendBuf) < n {
				sendBuf = make([]byte, n)
			}
			if _, err := f.ReadAt(sendBuf[:n], off); err != nil {
				return err
			}
			_, err := w.Write(sendBuf[:n])
			return err
		},
	})
}

// sendBuf is the file's reply buffer in SeqReadSend1M.
var sendBuf []byte

// loopback returns the sending end of a TCP connection over 127.0.0.1
// whose other end a goroutine drains until the benchmark ends.
func loopback(b *testing.B) net.Conn {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, s)
	}()
	b.Cleanup(func() {
		c.Close()
		<-done
		s.Close()
	})
	return c
}

// runSuite runs the four sub-benchmarks in a fixed order. The read
// benchmark fills the region first, once (the testing package calls a
// sub-benchmark's function several times while it sizes b.N).
func runSuite(b *testing.B, t benchTarget) {
	var seq uint64 // makes every written 4 KiB unique across sub-benchmarks
	stamp := func(p []byte) {
		for i := 0; i+8 <= len(p); i += benchChunk {
			seq++
			binary.LittleEndian.PutUint64(p[i:], seq)
		}
	}
	small := randomBuf(benchChunk)
	large := randomBuf(1 << 20)

	b.Run("RandWrite4K", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(1, 1))
		b.SetBytes(benchChunk)
		b.ResetTimer()
		cpu0 := cpuNow()
		for i := 0; i < b.N; i++ {
			stamp(small)
			if err := t.write(small, rng.Int64N(benchRegion/benchChunk)*benchChunk); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0)
		b.StopTimer()
		if err := t.flush(); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("WriteFlush4K", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(2, 2))
		b.SetBytes(benchChunk)
		b.ResetTimer()
		cpu0 := cpuNow()
		for i := 0; i < b.N; i++ {
			stamp(small)
			if err := t.write(small, rng.Int64N(benchRegion/benchChunk)*benchChunk); err != nil {
				b.Fatal(err)
			}
			if err := t.flush(); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0)
	})
	b.Run("SeqWrite1M", func(b *testing.B) {
		b.SetBytes(1 << 20)
		b.ResetTimer()
		cpu0 := cpuNow()
		for i := 0; i < b.N; i++ {
			stamp(large)
			if err := t.write(large, int64(i%(benchRegion>>20))<<20); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0)
		b.StopTimer()
		if err := t.flush(); err != nil {
			b.Fatal(err)
		}
	})
	filled := false
	b.Run("RandRead4K", func(b *testing.B) {
		if !filled {
			for off := int64(0); off < benchRegion; off += 1 << 20 {
				stamp(large)
				if err := t.write(large, off); err != nil {
					b.Fatal(err)
				}
			}
			if err := t.flush(); err != nil {
				b.Fatal(err)
			}
			filled = true
		}
		rng := rand.New(rand.NewPCG(3, 3))
		p := make([]byte, benchChunk)
		b.SetBytes(benchChunk)
		b.ResetTimer()
		cpu0 := cpuNow()
		for i := 0; i < b.N; i++ {
			if err := t.read(p, rng.Int64N(benchRegion/benchChunk)*benchChunk); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0)
	})
	b.Run("SeqRead1M", func(b *testing.B) {
		if !filled {
			b.Skip("runs after RandRead4K, which fills the region")
		}
		p := make([]byte, 1<<20)
		b.SetBytes(1 << 20)
		b.ResetTimer()
		cpu0 := cpuNow()
		for i := 0; i < b.N; i++ {
			if err := t.read(p, int64(i%(benchRegion>>20))<<20); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0)
	})
	b.Run("SeqReadSend1M", func(b *testing.B) {
		if !filled {
			b.Skip("runs after RandRead4K, which fills the region")
		}
		w := loopback(b)
		b.SetBytes(1 << 20)
		b.ResetTimer()
		cpu0 := cpuNow()
		for i := 0; i < b.N; i++ {
			if err := t.send(int64(i%(benchRegion>>20))<<20, 1<<20, w); err != nil {
				b.Fatal(err)
			}
		}
		reportCPU(b, cpu0)
	})
}

// cpuNow returns the process's user+system CPU time. The sub-benchmarks
// report it per op (cpu-ns/op) beside the wall time: on a shared machine
// the CPU an operation costs is steadier than its wall time.
func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per op since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuNow()-start)/float64(b.N), "cpu-ns/op")
}

func randomBuf(n int) []byte {
	rng := rand.New(rand.NewPCG(7, 7))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	return p
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
func freeAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
