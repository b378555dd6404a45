package crc32c

import "golang.org/x/sys/cpu"

// The fold comes in two widths. fold512 needs AVX-512 (F, and the
// operating system saving the ZMM registers, which x/sys/cpu checks) and
// the 512-bit VPCLMULQDQ; fold256 needs AVX2 and the VEX-encoded 256-bit
// VPCLMULQDQ, which AMD's Zen 3 has without AVX-512. x/sys/cpu reports
// the VPCLMULQDQ bit only beside AVX-512, so have256 reads CPUID itself.
var (
	have512  = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VPCLMULQDQ && cpu.X86.HasPCLMULQDQ
	have256  = cpu.X86.HasAVX2 && cpu.X86.HasPCLMULQDQ && hasVPCLMULQDQ()
	haveFold = have512 || have256

	// haveShort4 reports whether short4 may run (SSE4.2).
	haveShort4 = cpu.X86.HasSSE42
)

// hasVPCLMULQDQ reports CPUID leaf 7's VPCLMULQDQ bit (ECX bit 10).
func hasVPCLMULQDQ() bool {
	if maxID, _, _, _ := cpuid(0, 0); maxID < 7 {
		return false
	}
	_, _, ecx, _ := cpuid(7, 0)
	return ecx&(1<<10) != 0
}

// foldMin is the shortest input fold takes. Below it hash/crc32's SSE4.2
// code is as fast or faster (BenchmarkUpdate: crossover near 256 bytes on
// the development machines, with either width).
const foldMin = 256

// fold returns the CRC-32C state (not inverted) of crc followed by p.
// len(p) must be a multiple of 16 and at least 64.
func fold(crc uint32, p []byte) uint32 {
	if have512 {
		return fold512(crc, p)
	}
	return fold256(crc, p)
}

// fold4 is fold of four inputs of n bytes each at once: crc holds their
// states before and after. n must be a multiple of 16 and at least 64.
func fold4(crc *[4]uint32, p0, p1, p2, p3 *byte, n int) {
	if have512 {
		fold4x512(crc, p0, p1, p2, p3, n)
		return
	}
	fold4x256(crc, p0, p1, p2, p3, n)
}

// folds lists the widths this processor can run, for the tests.
func folds() []foldImpl {
	var l []foldImpl
	if have512 {
		l = append(l, foldImpl{"512", fold512, fold4x512})
	}
	if have256 {
		l = append(l, foldImpl{"256", fold256, fold4x256})
	}
	return l
}

//go:noescape
func fold512(crc uint32, p []byte) uint32

//go:noescape
func fold4x512(crc *[4]uint32, p0, p1, p2, p3 *byte, n int)

//go:noescape
func fold256(crc uint32, p []byte) uint32

//go:noescape
func fold4x256(crc *[4]uint32, p0, p1, p2, p3 *byte, n int)

// short4 continues the states (not inverted) in crc over four inputs of n
// bytes each, their CRC32 instructions interleaved.
//
//go:noescape
func short4(crc *[4]uint32, p0, p1, p2, p3 *byte, n int)

// cpuid runs the CPUID instruction.
func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
