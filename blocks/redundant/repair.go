package redundant

import (
	"context"
	"errors"
	"fmt"

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
	Tag      int // the placement tag its writer set (Options.Tag)
}

// PieceLayout decodes the header of piece p (without checking its
// payload). Errors wrap blocks.ErrCorrupt.
func PieceLayout(p []byte) (Layout, error) {
	h, err := parseHeader(p)
	if err != nil {
		return Layout{}, err
	}
	l := Layout{Addr: h.addr, Index: int(h.index), Tag: int(h.tag)}
	if h.kind == kindReplica {
		l.Replicas = int(h.k) + int(h.m)
	} else {
		l.Data, l.Parity = int(h.k), int(h.m)
	}
	return l, nil
}

// Pieces returns how many pieces the block has: its replicas, or k+m.
func (l Layout) Pieces() int {
	if l.Replicas > 0 {
		return l.Replicas
	}
	return l.Data + l.Parity
}

// deferSyncKey marks a context whose repairs leave their syncs to the
// caller (DeferRepairSyncs).
type deferSyncKey struct{}

// DeferRepairSyncs returns a context under which the repairs of reads and
// of Repair skip the Sync of each rewritten piece's holder. The caller
// takes that on: it syncs every holder the repairs may have written to
// before it relies on them (before it reports the blocks whole, or deletes
// another copy). Anti-entropy checks a whole silo this way: a sync per
// rewritten piece made every holder's silo sync-heavy (zero-filled
// segments, an fdatasync per 4 KiB on a disk the clients share) for
// nothing: a repair a crash loses leaves the block as it was before the
// repair, which the next pass finds again.
func DeferRepairSyncs(ctx context.Context) context.Context {
	return context.WithValue(ctx, deferSyncKey{}, true)
}

// syncDeferred reports whether ctx came from DeferRepairSyncs.
func syncDeferred(ctx context.Context) bool {
	v, _ := ctx.Value(deferSyncKey{}).(bool)
	return v
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

// RepairMissing carries out fixes (see Plan: which holder, by rank, gets
// which piece) from one verified read of the block at addr (a replica,
// local first, or the data shards, as Get reads them): what anti-entropy
// does once it knows what each holder keeps, without reading and hashing
// every piece as Repair does. It does not look for corrupt pieces
// (Repair does). Each rewritten piece's holder is synced unless ctx says
// the caller will (DeferRepairSyncs). It returns how many pieces it
// wrote, and an error only when the block could not be read (as Get's)
// or a fix is out of range; a piece it could not write is logged, as
// Repair does, and not counted.
func (s *Store) RepairMissing(ctx context.Context, addr blocks.Addr, fixes []Fix) (int, error) {
	hs, err := s.placement(addr)
	if err != nil {
		return 0, err
	}
	for _, f := range fixes {
		if f.Holder < 0 || f.Holder >= s.n || f.Piece < 0 || f.Piece >= s.n || f.Bad >= s.n {
			return 0, fmt.Errorf("redundant: repair %v: fix %+v out of range for %d pieces", addr, f, s.n)
		}
	}
	data, _, err := s.readFix(ctx, addr, false, nil, false)
	if err != nil {
		return 0, err
	}
	pieces, err := s.encode(addr, data)
	if err != nil {
		return 0, err
	}
	reasons := make([]error, s.n)
	for _, f := range fixes {
		reasons[f.Holder] = errMissing
	}
	return s.rewrite(ctx, hs, addr, pieces, fixes, reasons), nil
}

// errMissing is RepairMissing's reason for a rewrite, in the logs.
var errMissing = errors.New("redundant: piece missing on its holder")
