#include "textflag.h"

// func copyNT(dst, src unsafe.Pointer, n uintptr)
//
// n is a multiple of 64 and dst 16-byte aligned (CopyNT checks both):
// unaligned 16-byte loads, non-temporal 16-byte stores, then SFENCE so
// that the stores are ordered before whatever the caller does next (a
// lock release publishing the buffer, say).
TEXT ·copyNT(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

loop:
	CMPQ  CX, $64
	JB    done
	MOVOU 0(SI), X0
	MOVOU 16(SI), X1
	MOVOU 32(SI), X2
	MOVOU 48(SI), X3
	MOVNTO X0, 0(DI)
	MOVNTO X1, 16(DI)
	MOVNTO X2, 32(DI)
	MOVNTO X3, 48(DI)
	ADDQ  $64, SI
	ADDQ  $64, DI
	SUBQ  $64, CX
	JMP   loop

done:
	SFENCE
	RET
