package crc32c

import "golang.org/x/sys/cpu"

// haveFold reports whether fold may run: it needs AVX-512 (F, and the
// operating system saving the ZMM registers, which x/sys/cpu checks) and
// the 512-bit VPCLMULQDQ.
var haveFold = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasPCLMULQDQ

// foldMin is the shortest input fold takes. Below it hash/crc32's SSE4.2
// code is as fast or faster (BenchmarkUpdate: crossover near 256 bytes on
// the development machine).
const foldMin = 256

// fold returns the CRC-32C state (not inverted) of crc followed by p.
// len(p) must be a multiple of 16 and at least 128.
//
//go:noescape
func fold(crc uint32, p []byte) uint32

// fold4 is fold of four inputs of n bytes each at once: crc holds their
// states before and after. n must be a multiple of 16 and at least 64.
//
//go:noescape
func fold4(crc *[4]uint32, p0, p1, p2, p3 *byte, n int)
