package silo

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"cairn/blocks"
)

var benchSink []byte

func benchKey(i uint64) blocks.Addr {
	var k blocks.Addr
	binary.LittleEndian.PutUint64(k[:], i)
	k[31] = 0xbe
	return k
}

func openBench(b *testing.B) *Silo {
	b.Helper()
	s, err := Open(context.Background(), b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	waitSpare(b, s) // measure the writes, not the spare's preallocation
	return s
}

func BenchmarkPut4K(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	data := pieceData(1, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := s.PutPiece(ctx, benchKey(uint64(i)), data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPutSync4K(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	data := pieceData(1, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := s.PutPiece(ctx, benchKey(uint64(i)), data); err != nil {
			b.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutSync4KParallel: many concurrent Put+Sync callers share
// fdatasyncs (reported as fsyncs/op).
func BenchmarkPutSync4KParallel(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	data := pieceData(1, 4096)
	var next atomic.Uint64
	b.SetBytes(4096)
	b.ReportAllocs()
	b.SetParallelism(16)
	s0 := s.syncs.Load()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.PutPiece(ctx, benchKey(next.Add(1)), data); err != nil {
				b.Error(err)
				return
			}
			if err := s.Sync(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(s.syncs.Load()-s0)/float64(b.N), "fsyncs/op")
}

func BenchmarkGet4K(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	const n = 16384 // 64 MiB
	data := pieceData(1, 4096)
	for i := range n {
		if err := s.PutPiece(ctx, benchKey(uint64(i)), data); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.GetPiece(ctx, benchKey(uint64(rnd.IntN(n)))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet4KParallel(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	const n = 16384
	data := pieceData(1, 4096)
	for i := range n {
		if err := s.PutPiece(ctx, benchKey(uint64(i)), data); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rnd := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			if _, err := s.GetPiece(ctx, benchKey(uint64(rnd.IntN(n)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The plain-file baselines, on the same disk (b.TempDir).

func benchFile(b *testing.B) *os.File {
	f, err := os.OpenFile(filepath.Join(b.TempDir(), "plain"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func BenchmarkFilePwrite4K(b *testing.B) {
	f := benchFile(b)
	data := pieceData(1, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		if _, err := f.WriteAt(data, off); err != nil {
			b.Fatal(err)
		}
		off += 4096
	}
}

func BenchmarkFilePwriteFdatasync4K(b *testing.B) {
	f := benchFile(b)
	fd := int(f.Fd())
	data := pieceData(1, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		if _, err := f.WriteAt(data, off); err != nil {
			b.Fatal(err)
		}
		off += 4096
		if err := syscall.Fdatasync(fd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFilePwriteFdatasync4KParallel: the same concurrency, each caller
// with its own fdatasync (no group commit).
func BenchmarkFilePwriteFdatasync4KParallel(b *testing.B) {
	f := benchFile(b)
	fd := int(f.Fd())
	data := pieceData(1, 4096)
	var off atomic.Int64
	b.SetBytes(4096)
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := f.WriteAt(data, off.Add(4096)-4096); err != nil {
				b.Error(err)
				return
			}
			if err := syscall.Fdatasync(fd); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkFilePread4K(b *testing.B) {
	f := benchFile(b)
	const n = 16384
	data := pieceData(1, 4096)
	for i := range n {
		if _, err := f.WriteAt(data, int64(i)*4096); err != nil {
			b.Fatal(err)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := f.ReadAt(buf, int64(rnd.IntN(n))*4096); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpen4K reopens a silo of 32768 pieces of 4 KiB (128 MiB in
// four sealed 32 MiB segments and an active one): sealed segments are
// scanned by header, the active one read whole.
func BenchmarkOpen4K(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	opts := Options{SegmentSize: 32 << 20}
	s, err := Open(ctx, dir, opts)
	if err != nil {
		b.Fatal(err)
	}
	data := pieceData(1, 4096)
	const n = 32768
	for i := range n {
		if err := s.PutPiece(ctx, benchKey(uint64(i)), data); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		s, err := Open(ctx, dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		if st := s.Stats(); st.Pieces != n {
			b.Fatalf("%d pieces", st.Pieces)
		}
		s.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/piece")
}

// BenchmarkFilePread4KAlloc is BenchmarkFilePread4K with a fresh buffer
// per read, as GetPiece must return one the caller owns.
func BenchmarkFilePread4KAlloc(b *testing.B) {
	f := benchFile(b)
	const n = 16384
	data := pieceData(1, 4096)
	for i := range n {
		if _, err := f.WriteAt(data, int64(i)*4096); err != nil {
			b.Fatal(err)
		}
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		buf := make([]byte, 4096+hdrSize)
		if _, err := f.ReadAt(buf, int64(rnd.IntN(n-1))*4096+hdrSize); err != nil {
			b.Fatal(err)
		}
		benchSink = buf
	}
}

// BenchmarkFilePwriteFdatasync4KPrealloc is BenchmarkFilePwriteFdatasync4K
// into a file whose blocks are already written (zeros), as nbdkit's file
// plugin writes into a disk image: fdatasync flushes data, not metadata.
func BenchmarkFilePwriteFdatasync4KPrealloc(b *testing.B) {
	f := benchFile(b)
	fd := int(f.Fd())
	const size = 64 << 20
	if err := writeZeros(newOSFile(f), 0, size); err != nil {
		b.Fatal(err)
	}
	if err := syscall.Fdatasync(fd); err != nil {
		b.Fatal(err)
	}
	data := pieceData(1, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	var off int64
	for b.Loop() {
		if _, err := f.WriteAt(data, off); err != nil {
			b.Fatal(err)
		}
		off = (off + 4096) % size
		if err := syscall.Fdatasync(fd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGetInto4K is BenchmarkGet4K reading into a reused buffer.
func BenchmarkGetInto4K(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	const n = 16384
	data := pieceData(1, 4096)
	for i := range n {
		if err := s.PutPiece(ctx, benchKey(uint64(i)), data); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 0, 4096+ReadSlack)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := s.GetPieceInto(ctx, benchKey(uint64(rnd.IntN(n))), buf)
		if err != nil || len(got) != 4096 {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeq1M writes (then reads) 1 MiB as 256 pieces of 4 KiB per op,
// with one Sync per MiB for writes, against a plain file doing the same
// with pwrite+fdatasync and pread.
func BenchmarkSeq1M(b *testing.B) {
	ctx := context.Background()
	data := pieceData(1, 4096)
	const per = 256
	b.Run("silo-write", func(b *testing.B) {
		s := openBench(b)
		b.SetBytes(per * 4096)
		b.ReportAllocs()
		var k uint64
		for b.Loop() {
			for range per {
				k++
				if err := s.PutPiece(ctx, benchKey(k), data); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Sync(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("file-write", func(b *testing.B) {
		f := benchFile(b)
		fd := int(f.Fd())
		b.SetBytes(per * 4096)
		var off int64
		for b.Loop() {
			for range per {
				if _, err := f.WriteAt(data, off); err != nil {
					b.Fatal(err)
				}
				off += 4096
			}
			if err := syscall.Fdatasync(fd); err != nil {
				b.Fatal(err)
			}
		}
	})
	const total = 16384 // 64 MiB
	b.Run("silo-read", func(b *testing.B) {
		s := openBench(b)
		for i := range total {
			if err := s.PutPiece(ctx, benchKey(uint64(i)), data); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 0, 4096+ReadSlack)
		b.SetBytes(per * 4096)
		b.ReportAllocs()
		var k uint64
		for b.Loop() {
			for range per {
				if _, err := s.GetPieceInto(ctx, benchKey(k%total), buf); err != nil {
					b.Fatal(err)
				}
				k++
			}
		}
	})
	b.Run("file-read", func(b *testing.B) {
		f := benchFile(b)
		for i := range total {
			if _, err := f.WriteAt(data, int64(i)*4096); err != nil {
				b.Fatal(err)
			}
		}
		buf := make([]byte, 4096)
		b.SetBytes(per * 4096)
		var k int64
		for b.Loop() {
			for range per {
				if _, err := f.ReadAt(buf, k%total*4096); err != nil {
					b.Fatal(err)
				}
				k++
			}
		}
	})
}

// BenchmarkFilePwriteFdatasync4KFallocate is the same into a file
// preallocated with fallocate only (unwritten extents: each fdatasync must
// also convert the extent it wrote, a metadata update).
func BenchmarkFilePwriteFdatasync4KFallocate(b *testing.B) {
	f := benchFile(b)
	fd := int(f.Fd())
	const size = 64 << 20
	if err := syscall.Fallocate(fd, 0, 0, size); err != nil {
		b.Skip("fallocate:", err)
	}
	if err := syscall.Fdatasync(fd); err != nil {
		b.Fatal(err)
	}
	data := pieceData(1, 4096)
	b.SetBytes(4096)
	var off int64
	for b.Loop() {
		if _, err := f.WriteAt(data, off); err != nil {
			b.Fatal(err)
		}
		off = (off + 4096) % size
		if err := syscall.Fdatasync(fd); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPutHashed4KParallel is the volume's push on one node: many
// goroutines each hash a 4 KiB chunk (SHA-256, the block address) and put
// it. The hashing runs in parallel; what the silo does under its write
// lock does not, so the ratio to BenchmarkPutHashed4K shows how much of
// the put is serialized.
func BenchmarkPutHashed4KParallel(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	var n atomic.Uint64
	b.SetBytes(4096)
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		data := pieceData(1, 4096)
		for pb.Next() {
			i := n.Add(1)
			binary.LittleEndian.PutUint64(data, i)
			if err := s.PutPiece(ctx, blocks.Sum(data), data); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPutHashed4K is BenchmarkPutHashed4KParallel on one goroutine.
func BenchmarkPutHashed4K(b *testing.B) {
	s := openBench(b)
	ctx := context.Background()
	data := pieceData(1, 4096)
	b.SetBytes(4096)
	for i := uint64(0); b.Loop(); i++ {
		binary.LittleEndian.PutUint64(data, i)
		if err := s.PutPiece(ctx, blocks.Sum(data), data); err != nil {
			b.Fatal(err)
		}
	}
}
