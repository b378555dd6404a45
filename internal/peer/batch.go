package peer

import (
	"context"
	"encoding/binary"
	"runtime"
	"sync"
	"sync/atomic"

	"cairn/blocks"
)

// Batching of PutPiece calls. A node pushing a volume's dirty chunks puts
// a piece on each remote holder for every block, many blocks at once: one
// request per piece cost a frame, a server goroutine and a reply each, and
// on a small machine the transport ate more CPU than the silo. So a
// PutPiece made while another is in flight to the same peer joins a batch
// (a copy of its bytes), and one sender goroutine per client sends the
// batches as PutPieces requests, one at a time: while a batch is in the
// air the next one gathers, so batches grow with the load and cost nothing
// when it is light (a PutPiece with nothing else in flight goes alone, at
// once). Before its first batch a client sends an empty PutPieces: a
// server that predates the op answers bad request, and the client then
// sends that batch piece by piece and batches no more.

// putBatch is PutPiece calls gathered into one PutPieces request.
type putBatch struct {
	payload []byte // count(2), then the pieces (see msg.go)
	n       int
	errs    []error       // per piece; set before done is closed
	done    chan struct{} // closed when every piece has its outcome
}

// batcher is a Client's batching state.
type batcher struct {
	inflight atomic.Int32 // PutPiece calls in progress
	noBatch  atomic.Bool  // the server does not know PutPieces
	probed   atomic.Bool  // the server answered an empty PutPieces

	mu      sync.Mutex
	open    *putBatch // gathering; nil when none
	queue   []*putBatch
	kick    chan struct{} // cap 1: the sender has work
	started bool
	closed  bool
}

func newPutBatch() *putBatch {
	return &putBatch{payload: make([]byte, 2, 2+8*(36+4096)), done: make(chan struct{})}
}

// finish sets every piece's outcome to err (or to errs[i]) and releases
// the waiters.
func (b *putBatch) finish(err error, errs []error) {
	b.errs = make([]error, b.n)
	for i := range b.errs {
		if err != nil {
			b.errs[i] = err
		} else if i < len(errs) {
			b.errs[i] = errs[i]
		}
	}
	close(b.done)
}

// putPiece is PutPiece, batched when other puts are in flight.
func (c *Client) putPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	bt := &c.batch
	if len(data) > maxBatchPiece || bt.noBatch.Load() || requestFlags(ctx) != 0 {
		return c.putOne(ctx, key, data)
	}
	defer bt.inflight.Add(-1)
	if bt.inflight.Add(1) == 1 {
		return c.putOne(ctx, key, data) // alone: no wait for company
	}
	b, i, ok := c.enqueue(key, data)
	if !ok {
		return c.putOne(ctx, key, data) // closed: fails as any call does
	}
	select {
	case <-b.done:
		return b.errs[i]
	case <-ctx.Done():
		// The bytes were copied: the batch goes on without this caller.
		return c.wrap("put-piece", ctx.Err())
	}
}

// putOne sends one PutPiece request.
func (c *Client) putOne(ctx context.Context, key blocks.Addr, data []byte) error {
	_, err := c.call(ctx, opPutPiece, key[:], data)
	return err
}

// enqueue copies the piece into the open batch and returns the batch and
// the piece's index in it; ok is false once the client is closed.
func (c *Client) enqueue(key blocks.Addr, data []byte) (b *putBatch, i int, ok bool) {
	bt := &c.batch
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.closed {
		return nil, 0, false
	}
	if !bt.started {
		bt.started = true
		bt.kick = make(chan struct{}, 1)
		go c.sendLoop()
	}
	b = bt.open
	if b == nil {
		b = newPutBatch()
		bt.open = b
	}
	i = b.n
	b.n++
	b.payload = appendPutEntry(b.payload, key, data)
	if b.n == maxBatchPieces || len(b.payload) >= maxBatchBytes {
		bt.open = nil
		bt.queue = append(bt.queue, b)
	}
	select {
	case bt.kick <- struct{}{}:
	default:
	}
	return b, i, true
}

// take returns the next batch to send: a full one, else the open one.
func (bt *batcher) take() *putBatch {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if len(bt.queue) > 0 {
		b := bt.queue[0]
		bt.queue = bt.queue[1:]
		return b
	}
	b := bt.open
	bt.open = nil
	return b
}

// sendLoop sends batches, one at a time, until the client is closed.
func (c *Client) sendLoop() {
	bt := &c.batch
	for range bt.kick {
		// Let the callers that are ready run first: their pieces then
		// join this batch.
		runtime.Gosched()
		for b := bt.take(); b != nil; b = bt.take() {
			c.sendBatch(b)
		}
	}
}

// sendBatch sends b as one PutPieces request and hands out the outcomes.
func (c *Client) sendBatch(b *putBatch) {
	binary.BigEndian.PutUint16(b.payload, uint16(b.n))
	// No caller's context: the callers may give up, the batch still goes
	// (within the client's timeout, which the exchange applies).
	ctx := context.Background()
	if !c.batch.probed.Load() {
		// An empty PutPieces fits any server's limit for an unknown op:
		// one that predates the op answers bad request rather than
		// closing the connection on a large frame.
		f, _, err := c.exchange(ctx, opPutPieces, true, []byte{0, 0})
		if err != nil {
			b.finish(err, nil)
			return
		}
		if f.status == codeBadRequest {
			c.batch.noBatch.Store(true)
			c.sendSingly(ctx, b)
			return
		}
		c.batch.probed.Store(true)
	}
	f, _, err := c.exchange(ctx, opPutPieces, true, b.payload)
	if err != nil {
		b.finish(err, nil)
		return
	}
	if f.status == codeBadRequest {
		c.batch.noBatch.Store(true)
		c.sendSingly(ctx, b)
		return
	}
	if rerr := replyError(f); rerr != nil {
		b.finish(c.wrap("put-piece", rerr), nil)
		return
	}
	errs, derr := c.putResults(f.payload, b.n)
	if derr != nil {
		b.finish(c.wrap("put-piece", derr), nil)
		return
	}
	b.finish(nil, errs)
}

// putResults decodes the reply of a request that put n pieces (PutPieces,
// PutAppendSync): nil for a stored piece, else its error wrapped as
// PutPiece's would be. A reply that does not decode is unavailable.
func (c *Client) putResults(p []byte, n int) ([]error, error) {
	errs, err := decodePutResults(p, n)
	if err != nil {
		return nil, markUnavailable(err)
	}
	for i, e := range errs {
		if e != nil {
			errs[i] = c.wrap("put-piece", e)
		}
	}
	return errs, nil
}

// sendSingly sends the pieces of b one by one (a server that does not
// know PutPieces); the client batches no more.
func (c *Client) sendSingly(ctx context.Context, b *putBatch) {
	entries, err := decodePutPieces(b.payload)
	if err != nil {
		b.finish(c.wrap("put-pieces", err), nil)
		return
	}
	errs := make([]error, len(entries))
	for i, e := range entries {
		errs[i] = c.putOne(ctx, e.key, e.data)
	}
	b.finish(nil, errs)
}

// closeBatches fails what waits to be sent and stops the sender.
func (c *Client) closeBatches() {
	bt := &c.batch
	bt.mu.Lock()
	if bt.closed {
		bt.mu.Unlock()
		return
	}
	bt.closed = true
	pending := bt.queue
	if bt.open != nil {
		pending = append(pending, bt.open)
	}
	bt.queue, bt.open = nil, nil
	if bt.kick != nil {
		close(bt.kick)
	}
	bt.mu.Unlock()
	for _, b := range pending {
		b.finish(c.wrap("put-piece", blocks.ErrClosed), nil)
	}
}
