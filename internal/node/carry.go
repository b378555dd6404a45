package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"cairn/blocks"
	"cairn/internal/peer"
	"cairn/volume"
)

// Carried FLUSHes: a volume's FLUSH on a cluster used to cost two round
// trips in a row: the pieces of its dirty blocks to their holders, and,
// once every holder had replied, the journal record with a sync to the
// journal holders (AppendSync). On a few nodes the two sets are mostly
// the same nodes. So, for a small FLUSH (volume.carryMax chunks), a piece
// whose holder also holds a copy of the volume's journal is held back
// here (its PutPiece returns at once) and goes with the record in one
// PutAppendSync request: the node puts the pieces, appends the record,
// syncs, and answers once, with each piece's outcome. Pieces for other
// nodes go as before. finish then puts whatever was not carried (the
// journal copy was down, or the request failed) or was refused, through
// the piece's slot, which falls back to other nodes as any put does.
//
// What a FLUSH promises does not change: it returns only once every
// piece and the record are durable where they must be. What changes is
// the order on the wire: a record may now reach a node before a piece of
// its blocks reaches another node. Until the FLUSH returns, nothing is
// promised, and a record whose piece never landed (the FLUSH failed,
// then the writer died) makes that chunk read as unavailable rather than
// as its older data, the same as a piece put but lost with its node's
// page cache before a sync (see volume.flushLocked).

// carryKey marks a context whose pieces may be carried (see carryFrom).
type carryKey struct{}

// carry is one FLUSH's held-back pieces, per journal node.
type carry struct {
	nodes  []string // the journal's remote nodes when the FLUSH began
	mu     sync.Mutex
	closed bool
	held   map[string]*carried
}

// carried is what one node's PutAppendSync carries.
type carried struct {
	pieces []peer.Piece
	slots  []*slot // the slot each piece was put through
	bytes  int
	sent   bool    // taken by an AppendSync
	errs   []error // per piece once sent; nil entries stored
	err    error   // the whole request's error (then no piece is known stored)
}

// carryFrom returns the carry of ctx, if any.
func carryFrom(ctx context.Context) *carry {
	cr, _ := ctx.Value(carryKey{}).(*carry)
	return cr
}

// hold keeps a copy of a piece for node id's PutAppendSync, if id is one
// of the journal's nodes and the request has room; it reports whether it
// did (else the caller puts the piece now).
func (cr *carry) hold(s *slot, id string, key blocks.Addr, data []byte) bool {
	if !slices.Contains(cr.nodes, id) || len(data) > peer.CarryPiece {
		return false
	}
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.closed {
		return false
	}
	h := cr.held[id]
	if h == nil {
		h = &carried{}
		cr.held[id] = h
	}
	if h.sent || len(h.pieces) >= peer.CarryPieces || h.bytes+len(data) > peer.CarryBytes {
		return false
	}
	h.pieces = append(h.pieces, peer.Piece{Key: key, Data: slices.Clone(data)})
	h.slots = append(h.slots, s)
	h.bytes += len(data)
	return true
}

// take returns the pieces held for node id and marks them sent (nil when
// none); the caller reports how it went with done.
func (cr *carry) take(id string) *carried {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	h := cr.held[id]
	if h == nil || h.sent || len(h.pieces) == 0 {
		return nil
	}
	h.sent = true
	return h
}

// done records the outcome of h's PutAppendSync: errs per piece when the
// request succeeded, else err for all of them.
func (h *carried) done(errs []error, err error) {
	if err == nil && len(errs) != len(h.pieces) {
		err = fmt.Errorf("node: %d outcomes for %d carried pieces: %w", len(errs), len(h.pieces), blocks.ErrUnavailable)
	}
	h.errs, h.err = errs, err
}

// failed reports whether piece i was not stored by its carrying request
// (or never sent).
func (h *carried) failed(i int) bool {
	return !h.sent || h.err != nil || h.errs[i] != nil
}

// finish puts, through their slots, the pieces that were not carried or
// failed, in parallel, and returns the first error among those puts. No
// piece is held after it returns.
func (cr *carry) finish(ctx context.Context) error {
	cr.mu.Lock()
	cr.closed = true
	var redo []func() error
	for _, h := range cr.held {
		for i := range h.pieces {
			if !h.failed(i) {
				continue
			}
			s, p := h.slots[i], h.pieces[i]
			redo = append(redo, func() error { return s.putPiece(ctx, p.Key, p.Data) })
		}
	}
	cr.held = nil
	cr.mu.Unlock()
	if len(redo) == 0 {
		return nil
	}
	errs := make([]error, len(redo))
	var wg sync.WaitGroup
	for i, fn := range redo {
		wg.Go(func() { errs[i] = fn() })
	}
	wg.Wait()
	return errors.Join(errs...)
}

var _ volume.FlushCarrier = (*journalSlot)(nil)

// CarryFlush implements volume.FlushCarrier for the journal's group (any
// of its slots will do): pieces put under the returned context on a
// remote node that holds a copy of the journal go with that copy's
// AppendSync.
func (s *journalSlot) CarryFlush(ctx context.Context) (context.Context, func(context.Context) error) {
	g := s.g
	cr := &carry{held: map[string]*carried{}}
	g.mu.Lock()
	for _, o := range g.slots {
		if !o.down && o.node != g.c.self.ID {
			cr.nodes = append(cr.nodes, o.node)
		}
	}
	g.mu.Unlock()
	return context.WithValue(ctx, carryKey{}, cr), cr.finish
}
