package peer

import (
	"context"
	"fmt"
	"sync"

	"cairn/blocks"
)

// CarryLimits bound what one [Client.PutAppendSync] carries in a single
// request (PutPieces' limits): at most CarryPieces pieces, each at most
// CarryPiece bytes, CarryBytes in all. Past them it sends the pieces
// apart first, which is correct but gains nothing.
const (
	CarryPieces = maxBatchPieces
	CarryPiece  = maxBatchPiece
	CarryBytes  = maxBatchBytes
)

// PutAppendSync puts pieces on the peer, then appends record seq to log
// and syncs the peer's holder, in one round trip (op 15; see msg.go): a
// volume's FLUSH sends each journal holder the pieces it holds with the
// record, instead of putting them first and waiting for the replies.
//
// When the record was appended and the holder synced it returns nil and
// one outcome per piece: nil for a piece stored and durable there, else
// the error PutPiece would have returned (the caller puts that piece
// elsewhere). Otherwise it returns the error of the whole call (Append's
// or Sync's, wrapped as by AppendSync), and nothing is known of any
// piece. With no pieces it is AppendSync. Against a server that predates
// op 15 (probed once, as for AppendSync), or pieces past the CarryLimits,
// it puts the pieces apart, then calls AppendSync.
func (c *Client) PutAppendSync(ctx context.Context, pieces []Piece, log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte) ([]error, error) {
	if len(rec) > blocks.MaxRecord {
		return nil, c.wrap("put-append-sync", fmt.Errorf("journal record of %d bytes: %w", len(rec), blocks.ErrTooLarge))
	}
	if len(pieces) == 0 {
		return nil, c.AppendSync(ctx, log, epoch, seq, rec)
	}
	if err := c.probe(ctx, opPutAppendSync, &c.putAppendSyncProbed, &c.noPutAppendSync); err != nil {
		return nil, err
	}
	if c.noPutAppendSync.Load() || !carriable(pieces) {
		return c.putThenAppendSync(ctx, pieces, log, epoch, seq, rec)
	}
	// Idempotent: a piece put twice and a record appended twice are
	// harmless (holders ignore both).
	f, _, err := c.exchange(ctx, opPutAppendSync, true, encodePutAppendSync(log, epoch, seq, rec, pieces))
	if err != nil {
		return nil, err
	}
	if f.status == codeBadRequest {
		c.noPutAppendSync.Store(true)
		return c.putThenAppendSync(ctx, pieces, log, epoch, seq, rec)
	}
	if err := replyError(f); err != nil {
		return nil, c.wrap("put-append-sync", err)
	}
	errs, derr := c.putResults(f.payload, len(pieces))
	if derr != nil {
		return nil, c.wrap("put-append-sync", derr)
	}
	return errs, nil
}

// carriable reports whether pieces fit one PutAppendSync request.
func carriable(pieces []Piece) bool {
	if len(pieces) > CarryPieces {
		return false
	}
	total := 0
	for _, p := range pieces {
		if len(p.Data) > CarryPiece {
			return false
		}
		total += len(p.Data)
	}
	return total <= CarryBytes
}

// putThenAppendSync is PutAppendSync in two round trips: the pieces
// (batched, as concurrent PutPiece calls are), then AppendSync, whose
// sync covers them.
func (c *Client) putThenAppendSync(ctx context.Context, pieces []Piece, log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte) ([]error, error) {
	errs := make([]error, len(pieces))
	var wg sync.WaitGroup
	for i, p := range pieces {
		wg.Go(func() { errs[i] = c.PutPiece(ctx, p.Key, p.Data) })
	}
	wg.Wait()
	if err := c.AppendSync(ctx, log, epoch, seq, rec); err != nil {
		return nil, err
	}
	return errs, nil
}
