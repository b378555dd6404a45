#include "textflag.h"

// The fold's constants for the bit-reflected CRC-32C polynomial
// (0x1EDC6F41, reflected 0x82F63B78); consts_test.go derives each one.
//
// k1k2: x^(4*128+32) and x^(4*128-32) mod P, reflected, shifted left
// one: a 128-bit lane folded forward by 512 bits (the low quadword by k1,
// the high by k2).
DATA k1k2<>+0(SB)/8, $0x740eef02
DATA k1k2<>+8(SB)/8, $0x9e4addf8
GLOBL k1k2<>(SB), RODATA|NOPTR, $16

// k3k4: the same for 128 bits (x^(128+32), x^(128-32)).
DATA k3k4<>+0(SB)/8, $0xf20c0dfe
DATA k3k4<>+8(SB)/8, $0x14cd00bd6
GLOBL k3k4<>(SB), RODATA|NOPTR, $16

// k5: x^64 mod P, for 96 bits to 64.
DATA k5<>+0(SB)/8, $0xdd45aab8
GLOBL k5<>(SB), RODATA|NOPTR, $8

// pmu: P itself (33 bits, reflected) and mu = floor(x^64 / P) reflected,
// for the Barrett reduction of 64 bits to the 32-bit CRC.
DATA pmu<>+0(SB)/8, $0x105ec76f1
DATA pmu<>+8(SB)/8, $0xdea713f1
GLOBL pmu<>(SB), RODATA|NOPTR, $16

// FOLD128 moves X1 128 bits forward with the constants in X0 (k3k4) and
// takes in next: X1 = X1.lo*k3 ^ X1.hi*k4 ^ next. It uses X5.
#define FOLD128(next) \
	VPCLMULQDQ $0x11, X0, X1, X5 \
	VPCLMULQDQ $0x00, X0, X1, X1 \
	VPXOR      X5, X1, X1        \
	VPXOR      next, X1, X1

// LANES512 folds the four 128-bit lanes of Z1 into X1, leaving k3k4 in
// X0 for the 16-byte folds after it. It uses X2 to X5.
#define LANES512 \
	VEXTRACTI32X4 $1, Z1, X2     \
	VEXTRACTI32X4 $2, Z1, X3     \
	VEXTRACTI32X4 $3, Z1, X4     \
	VMOVDQU       k3k4<>(SB), X0 \
	FOLD128(X2)                  \
	FOLD128(X3)                  \
	FOLD128(X4)

// REDUCE128 reduces X1 (with k3k4 in X0) to the 32-bit CRC state in AX.
// With X3 holding the low 32 bits of each quadword: 128 bits to 96 (the
// low quadword times k4, onto the high one), 96 to 64 (the low 32 bits
// times k5, onto the rest), then Barrett: R ^ ((R mod x^32) * mu mod
// x^32) * P, whose bits 32 to 63 are the CRC. It uses X0, X2 and X3.
#define REDUCE128 \
	VPCMPEQB      X3, X3, X3        \
	VPSRLQ        $32, X3, X3       \
	VPCLMULQDQ    $0x01, X1, X0, X2 \
	VPSRLDQ       $8, X1, X1        \
	VPXOR         X2, X1, X1        \
	VPSRLDQ       $4, X1, X2        \
	VPAND         X3, X1, X1        \
	VMOVQ         k5<>(SB), X0      \
	VPCLMULQDQ    $0x00, X0, X1, X1 \
	VPXOR         X2, X1, X1        \
	VMOVDQU       pmu<>(SB), X0     \
	VPAND         X3, X1, X2        \
	VPCLMULQDQ    $0x10, X0, X2, X2 \
	VPAND         X3, X2, X2        \
	VPCLMULQDQ    $0x00, X0, X2, X2 \
	VPXOR         X1, X2, X2        \
	VPEXTRD       $1, X2, AX

// REM16 folds the 16-byte blocks left at ptr (BX bytes, a multiple of
// 16) into X1, k3k4 in X0. It uses X2 and X5 and moves ptr.
#define REM16(ptr, label, done) \
label:                      \
	CMPQ    BX, $16      \
	JB      done         \
	VMOVDQU (ptr), X2    \
	FOLD128(X2)          \
	ADDQ    $16, ptr     \
	SUBQ    $16, BX      \
	JMP     label        \
done:

// func fold512(crc uint32, p []byte) uint32
//
// Operand order is Go's: VPCLMULQDQ $imm, b, a, dst multiplies quadword
// imm&1 of a by quadword imm>>4&1 of b.
TEXT ·fold512(SB), NOSPLIT, $0-36
	MOVL crc+0(FP), AX
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX

	// Z1: the first 64 bytes with the state XORed into the lowest 32
	// bits (VMOVD clears the rest of Z10).
	VMOVD           AX, X10
	VMOVDQU64       (SI), Z1
	VPXORQ          Z10, Z1, Z1
	ADDQ            $64, SI
	SUBQ            $64, CX
	VBROADCASTI32X4 k1k2<>(SB), Z0

	// Each 64 bytes: every lane of Z1 moves 512 bits forward (two
	// carry-less products) and takes in the next 64 bytes.
	PCALIGN $16
loop64:
	CMPQ       CX, $64
	JB         lanes
	VMOVDQU64  (SI), Z11
	VPCLMULQDQ $0x11, Z0, Z1, Z5
	VPCLMULQDQ $0x00, Z0, Z1, Z1
	VPTERNLOGD $0x96, Z11, Z5, Z1 // Z1 ^= Z5 ^ Z11
	ADDQ       $64, SI
	SUBQ       $64, CX
	JMP        loop64

lanes:
	// The four lanes into X1: each folded 128 bits onto the next.
	LANES512

	// The remaining 16-byte blocks, one fold each; then 128 bits to 96,
	// to 64, and Barrett to the 32-bit CRC (see REDUCE128).
	MOVQ CX, BX
	REM16(SI, rem16, reduce)
	REDUCE128

	VZEROUPPER
	MOVL AX, ret+32(FP)
	RET

// FIRST64 loads the first 64 bytes at ptr into z with the state at
// off(DX) XORed into the lowest 32 bits (VMOVD clears the rest of Z10).
#define FIRST64(off, ptr, z) \
	VMOVD     off(DX), X10 \
	VMOVDQU64 (ptr), z     \
	VPXORQ    Z10, z, z

// func fold4x512(crc *[4]uint32, p0, p1, p2, p3 *byte, n int)
//
// fold512 of four inputs of n bytes each (n a multiple of 16, at least 64)
// in one loop, the states in and out through crc. The loads of the four
// inputs interleave, so that their cache misses overlap (see Update4).
TEXT ·fold4x512(SB), NOSPLIT, $0-48
	MOVQ crc+0(FP), DX
	MOVQ p0+8(FP), SI
	MOVQ p1+16(FP), DI
	MOVQ p2+24(FP), R8
	MOVQ p3+32(FP), R9
	MOVQ n+40(FP), CX

	// Z21 to Z24: the first 64 bytes of each input with its state XORed
	// into the lowest 32 bits.
	FIRST64(0, SI, Z21)
	FIRST64(4, DI, Z22)
	FIRST64(8, R8, Z23)
	FIRST64(12, R9, Z24)
	ADDQ      $64, SI
	ADDQ      $64, DI
	ADDQ      $64, R8
	ADDQ      $64, R9
	SUBQ      $64, CX
	VBROADCASTI32X4 k1k2<>(SB), Z20

	PCALIGN $16
loop4:
	CMPQ       CX, $64
	JB         tails
	VMOVDQU64  (SI), Z11
	VMOVDQU64  (DI), Z12
	VMOVDQU64  (R8), Z13
	VMOVDQU64  (R9), Z14
	VPCLMULQDQ $0x11, Z20, Z21, Z15
	VPCLMULQDQ $0x00, Z20, Z21, Z21
	VPCLMULQDQ $0x11, Z20, Z22, Z16
	VPCLMULQDQ $0x00, Z20, Z22, Z22
	VPCLMULQDQ $0x11, Z20, Z23, Z17
	VPCLMULQDQ $0x00, Z20, Z23, Z23
	VPCLMULQDQ $0x11, Z20, Z24, Z18
	VPCLMULQDQ $0x00, Z20, Z24, Z24
	VPTERNLOGD $0x96, Z11, Z15, Z21
	VPTERNLOGD $0x96, Z12, Z16, Z22
	VPTERNLOGD $0x96, Z13, Z17, Z23
	VPTERNLOGD $0x96, Z14, Z18, Z24
	ADDQ       $64, SI
	ADDQ       $64, DI
	ADDQ       $64, R8
	ADDQ       $64, R9
	SUBQ       $64, CX
	JMP        loop4

tails:
	// Each input in turn: its lanes into X1, its remaining 16-byte
	// blocks (CX bytes, the same for all), the reduction.
	VMOVDQA64 Z21, Z1
	LANES512
	MOVQ      CX, BX
	REM16(SI, rem16_0, red_0)
	REDUCE128
	MOVL    AX, 0(DX)

	VMOVDQA64 Z22, Z1
	LANES512
	MOVQ      CX, BX
	REM16(DI, rem16_1, red_1)
	REDUCE128
	MOVL    AX, 4(DX)

	VMOVDQA64 Z23, Z1
	LANES512
	MOVQ      CX, BX
	REM16(R8, rem16_2, red_2)
	REDUCE128
	MOVL    AX, 8(DX)

	VMOVDQA64 Z24, Z1
	LANES512
	MOVQ      CX, BX
	REM16(R9, rem16_3, red_3)
	REDUCE128
	MOVL    AX, 12(DX)

	VZEROUPPER
	RET

// The same two functions on 256-bit registers, for processors with the
// VEX-encoded VPCLMULQDQ and AVX2 but no AVX-512 (AMD Zen 3, Intel's
// Alder Lake cores): each 64-byte block is two YMM registers of two
// 128-bit lanes each, folded by the same 512 bits with the same k1k2, and
// the four lanes meet in X1 as in fold512. AVX2 has no three-way XOR, and
// sixteen vector registers instead of 32: the data is XORed in straight
// from memory (the load still issues ahead, out of order).

// LANES256 folds the four 128-bit lanes of Y1 (the first two) and Y6 (the
// last two) into X1, leaving k3k4 in X0. It uses X2 to X5.
#define LANES256 \
	VEXTRACTI128 $1, Y1, X2     \
	VMOVDQA      X6, X3         \
	VEXTRACTI128 $1, Y6, X4     \
	VMOVDQU      k3k4<>(SB), X0 \
	FOLD128(X2)                 \
	FOLD128(X3)                 \
	FOLD128(X4)

// FOLD64Y moves the 64-byte block in lo and hi 512 bits forward (k1k2 in
// Y0) and XORs in the 64 bytes at ptr. It uses t1 and t2.
#define FOLD64Y(ptr, lo, hi, t1, t2) \
	VPCLMULQDQ $0x11, Y0, lo, t1 \
	VPCLMULQDQ $0x00, Y0, lo, lo \
	VPCLMULQDQ $0x11, Y0, hi, t2 \
	VPCLMULQDQ $0x00, Y0, hi, hi \
	VPXOR      (ptr), t1, t1     \
	VPXOR      32(ptr), t2, t2   \
	VPXOR      t1, lo, lo        \
	VPXOR      t2, hi, hi

// FIRST64Y loads the first 64 bytes at ptr into lo and hi with the state
// at off(DX) XORed into the lowest 32 bits (VMOVD clears the rest of Y1).
#define FIRST64Y(off, ptr, lo, hi) \
	VMOVD   off(DX), X1 \
	VMOVDQU (ptr), lo   \
	VMOVDQU 32(ptr), hi \
	VPXOR   Y1, lo, lo

// func fold256(crc uint32, p []byte) uint32
TEXT ·fold256(SB), NOSPLIT, $0-36
	MOVL crc+0(FP), AX
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX

	// Y1 and Y6: the first 64 bytes, the state XORed into the lowest 32
	// bits (VMOVD clears the rest of Y1).
	VMOVD          AX, X1
	VPXOR          (SI), Y1, Y1
	VMOVDQU        32(SI), Y6
	ADDQ           $64, SI
	SUBQ           $64, CX
	VBROADCASTI128 k1k2<>(SB), Y0

	PCALIGN $16
loop64:
	CMPQ CX, $64
	JB   lanes
	FOLD64Y(SI, Y1, Y6, Y5, Y7)
	ADDQ $64, SI
	SUBQ $64, CX
	JMP  loop64

lanes:
	LANES256
	MOVQ CX, BX
	REM16(SI, rem16, reduce)
	REDUCE128

	VZEROUPPER
	MOVL AX, ret+32(FP)
	RET

// func fold4x256(crc *[4]uint32, p0, p1, p2, p3 *byte, n int)
TEXT ·fold4x256(SB), NOSPLIT, $0-48
	MOVQ crc+0(FP), DX
	MOVQ p0+8(FP), SI
	MOVQ p1+16(FP), DI
	MOVQ p2+24(FP), R8
	MOVQ p3+32(FP), R9
	MOVQ n+40(FP), CX

	// Y8 to Y15: the first 64 bytes of each input (two registers each)
	// with its state XORed into the lowest 32 bits.
	FIRST64Y(0, SI, Y8, Y9)
	FIRST64Y(4, DI, Y10, Y11)
	FIRST64Y(8, R8, Y12, Y13)
	FIRST64Y(12, R9, Y14, Y15)
	ADDQ           $64, SI
	ADDQ           $64, DI
	ADDQ           $64, R8
	ADDQ           $64, R9
	SUBQ           $64, CX
	VBROADCASTI128 k1k2<>(SB), Y0

	PCALIGN $16
loop4:
	CMPQ CX, $64
	JB   tails
	FOLD64Y(SI, Y8, Y9, Y1, Y2)
	FOLD64Y(DI, Y10, Y11, Y3, Y4)
	FOLD64Y(R8, Y12, Y13, Y5, Y6)
	FOLD64Y(R9, Y14, Y15, Y7, Y1)
	ADDQ $64, SI
	ADDQ $64, DI
	ADDQ $64, R8
	ADDQ $64, R9
	SUBQ $64, CX
	JMP  loop4

tails:
	// Each input in turn: its lanes into X1, its remaining 16-byte blocks
	// (CX bytes, the same for all), the reduction.
	VMOVDQA Y8, Y1
	VMOVDQA Y9, Y6
	LANES256
	MOVQ    CX, BX
	REM16(SI, rem16_0, red_0)
	REDUCE128
	MOVL    AX, 0(DX)

	VMOVDQA Y10, Y1
	VMOVDQA Y11, Y6
	LANES256
	MOVQ    CX, BX
	REM16(DI, rem16_1, red_1)
	REDUCE128
	MOVL    AX, 4(DX)

	VMOVDQA Y12, Y1
	VMOVDQA Y13, Y6
	LANES256
	MOVQ    CX, BX
	REM16(R8, rem16_2, red_2)
	REDUCE128
	MOVL    AX, 8(DX)

	VMOVDQA Y14, Y1
	VMOVDQA Y15, Y6
	LANES256
	MOVQ    CX, BX
	REM16(R9, rem16_3, red_3)
	REDUCE128
	MOVL    AX, 12(DX)

	VZEROUPPER
	RET

// func cpuid(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func short4(crc *[4]uint32, p0, p1, p2, p3 *byte, n int)
//
// CRC-32C states (not inverted) of four inputs of n bytes each, with the
// SSE4.2 CRC32 instruction, the four dependency chains interleaved: one
// chain waits three cycles per 8 bytes, four keep the unit busy.
TEXT ·short4(SB), NOSPLIT, $0-48
	MOVQ crc+0(FP), DX
	MOVQ p0+8(FP), SI
	MOVQ p1+16(FP), DI
	MOVQ p2+24(FP), R8
	MOVQ p3+32(FP), R9
	MOVQ n+40(FP), CX
	MOVL 0(DX), AX
	MOVL 4(DX), BX
	MOVL 8(DX), R10
	MOVL 12(DX), R11

loop8:
	CMPQ   CX, $8
	JB     loop1
	CRC32Q (SI), AX
	CRC32Q (DI), BX
	CRC32Q (R8), R10
	CRC32Q (R9), R11
	ADDQ   $8, SI
	ADDQ   $8, DI
	ADDQ   $8, R8
	ADDQ   $8, R9
	SUBQ   $8, CX
	JMP    loop8

loop1:
	TESTQ  CX, CX
	JZ     done
	CRC32B (SI), AX
	CRC32B (DI), BX
	CRC32B (R8), R10
	CRC32B (R9), R11
	INCQ   SI
	INCQ   DI
	INCQ   R8
	INCQ   R9
	DECQ   CX
	JMP    loop1

done:
	MOVL AX, 0(DX)
	MOVL BX, 4(DX)
	MOVL R10, 8(DX)
	MOVL R11, 12(DX)
	RET
