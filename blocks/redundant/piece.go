package redundant

import (
	"encoding/binary"
	"errors"
	"fmt"

	"cairn/blocks"
	"cairn/internal/crc32c"
)

// Piece format, version 1. Every piece a Store writes to a holder is a
// fixed-size header followed by the payload (a whole copy of the block for
// replicas, one erasure-coded shard otherwise). Integers are big-endian.
//
//	offset size field
//	     0    4 magic "crnp"
//	     4    1 version (1)
//	     5    1 kind: 1 = replica, 2 = erasure-coded shard
//	     6    1 piece index i (the piece is stored under blocks.PieceKey(addr, i))
//	     7    1 k: data pieces (1 for replicas)
//	     8    1 m: parity pieces (replicas-1 for replicas)
//	     9    1 placement tag (Options.Tag): not interpreted here; a cluster
//	            writes the spread its volume's policy asked for (0 node,
//	            1 zone, 2 none), so that anti-entropy ranks the block's
//	            holders as its writers did (zero in pieces written before
//	            the tag: those were ranked as spread "node")
//	    10    2 reserved, zero
//	    12    4 original block length in bytes
//	    16   32 block address (blocks.Sum of the whole block)
//	    48    4 CRC-32C (Castagnoli) of the payload
//	    52    4 CRC-32C of header bytes 0..51
//	    56    - payload: replicas: the block; shards: ceil(length/k) bytes
//	            (at least 1), the last data shard zero-padded
//
// The header has its own checksum so that anti-entropy and scrub can trace a
// piece back to its block (and rebuild it) even when its payload has rotted.
// The payload checksum lets a reader tell which shard is bad before it
// reconstructs; the block address is still verified on the rebuilt block.
const (
	// HeaderSize is the size of a piece header.
	HeaderSize = 56

	pieceMagic   = "crnp"
	pieceVersion = 1
	kindReplica  = 1
	kindShard    = 2
)

// errBadHeader marks a piece whose header does not decode.
var errBadHeader = errors.New("redundant: bad piece header")

// header is the decoded form of a piece header.
type header struct {
	kind   uint8
	index  uint8
	k, m   uint8
	tag    uint8 // placement tag (Options.Tag)
	length uint32
	addr   blocks.Addr
	crc    uint32 // payload checksum
}

// put writes h into b[:HeaderSize]; h.crc must be the payload's checksum.
func (h *header) put(b []byte) {
	_ = b[HeaderSize-1]
	copy(b[0:4], pieceMagic)
	b[4] = pieceVersion
	b[5] = h.kind
	b[6] = h.index
	b[7] = h.k
	b[8] = h.m
	b[9], b[10], b[11] = h.tag, 0, 0
	binary.BigEndian.PutUint32(b[12:16], h.length)
	copy(b[16:48], h.addr[:])
	binary.BigEndian.PutUint32(b[48:52], h.crc)
	binary.BigEndian.PutUint32(b[52:56], crc32c.Checksum(b[:52]))
}

// parseHeader decodes the header of piece p. It checks the magic, version,
// kind and the header checksum, not the payload: see checkPayload.
func parseHeader(p []byte) (header, error) { return decodeHeader(p, true) }

// decodeHeader is parseHeader, without the header's checksum unless sum:
// a piece whose every byte a trusted holder's own checksum just covered
// (see Store.trusted) needs no second one over its header. The CRC-32C
// of 52 bytes, through hash/crc32, was one of three short checksums per
// 4 KiB piece of a large read.
func decodeHeader(p []byte, sum bool) (header, error) {
	var h header
	if len(p) < HeaderSize {
		return h, fmt.Errorf("%w: %d bytes, shorter than a header", errBadHeader, len(p))
	}
	if string(p[0:4]) != pieceMagic {
		return h, fmt.Errorf("%w: bad magic %q", errBadHeader, p[0:4])
	}
	if sum {
		if got, want := binary.BigEndian.Uint32(p[52:56]), crc32c.Checksum(p[:52]); got != want {
			return h, fmt.Errorf("%w: header checksum %08x, want %08x", errBadHeader, got, want)
		}
	}
	if p[4] != pieceVersion {
		return h, fmt.Errorf("%w: unknown version %d", errBadHeader, p[4])
	}
	h.kind, h.index, h.k, h.m, h.tag = p[5], p[6], p[7], p[8], p[9]
	if h.kind != kindReplica && h.kind != kindShard {
		return h, fmt.Errorf("%w: unknown kind %d", errBadHeader, h.kind)
	}
	if h.k == 0 {
		return h, fmt.Errorf("%w: zero data pieces", errBadHeader)
	}
	h.length = binary.BigEndian.Uint32(p[12:16])
	copy(h.addr[:], p[16:48])
	h.crc = binary.BigEndian.Uint32(p[48:52])
	return h, nil
}

// payloadLen returns the payload size a piece with header h must have.
func (h *header) payloadLen() int {
	if h.kind == kindReplica {
		return int(h.length)
	}
	return shardSize(int(h.length), int(h.k))
}

// checkPayload reports whether p's payload has the length and checksum its
// header h promises.
func checkPayload(h header, p []byte) error {
	if err := checkPayloadLen(h, p); err != nil {
		return err
	}
	payload := p[HeaderSize:]
	if got := crc32c.Checksum(payload); got != h.crc {
		return fmt.Errorf("redundant: piece payload checksum %08x, want %08x", got, h.crc)
	}
	return nil
}

// checkPayloadLen reports whether p's payload has the length its header h
// promises (checkPayload without the checksum).
func checkPayloadLen(h header, p []byte) error {
	if n := len(p) - HeaderSize; n != h.payloadLen() {
		return fmt.Errorf("redundant: piece payload of %d bytes, header says %d", n, h.payloadLen())
	}
	return nil
}

// shardSize is the size of each of the k shards of an n-byte block: at
// least 1, because reedsolomon refuses empty shards.
func shardSize(n, k int) int {
	s := (n + k - 1) / k
	if s == 0 {
		s = 1
	}
	return s
}

// PieceHeader decodes the header at the start of piece p (at least
// HeaderSize bytes; the payload need not follow) and returns the address
// of the block the piece belongs to and its index. It verifies the
// header's own checksum, not the payload's (ParsePiece does both): enough
// to learn which block a piece is of, as a garbage sweep does. Errors wrap
// blocks.ErrCorrupt; it never panics, whatever p holds.
func PieceHeader(p []byte) (addr blocks.Addr, index int, err error) {
	h, err := parseHeader(p)
	if err != nil {
		return addr, 0, fmt.Errorf("%w: %w", blocks.ErrCorrupt, err)
	}
	return h.addr, int(h.index), nil
}

// ParsePiece decodes piece p (header and payload, as a holder returns it)
// and returns the address of the block it belongs to and its piece index.
// It verifies the header and payload checksums; errors wrap
// blocks.ErrCorrupt. It never panics, whatever p holds. Anti-entropy uses it
// to find which block a held piece belongs to.
func ParsePiece(p []byte) (addr blocks.Addr, index int, err error) {
	h, err := parseHeader(p)
	if err != nil {
		return addr, 0, fmt.Errorf("%w: %w", blocks.ErrCorrupt, err)
	}
	if err := checkPayload(h, p); err != nil {
		return addr, 0, fmt.Errorf("%w: %w", blocks.ErrCorrupt, err)
	}
	return h.addr, int(h.index), nil
}
