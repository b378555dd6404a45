// Package crc32c computes CRC-32C (Castagnoli), the checksum of every
// record Cairn keeps on disk, with the same results as hash/crc32's
// Castagnoli table, faster on large inputs that are not in the CPU's
// caches.
//
// Why not hash/crc32 alone: for Castagnoli it runs the SSE4.2 CRC32
// instruction over three interleaved streams, 8 bytes per instruction.
// That is quick on data in the caches, but a large read checks records
// that are not (page-cache memory read once, then sent), and there the
// instruction stream waits for memory: on this project's 2-core AMD EPYC
// development machine, 4 KiB records of a 512 MiB buffer checked at about
// 5 GB/s (207 µs per MiB), against 8.9 GB/s for a plain copy of the same
// bytes and 17.5 GB/s for hash/crc32's IEEE polynomial, which has an
// AVX-512 carry-less multiply path that Castagnoli lacks. The CRC was a
// quarter of the NBD server's CPU in fio's 1 MiB sequential reads.
// klauspost/crc32 (v1.3.0) adds AVX-512 for IEEE only, judging the gain
// for Castagnoli too small on cached data; on uncached data it is not.
//
// So on amd64 with VPCLMULQDQ, inputs of foldMin bytes or more are folded
// 64 bytes at a time with carry-less multiplies (the method of Intel's
// white paper "Fast CRC Computation for Generic Polynomials Using
// PCLMULQDQ Instruction", Gopal et al., 2009, on 512-bit registers where
// the processor has AVX-512, on pairs of 256-bit ones where it has only
// AVX2, as AMD's Zen 3 does), and the tail under 16 bytes, and every input
// elsewhere, goes to hash/crc32. On a Zen 3 VM (2 cores), 4 KiB records
// spread over 512 MiB (BenchmarkCold): 80 µs per MiB with the 256-bit
// fold against 144 with hash/crc32; in cache the two are even (about 19
// GB/s at 4 KiB).
// The fold's constants are derived in consts_test.go, which also checks
// the derivation against the published constants of the IEEE polynomial.
package crc32c

import "hash/crc32"

// table is hash/crc32's Castagnoli table, for what fold leaves to it.
var table = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C of p, as hash/crc32 computes it with the
// Castagnoli table.
func Checksum(p []byte) uint32 { return Update(0, p) }

// Update returns the result of adding the bytes in p to crc, as
// crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), p).
func Update(crc uint32, p []byte) uint32 {
	if len(p) >= foldMin && haveFold {
		n := len(p) &^ 15
		crc = ^fold(^crc, p[:n])
		p = p[n:]
	}
	if len(p) == 0 {
		return crc
	}
	return crc32.Update(crc, table, p)
}

// Update4 is Update of four inputs at once: crc[i] = Update(crc[i], p[i]).
//
// Checking many records that are not in the CPU's caches (a large read's,
// scattered over the page cache) is bound by how many cache misses are in
// flight, and one input read from start to end keeps few of them going:
// each record starts a new stream the hardware prefetcher must find
// again, in another page. Folding four inputs in one loop interleaves
// their loads. Measured on the development VM (2 cores), 4,232-byte
// records at random places: BenchmarkScattered (a 1 GiB heap buffer),
// 213 µs per MiB one after another against 126-131 with Update4; in a
// scratch benchmark over a mapped 1 GiB file, 126-136 against 89-97, and
// merely loading one word of every line took 124-131 µs one record after
// another, 106-108 two at a time, 85-93 four at a time and 82-89 eight
// at a time, hence four.
func Update4(crc *[4]uint32, p *[4][]byte) {
	n := min(len(p[0]), len(p[1]), len(p[2]), len(p[3]))
	st := [4]uint32{^crc[0], ^crc[1], ^crc[2], ^crc[3]}
	done := 0
	if f := n &^ 15; haveFold && f >= foldMin {
		fold4(&st, &p[0][0], &p[1][0], &p[2][0], &p[3][0], f)
		done = f
	}
	// What the fold leaves of the common length (a record's last bytes,
	// or inputs too short for it, such as record headers), four CRC32
	// chains at once: one after another, through hash/crc32, a 4 KiB
	// piece's two short checksums each waited on their own chain.
	if m := n - done; haveShort4 && m > 0 {
		short4(&st, &p[0][done], &p[1][done], &p[2][done], &p[3][done], m)
		done = n
	}
	for i := range 4 {
		crc[i] = ^st[i]
		if len(p[i]) > done {
			crc[i] = Update(crc[i], p[i][done:])
		}
	}
}

// foldImpl is one width of the fold, named for the tests.
type foldImpl struct {
	name  string
	fold  func(crc uint32, p []byte) uint32
	fold4 func(crc *[4]uint32, p0, p1, p2, p3 *byte, n int)
}
