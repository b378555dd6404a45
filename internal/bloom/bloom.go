// Package bloom is a Bloom filter over block addresses: the set of
// addresses a cluster's garbage collector marked live, shipped to every
// node, which deletes what the filter does not contain. A false positive
// keeps a piece of garbage until a later collection (each one draws a new
// seed, so it is a different piece each time); a false negative cannot
// happen, which is what makes the filter safe for that use.
//
// # Wire format
//
// Integers big-endian:
//
//	offset size
//	0      4    magic "CBF1"
//	4      1    k: hash functions, 1..32
//	5      8    seed
//	13     8    m: bits, a positive multiple of 64, at most MaxBits
//	21     m/8  the bits, as m/64 big-endian 64-bit words
//
// Bit i of the filter is bit i%64 of word i/64. The i-th probe of an
// address a is (h1 + i*h2) mod m, with h1 and h2 the SplitMix64 finalizer
// of the first and second 8 bytes of a (little-endian) each XORed with
// the seed, h2 made odd.
package bloom

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"cairn/blocks"
)

// MaxBits bounds a filter: 2^32 bits (512 MiB).
const MaxBits = 1 << 32

// headerSize is the encoded size of the fields before the bits.
const headerSize = 21

var magic = [4]byte{'C', 'B', 'F', '1'}

// ErrMalformed is wrapped by Decode's errors.
var ErrMalformed = errors.New("bloom: malformed filter")

// Filter is a Bloom filter of block addresses. Its zero value is not
// usable; make one with New or Decode.
type Filter struct {
	k    int
	seed uint64
	bits []uint64
}

// New returns an empty filter sized for n addresses at bitsPer bits each
// (rounded up to whole words, at least one word, at most MaxBits), with
// the number of hash functions that minimises false positives at that
// size, and the given seed.
func New(n int, bitsPer float64, seed uint64) *Filter {
	m := math.Ceil(max(float64(n), 1) * max(bitsPer, 1))
	m = min(m, MaxBits)
	words := max(int((m+63)/64), 1)
	k := int(math.Round(math.Ln2 * bitsPer))
	k = min(max(k, 1), 32)
	return &Filter{k: k, seed: seed, bits: make([]uint64, words)}
}

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (f *Filter) probes(a blocks.Addr) (h1, h2, m uint64) {
	h1 = mix(binary.LittleEndian.Uint64(a[0:8]) ^ f.seed)
	h2 = mix(binary.LittleEndian.Uint64(a[8:16])^f.seed) | 1
	return h1, h2, uint64(len(f.bits)) * 64
}

// Add adds a to the filter.
func (f *Filter) Add(a blocks.Addr) {
	h1, h2, m := f.probes(a)
	for i := range uint64(f.k) {
		b := (h1 + i*h2) % m
		f.bits[b/64] |= 1 << (b % 64)
	}
}

// Has reports whether a may have been added: true for every address
// added, and for a few others (false positives).
func (f *Filter) Has(a blocks.Addr) bool {
	h1, h2, m := f.probes(a)
	for i := range uint64(f.k) {
		b := (h1 + i*h2) % m
		if f.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}

// Bits returns the filter's size in bits.
func (f *Filter) Bits() int64 { return int64(len(f.bits)) * 64 }

// Encode returns the filter in the wire format.
func (f *Filter) Encode() []byte {
	b := make([]byte, headerSize, headerSize+8*len(f.bits))
	copy(b, magic[:])
	b[4] = byte(f.k)
	binary.BigEndian.PutUint64(b[5:], f.seed)
	binary.BigEndian.PutUint64(b[13:], uint64(len(f.bits))*64)
	for _, w := range f.bits {
		b = binary.BigEndian.AppendUint64(b, w)
	}
	return b
}

// EncodedSize is the length of Encode's result for a filter of m bits.
func EncodedSize(m int64) int64 { return headerSize + m/8 }

// Decode parses a filter in the wire format. It does not retain b.
func Decode(b []byte) (*Filter, error) {
	if len(b) < headerSize || [4]byte(b[:4]) != magic {
		return nil, fmt.Errorf("%w: no header", ErrMalformed)
	}
	k := int(b[4])
	if k < 1 || k > 32 {
		return nil, fmt.Errorf("%w: %d hash functions", ErrMalformed, k)
	}
	m := binary.BigEndian.Uint64(b[13:])
	if m == 0 || m%64 != 0 || m > MaxBits {
		return nil, fmt.Errorf("%w: %d bits", ErrMalformed, m)
	}
	if uint64(len(b)-headerSize) != m/8 {
		return nil, fmt.Errorf("%w: %d bytes of bits for %d bits", ErrMalformed, len(b)-headerSize, m)
	}
	f := &Filter{k: k, seed: binary.BigEndian.Uint64(b[5:]), bits: make([]uint64, m/64)}
	for i := range f.bits {
		f.bits[i] = binary.BigEndian.Uint64(b[headerSize+8*i:])
	}
	return f, nil
}
