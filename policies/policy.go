// Package policies reads, validates and describes per-volume storage
// policies written in TOML. It depends on nothing else of Cairn's.
package policies

import "errors"

// ErrInvalid marks every policy error (parse or check). The error text names
// the file and line and says what to write instead.
var ErrInvalid = errors.New("policies: invalid policy")

// Size is a byte count written with a unit in TOML ("4KiB", "1MiB", "512B").
type Size int64

// Compression names a compression codec.
type Compression string

// Codecs.
const (
	CompressionNone Compression = "none"
	CompressionLZ4  Compression = "lz4"
)

// Cipher names an AEAD cipher.
type Cipher string

// Ciphers.
const (
	CipherNone    Cipher = "none"
	CipherAES256  Cipher = "aes-256-gcm"
	CipherXChaCha Cipher = "xchacha20-poly1305"
)

// Spread says how the pieces of a block must be spread.
type Spread string

// Spreads.
const (
	SpreadNone Spread = "none" // pieces may share a node (one-node clusters, tests)
	SpreadNode Spread = "node" // every piece on a distinct node
	SpreadZone Spread = "zone" // pieces spread across zones as evenly as possible
)

// Redundancy is either Replicas copies, or Data+Parity erasure-coded pieces.
// Exactly one form is set in a valid policy.
type Redundancy struct {
	Replicas int // n full copies (0 when erasure-coded)
	Data     int // k data pieces (0 when replicated)
	Parity   int // m parity pieces
}

// Pieces returns how many pieces each block is stored as.
func (r Redundancy) Pieces() int {
	if r.Replicas > 0 {
		return r.Replicas
	}
	return r.Data + r.Parity
}

// Tolerates returns how many pieces may be lost without losing the block.
func (r Redundancy) Tolerates() int {
	if r.Replicas > 0 {
		return r.Replicas - 1
	}
	return r.Parity
}

// Policy is a typed, validated volume policy.
type Policy struct {
	Name        string
	BlockSize   Size // chunk size: 512 B .. 4 MiB, a power of two
	Compression Compression
	Dedup       bool
	Redundancy  Redundancy
	Cipher      Cipher
	Keep        int // chunk-map versions kept for rollback
	Spread      Spread
}
