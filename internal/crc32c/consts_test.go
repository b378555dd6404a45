package crc32c

import (
	"math/bits"
	"testing"
)

// The fold's constants, derived. For a bit-reflected CRC with polynomial
// P (33 bits, x^32 set), folding a 64-bit quadword forward by n bits
// multiplies it by x^n mod P: the constant is that remainder bit-reversed
// over 32 bits and shifted left one (the reflected product of two 64-bit
// values lands one bit off). The Barrett step takes P and
// mu = floor(x^64 / P), both bit-reversed over 33 bits.

// xnMod returns x^n mod p, p a 33-bit polynomial in normal form.
func xnMod(n int, p uint64) uint64 {
	r := uint64(1)
	for range n {
		r <<= 1
		if r&(1<<32) != 0 {
			r ^= p
		}
	}
	return r
}

// foldConst returns the constant that folds a quadword forward by n bits.
func foldConst(n int, p uint64) uint64 {
	return uint64(bits.Reverse32(uint32(xnMod(n, p)))) << 1
}

// barrettMu returns floor(x^64 / p), bit-reversed over 33 bits.
func barrettMu(p uint64) uint64 {
	// Long division of x^64 by p (degree 32): the quotient has degree 32.
	var rem [65]bool
	rem[64] = true
	var q uint64
	for i := 64; i >= 32; i-- {
		if !rem[i] {
			continue
		}
		q |= 1 << (i - 32)
		for j := 0; j <= 32; j++ {
			if p&(1<<j) != 0 {
				rem[i-32+j] = !rem[i-32+j]
			}
		}
	}
	return reflect33(q)
}

func reflect33(v uint64) uint64 { return bits.Reverse64(v) >> (64 - 33) }

type constants struct{ k1, k2, k3, k4, k5, p, mu uint64 }

func derive(p uint64) constants {
	return constants{
		k1: foldConst(4*128+32, p), k2: foldConst(4*128-32, p),
		k3: foldConst(128+32, p), k4: foldConst(128-32, p),
		k5: foldConst(64, p),
		p:  reflect33(p), mu: barrettMu(p),
	}
}

func TestConstantsDerived(t *testing.T) {
	// The derivation gives the IEEE polynomial's published constants (the
	// Intel paper's, in Linux's crc32-pclmul and Go's hash/crc32)...
	ieee := constants{k1: 0x154442bd4, k2: 0x1c6e41596, k3: 0x1751997d0, k4: 0x0ccaa009e,
		k5: 0x163cd6124, p: 0x1db710641, mu: 0x1f7011641}
	if got := derive(0x104C11DB7); got != ieee {
		t.Errorf("IEEE: derived %#x, published %#x", got, ieee)
	}
	// ... and, for Castagnoli, the ones in crc32c_amd64.s.
	castagnoli := constants{k1: 0x740eef02, k2: 0x9e4addf8, k3: 0xf20c0dfe, k4: 0x14cd00bd6,
		k5: 0xdd45aab8, p: 0x105ec76f1, mu: 0xdea713f1}
	if got := derive(0x11EDC6F41); got != castagnoli {
		t.Errorf("Castagnoli: derived %#x, in the assembly %#x", got, castagnoli)
	}
}
