package redundant

import (
	"context"

	"cairn/blocks"
)

// Layout is what a piece's header says about its block: the block's
// address, the piece's index, and the redundancy the block was stored with.
type Layout struct {
	Addr     blocks.Addr
	Index    int
	Replicas int // n copies, or 0 for an erasure-coded block
	Data     int // k, for an erasure-coded block
	Parity   int // m, for an erasure-coded block
}

// PieceLayout decodes the header of piece p (without checking its
// payload). Errors wrap blocks.ErrCorrupt.
func PieceLayout(p []byte) (Layout, error) {
	h, err := parseHeader(p)
	if err != nil {
		return Layout{}, err
	}
	l := Layout{Addr: h.addr, Index: int(h.index)}
	if h.kind == kindReplica {
		l.Replicas = int(h.k) + int(h.m)
	} else {
		l.Data, l.Parity = int(h.k), int(h.m)
	}
	return l, nil
}

// Repair reads every piece of the block at addr from its holders (as the
// Holders option places them now), verifies each, and rewrites those that
// are missing or bad. It returns how many pieces it rewrote. Anti-entropy
// runs it after membership changes, so that a block whose holders changed
// gets its pieces back on the holders placement now names.
func (s *Store) Repair(ctx context.Context, addr blocks.Addr) (int, error) {
	_, n, err := s.read(ctx, addr, true, nil)
	return n, err
}
