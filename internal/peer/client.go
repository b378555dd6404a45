package peer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"cairn/blocks"
	"cairn/internal/throttle"
)

var (
	_ blocks.Holder  = (*Client)(nil)
	_ blocks.Journal = (*Client)(nil)
	_ blocks.Walker  = (*Client)(nil)
)

// ClientOptions configure a Client.
type ClientOptions struct {
	// Secret is the cluster secret (at least MinSecret bytes). Required:
	// without it every call fails with ErrAuth.
	Secret []byte
	// NodeID names this node in handshakes (at most 255 bytes).
	NodeID string
	// Timeout bounds each round trip: connecting and the handshake, one
	// request and its reply, one batch of a Walk or Replay. When it passes
	// the call fails with blocks.ErrUnavailable. 0 means 10s.
	Timeout time.Duration
	// Conns is the number of connections kept to the peer, each carrying
	// many requests at once. 0 means 1 (measured: see the package doc).
	Conns int
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
	// DialContext opens the transport connection (for example to wrap it
	// in TLS, or to inject faults in tests). nil means a net.Dialer's.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Client is a remote holder: a blocks.Holder, blocks.Journal and
// blocks.Walker served by a peer's Server. It is safe for concurrent use:
// requests from many goroutines are multiplexed on its connections, with
// replies matched by request ID in any order. It connects lazily, and
// reconnects on the next call after a connection fails (after the peer
// restarts, for instance); a call that finds its connection broken before
// any reply is retried once on a new one (every operation is idempotent).
//
// Errors: the holder's blocks.ErrNotFound, ErrCorrupt, ErrNoSpace,
// ErrFenced and ErrTooLarge come back wrapped, as the same sentinels; a
// network failure, a refused or timed-out connection, or a peer shutting
// down is blocks.ErrUnavailable wrapped with the peer's address (and
// ErrAuth when the handshake failed); a done ctx gives ctx's error; after
// Close, blocks.ErrClosed.
type Client struct {
	addr  string
	opts  ClientOptions
	log   *slog.Logger
	slots []*slot
	next  atomic.Uint32
	batch batcher // PutPiece calls gathered into PutPieces (batch.go)
	// noAppendSync: the server answered AppendSync (op 14) with
	// codeBadRequest (it predates the op); AppendSync sends Append and
	// Sync from then on. appendSyncProbed: it answered the probe.
	noAppendSync, appendSyncProbed atomic.Bool
	// The same for PutAppendSync (op 15).
	noPutAppendSync, putAppendSyncProbed atomic.Bool
	// The same for HasPieces (op 21).
	noHasPieces, hasPiecesProbed atomic.Bool
	// The same for GetAnyPiece (op 22).
	noGetAny, getAnyProbed atomic.Bool
}

// NewClient returns a client of the peer at addr. It does not connect
// until the first call.
func NewClient(addr string, opts ClientOptions) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Conns <= 0 {
		opts.Conns = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DialContext == nil {
		var d net.Dialer
		opts.DialContext = d.DialContext
	}
	opts.Secret = append([]byte(nil), opts.Secret...)
	c := &Client{addr: addr, opts: opts, log: opts.Logger.With("peer", addr)}
	c.slots = make([]*slot, opts.Conns)
	for i := range c.slots {
		c.slots[i] = &slot{c: c}
	}
	return c
}

// Dial returns a client of the peer at addr after connecting and
// authenticating its first connection, so that a wrong address or secret
// shows at once. The error wraps blocks.ErrUnavailable (and ErrAuth for a
// failed handshake).
func Dial(ctx context.Context, addr string, opts ClientOptions) (*Client, error) {
	c := NewClient(addr, opts)
	if _, _, err := c.slots[0].get(ctx); err != nil {
		c.Close()
		return nil, c.wrap("dial", err)
	}
	return c, nil
}

// Addr returns the peer's address.
func (c *Client) Addr() string { return c.addr }

// Close closes the client's connections. Calls in progress and later
// calls fail with blocks.ErrClosed.
func (c *Client) Close() error {
	c.closeBatches()
	for _, s := range c.slots {
		s.close()
	}
	return nil
}

// opNames name ops in errors.
var opNames = map[byte]string{
	opPutPiece: "put-piece", opGetPiece: "get-piece", opHasPiece: "has-piece",
	opDeletePiece: "delete-piece", opSync: "sync", opAppend: "append", opAppendSync: "append-sync", opPutAppendSync: "put-append-sync", opSeal: "seal",
	opReplay: "replay", opTrim: "trim", opWalk: "walk",
	opLoad: "load", opCompareAndSet: "compare-and-set", opPutPieces: "put-pieces",
	opGCBegin: "gc-begin", opGCLive: "gc-live", opGCSweep: "gc-sweep", opHasPieces: "has-pieces", opGetAnyPiece: "get-any-piece",
}

func (c *Client) wrap(what string, err error) error {
	return fmt.Errorf("peer: %s %s: %w", c.addr, what, err)
}

// unavailable marks a transport failure.
type unavailable struct{ cause error }

func (u *unavailable) Error() string {
	return blocks.ErrUnavailable.Error() + ": " + u.cause.Error()
}
func (u *unavailable) Unwrap() []error { return []error{blocks.ErrUnavailable, u.cause} }

func markUnavailable(err error) error {
	if errors.Is(err, blocks.ErrUnavailable) || errors.Is(err, blocks.ErrClosed) {
		return err
	}
	return &unavailable{err}
}

var errTimeout = errors.New("peer: no reply within the timeout")

// slot holds one of the client's connections and redials it.
type slot struct {
	c *Client

	mu      sync.Mutex // guards the fields below
	cur     *clientConn
	dialing chan struct{} // closed when the dial in progress ends
	lastErr error
	retryAt time.Time
	backoff time.Duration
	closed  bool
}

const (
	minBackoff = 20 * time.Millisecond
	maxBackoff = time.Second
)

// get returns a live connection, dialing one if needed. fresh reports
// whether it was dialed by this call. After a failed dial, calls fail fast
// with the same error until a short backoff has passed.
func (s *slot) get(ctx context.Context) (cc *clientConn, fresh bool, err error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, false, blocks.ErrClosed
		}
		if s.cur != nil && !s.cur.isDead() {
			cc := s.cur
			s.mu.Unlock()
			return cc, false, nil
		}
		if ch := s.dialing; ch != nil {
			s.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
		}
		if time.Now().Before(s.retryAt) {
			err := s.lastErr
			s.mu.Unlock()
			return nil, false, err
		}
		ch := make(chan struct{})
		s.dialing = ch
		s.mu.Unlock()

		cc, err := s.c.dial(ctx)

		s.mu.Lock()
		s.dialing = nil
		close(ch)
		switch {
		case err == nil && s.closed:
			cc.fail(blocks.ErrClosed)
			err = blocks.ErrClosed
		case err == nil:
			s.cur, s.backoff, s.lastErr = cc, 0, nil
		case ctx.Err() != nil:
			err = ctx.Err() // the caller gave up; no backoff
		default:
			err = markUnavailable(err)
			s.backoff = min(max(2*s.backoff, minBackoff), maxBackoff)
			s.lastErr, s.retryAt = err, time.Now().Add(s.backoff)
			s.c.log.Debug("peer: dial failed", "err", err, "backoff", s.backoff)
		}
		s.mu.Unlock()
		return cc, err == nil, err
	}
}

func (s *slot) close() {
	s.mu.Lock()
	s.closed = true
	cc := s.cur
	s.cur = nil
	s.mu.Unlock()
	if cc != nil {
		cc.fail(blocks.ErrClosed)
	}
}

// dial connects and authenticates one connection within the timeout.
func (c *Client) dial(ctx context.Context) (*clientConn, error) {
	if len(c.opts.Secret) < MinSecret {
		return nil, fmt.Errorf("%w: cluster secret of %d bytes: at least %d", ErrAuth, len(c.opts.Secret), MinSecret)
	}
	if err := checkNodeID(c.opts.NodeID); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeoutCause(ctx, c.opts.Timeout, errTimeout)
	defer cancel()
	nc, err := c.opts.DialContext(dctx, "tcp", c.addr)
	if err != nil {
		if ctx.Err() == nil && dctx.Err() != nil {
			err = fmt.Errorf("connect: %w", errTimeout)
		}
		return nil, err
	}
	if d, ok := dctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	stop := context.AfterFunc(dctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	r := bufio.NewReaderSize(nc, 64<<10)
	peerID, err := clientHandshake(nc, r, c.opts.Secret, c.opts.NodeID)
	if !stop() || err != nil {
		nc.Close()
		if err == nil || dctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("handshake: %w", errTimeout)
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	cc := &clientConn{
		conn:    nc,
		w:       newFrameWriter(nc, c.opts.Timeout),
		pending: map[uint64]chan frame{},
		done:    make(chan struct{}),
		flush:   make(chan struct{}, 1),
		log:     c.log.With("peer-id", peerID),
	}
	cc.lastRead.Store(time.Now().UnixNano())
	go cc.readLoop(r)
	go cc.flushLoop()
	c.log.Debug("peer: connected", "peer-id", peerID)
	return cc, nil
}

// clientConn is one authenticated connection with its pending requests.
type clientConn struct {
	conn     net.Conn
	w        *frameWriter
	log      *slog.Logger
	lastRead atomic.Int64 // UnixNano of the last frame read

	flush chan struct{} // a token: frames wait in w for flushLoop

	mu      sync.Mutex // guards the fields below
	pending map[uint64]chan frame
	nextID  uint64
	err     error         // why the connection died
	done    chan struct{} // closed when it dies
}

// flushLoop sends the frames start left in the writer's buffer while
// other requests were in flight: one write for all that queued up
// meanwhile, rather than one per request. It runs until the connection
// dies.
func (cc *clientConn) flushLoop() {
	for {
		select {
		case <-cc.flush:
		case <-cc.done:
			return
		}
		// Let the goroutines that are ready to send run first: their
		// frames then leave in this write.
		runtime.Gosched()
		if err := cc.w.flushDeferred(); err != nil {
			cc.fail(fmt.Errorf("send: %w", err))
			return
		}
	}
}

func (cc *clientConn) isDead() bool {
	select {
	case <-cc.done:
		return true
	default:
		return false
	}
}

// fail ends the connection with err; waiting calls see done.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	cc.pending = nil
	close(cc.done)
	cc.mu.Unlock()
	cc.conn.Close()
}

func (cc *clientConn) deathCause() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err
}

// deferAbove is how many requests must be pending on a connection, the
// new one included, before start leaves its frame to flushLoop.
const deferAbove = 2

// register adds a pending request and returns its ID and how many
// requests are pending, it included.
func (cc *clientConn) register(ch chan frame) (uint64, int, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err != nil {
		return 0, 0, cc.err
	}
	cc.nextID++
	cc.pending[cc.nextID] = ch
	return cc.nextID, len(cc.pending), nil
}

func (cc *clientConn) forget(id uint64) {
	cc.mu.Lock()
	delete(cc.pending, id)
	cc.mu.Unlock()
}

func (cc *clientConn) readLoop(r *bufio.Reader) {
	for {
		f, err := readFrame(r, replyLimit)
		if err != nil {
			if errors.Is(err, ErrProtocol) {
				cc.log.Warn("peer: closing connection", "err", err)
			}
			cc.fail(fmt.Errorf("connection lost: %w", err))
			return
		}
		cc.lastRead.Store(time.Now().UnixNano())
		if f.op != opReply && f.op != opBatch {
			cc.fail(fmt.Errorf("%w: op %#x from the server", ErrProtocol, f.op))
			return
		}
		cc.mu.Lock()
		ch := cc.pending[f.id]
		if f.op == opReply {
			delete(cc.pending, f.id)
		}
		cc.mu.Unlock()
		if ch == nil {
			continue // the caller gave up on it
		}
		select {
		case ch <- f:
		default:
			cc.fail(fmt.Errorf("%w: stream %d sent batches without credit", ErrProtocol, f.id))
			return
		}
	}
}

// exchange is one request in progress on a connection.
type exchange struct {
	cc    *clientConn
	id    uint64
	ch    chan frame
	timer *time.Timer
	got   bool // a frame was received: no transparent retry
}

// start registers and sends a request. A failure is a transport failure.
func (cc *clientConn) start(op, flags byte, timeout time.Duration, chanCap int, parts ...[]byte) (*exchange, error) {
	x := &exchange{cc: cc, ch: make(chan frame, chanCap)}
	id, busy, err := cc.register(x.ch)
	if err != nil {
		return nil, err
	}
	x.id = id
	x.timer = time.NewTimer(timeout)
	if busy > deferAbove {
		// Other requests are in flight: leave the frame for flushLoop,
		// which sends it with whatever else queues up meanwhile (the
		// caller waits for a reply anyway). With few in flight, send
		// it at once: the hand-off would cost a wake-up of latency (a
		// FLUSH's two Syncs to one node go together, for one).
		kick, err := cc.w.writeDeferred(op, flags, id, parts...)
		if err != nil {
			x.timer.Stop()
			cc.fail(fmt.Errorf("send: %w", err))
			return nil, err
		}
		if kick {
			select {
			case cc.flush <- struct{}{}:
			default: // a flush is due already, and will take this frame too
			}
		}
		return x, nil
	}
	if err := cc.w.write(op, flags, id, parts...); err != nil {
		x.timer.Stop()
		cc.fail(fmt.Errorf("send: %w", err))
		return nil, err
	}
	return x, nil
}

// wait returns the next frame of x. Errors: ctx's, or a transport failure
// (marked unavailable).
func (x *exchange) wait(ctx context.Context) (frame, error) {
	start := time.Now()
	select {
	case f := <-x.ch:
		x.got = true
		return f, nil
	case <-x.cc.done:
		select { // a reply that came just before the end still counts
		case f := <-x.ch:
			x.got = true
			return f, nil
		default:
		}
		return frame{}, markUnavailable(x.cc.deathCause())
	case <-ctx.Done():
		x.cc.forget(x.id)
		return frame{}, ctx.Err()
	case <-x.timer.C:
		x.cc.forget(x.id)
		if x.cc.lastRead.Load() < start.UnixNano() {
			// Nothing at all came back for a whole timeout: the
			// connection is likely dead (a partition sends no reset).
			x.cc.fail(fmt.Errorf("connection silent: %w", errTimeout))
		}
		return frame{}, markUnavailable(errTimeout)
	}
}

// rearm restarts x's timer for the next frame of a stream.
func (x *exchange) rearm(timeout time.Duration) {
	x.timer.Stop()
	x.timer.Reset(timeout)
}

func (x *exchange) stop() { x.timer.Stop() }

// retryable reports whether err, from a call on a connection that was not
// fresh and before any reply came, allows one retry on a new connection.
func retryable(err error, fresh, got bool, ctx context.Context) bool {
	return !fresh && !got && ctx.Err() == nil && errors.Is(err, blocks.ErrUnavailable) && !errors.Is(err, errTimeout)
}

func (c *Client) slot() *slot {
	if len(c.slots) == 1 {
		return c.slots[0]
	}
	return c.slots[int(c.next.Add(1))%len(c.slots)]
}

// call sends a unary request and returns the payload of its successful reply.
func (c *Client) call(ctx context.Context, op byte, parts ...[]byte) ([]byte, error) {
	f, _, err := c.exchange(ctx, op, true, parts...)
	if err != nil {
		return nil, err
	}
	if err := replyError(f); err != nil {
		return nil, c.wrap(opNames[op], err)
	}
	return f.payload, nil
}

// exchange sends a unary request and returns its reply frame (op opReply,
// any status). sent reports whether the request may have reached the
// server: when it is false the server certainly did not run it. A request
// that is not idempotent is retried on a new connection only when it was
// not sent; an idempotent one also when its connection broke before any
// reply (see retryable).
func (c *Client) exchange(ctx context.Context, op byte, idempotent bool, parts ...[]byte) (f frame, sent bool, err error) {
	if err := ctx.Err(); err != nil {
		return frame{}, false, c.wrap(opNames[op], err)
	}
	s := c.slot()
	for attempt := 0; ; attempt++ {
		cc, fresh, err := s.get(ctx)
		if err != nil {
			return frame{}, false, c.wrap(opNames[op], err)
		}
		x, err := cc.start(op, requestFlags(ctx), c.opts.Timeout, 1, parts...)
		if err != nil {
			// A frame cut short is never served (its CRC fails or the
			// connection ends first): nothing was sent.
			err = markUnavailable(err)
			if attempt == 0 && retryable(err, fresh, false, ctx) {
				continue
			}
			return frame{}, false, c.wrap(opNames[op], err)
		}
		f, err := x.wait(ctx)
		x.stop()
		if err != nil {
			if idempotent && attempt == 0 && retryable(err, fresh, x.got, ctx) {
				continue
			}
			return frame{}, true, c.wrap(opNames[op], err)
		}
		if f.op != opReply {
			cc.fail(fmt.Errorf("%w: a batch in reply to %s", ErrProtocol, opNames[op]))
			return frame{}, true, c.wrap(opNames[op], markUnavailable(ErrProtocol))
		}
		return f, true, nil
	}
}

// requestFlags returns the flags of a request made with ctx:
// flagBackground when throttle.Background marked it.
func requestFlags(ctx context.Context) byte {
	if throttle.IsBackground(ctx) {
		return flagBackground
	}
	return 0
}

// replyError returns the error an opReply frame carries, or nil.
func replyError(f frame) error {
	if f.status == codeOK {
		return nil
	}
	return &remoteError{msg: string(f.payload), sentinel: codeSentinels[f.status]}
}

// stream runs a Walk or Replay: each batch's payload is passed to each, in
// order; the final reply's payload too. An error from each cancels the
// stream and is returned as is.
func (c *Client) stream(ctx context.Context, op byte, req []byte, each func([]byte) error) error {
	if err := ctx.Err(); err != nil {
		return c.wrap(opNames[op], err)
	}
	s := c.slot()
	for attempt := 0; ; attempt++ {
		cc, fresh, err := s.get(ctx)
		if err != nil {
			return c.wrap(opNames[op], err)
		}
		x, err := cc.start(op, requestFlags(ctx), c.opts.Timeout, 2, req)
		if err != nil {
			err = markUnavailable(err)
			if attempt == 0 && retryable(err, fresh, false, ctx) {
				continue
			}
			return c.wrap(opNames[op], err)
		}
		err = c.follow(ctx, x, op, each)
		x.stop()
		if err != nil && attempt == 0 && retryable(err, fresh, x.got, ctx) {
			continue
		}
		return err
	}
}

func (c *Client) follow(ctx context.Context, x *exchange, op byte, each func([]byte) error) error {
	for {
		f, err := x.wait(ctx)
		if err != nil {
			if ctx.Err() != nil {
				_ = x.cc.w.write(opCancel, 0, x.id)
			}
			return c.wrap(opNames[op], err)
		}
		if f.op == opReply {
			if err := replyError(f); err != nil {
				return c.wrap(opNames[op], err)
			}
			return each(f.payload)
		}
		// A batch: credit the next one first, so the server gathers it
		// while fn runs here.
		x.rearm(c.opts.Timeout)
		if err := x.cc.w.write(opCredit, 0, x.id); err != nil {
			x.cc.fail(fmt.Errorf("send: %w", err))
		}
		if err := each(f.payload); err != nil {
			x.cc.forget(x.id)
			_ = x.cc.w.write(opCancel, 0, x.id)
			return err
		}
	}
}

// PutPiece implements blocks.Holder. data is sent (or copied into the
// connection's buffer) before PutPiece returns and not retained. Errors: blocks.ErrTooLarge (checked here, above
// blocks.MaxPiece), ErrNoSpace, ErrUnavailable, ErrClosed.
func (c *Client) PutPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	if len(data) > blocks.MaxPiece {
		return c.wrap("put-piece", fmt.Errorf("piece of %d bytes: %w", len(data), blocks.ErrTooLarge))
	}
	return c.putPiece(ctx, key, data)
}

// GetPiece implements blocks.Holder: the peer's holder verified the piece;
// the frame's CRC32C covered its way here. The caller owns the slice.
func (c *Client) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	return c.call(ctx, opGetPiece, key[:])
}

// HasPiece implements blocks.Holder.
func (c *Client) HasPiece(ctx context.Context, key blocks.Addr) (bool, error) {
	p, err := c.call(ctx, opHasPiece, key[:])
	if err != nil {
		return false, err
	}
	ok, err := decodeHas(p)
	if err != nil {
		return false, c.wrap("has-piece", markUnavailable(err))
	}
	return ok, nil
}

// HasPieces reports which of keys the peer's holder has (has[i] for
// keys[i]), in one round trip per MaxHasPieces keys. Against a server that
// predates op 21 (it answers the first call's probe with status 8) it asks
// HasPiece once per key from then on. Errors: HasPiece's.
func (c *Client) HasPieces(ctx context.Context, keys []blocks.Addr) ([]bool, error) {
	if err := c.probe(ctx, opHasPieces, &c.hasPiecesProbed, &c.noHasPieces); err != nil {
		return nil, err
	}
	has := make([]bool, 0, len(keys))
	if c.noHasPieces.Load() {
		for _, k := range keys {
			ok, err := c.HasPiece(ctx, k)
			if err != nil {
				return nil, err
			}
			has = append(has, ok)
		}
		return has, nil
	}
	for len(keys) > 0 {
		n := min(len(keys), MaxHasPieces)
		p, err := c.call(ctx, opHasPieces, encodeHasPieces(keys[:n]))
		if err != nil {
			return nil, err
		}
		part, err := decodeHasBitmap(p, n)
		if err != nil {
			return nil, c.wrap("has-pieces", markUnavailable(err))
		}
		has = append(has, part...)
		keys = keys[n:]
	}
	return has, nil
}

// GetAnyPiece returns the piece of the first of keys (1 to MaxAnyPiece,
// in order) that the peer's holder has, in one round trip: a node's copy
// of a replicated block that may sit under another rank's key. Against a
// server that predates op 22 it asks GetPiece once per key. Errors:
// blocks.ErrNotFound when the holder has none of the keys; GetPiece's.
func (c *Client) GetAnyPiece(ctx context.Context, keys []blocks.Addr) ([]byte, error) {
	if len(keys) == 0 || len(keys) > MaxAnyPiece {
		return nil, c.wrap("get-any-piece", fmt.Errorf("%d keys, want 1 to %d", len(keys), MaxAnyPiece))
	}
	if err := c.probe(ctx, opGetAnyPiece, &c.getAnyProbed, &c.noGetAny); err != nil {
		return nil, err
	}
	if !c.noGetAny.Load() {
		return c.call(ctx, opGetAnyPiece, encodeGetAnyPiece(keys))
	}
	p, err := firstHeld(keys, func(k blocks.Addr) ([]byte, error) { return c.GetPiece(ctx, k) })
	if errors.Is(err, blocks.ErrNotFound) {
		return nil, c.wrap("get-any-piece", err)
	}
	return p, err
}

// DeletePiece implements blocks.Holder.
func (c *Client) DeletePiece(ctx context.Context, key blocks.Addr) error {
	_, err := c.call(ctx, opDeletePiece, key[:])
	return err
}

// Sync implements blocks.Holder: it returns once the peer's holder has
// synced, which covers every PutPiece and Append that returned before Sync
// was called (their replies came after the peer's holder took them).
func (c *Client) Sync(ctx context.Context) error {
	_, err := c.call(ctx, opSync)
	return err
}

// Append implements blocks.Journal. Errors: blocks.ErrTooLarge (over
// blocks.MaxRecord, checked here), ErrFenced, ErrNoSpace, ErrUnavailable.
func (c *Client) Append(ctx context.Context, log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte) error {
	if len(rec) > blocks.MaxRecord {
		return c.wrap("append", fmt.Errorf("journal record of %d bytes: %w", len(rec), blocks.ErrTooLarge))
	}
	_, err := c.call(ctx, opAppend, encodeLogHeader(log, uint64(epoch), seq), rec)
	return err
}

// AppendSync is Append followed by Sync in one round trip (op 14): it
// returns once the peer's holder has taken record seq and synced, which
// makes the record, and every PutPiece and Append that returned before
// AppendSync was called, durable there. Against a server that predates
// op 14 (it answers with status 8, bad request) it falls back to Append
// then Sync from then on. The first call probes the server with an
// empty AppendSync (see the package doc). Errors: Append's and Sync's;
// on an error the record may or may not have been appended, and nothing
// is known to be durable.
func (c *Client) AppendSync(ctx context.Context, log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte) error {
	if len(rec) > blocks.MaxRecord {
		return c.wrap("append-sync", fmt.Errorf("journal record of %d bytes: %w", len(rec), blocks.ErrTooLarge))
	}
	if err := c.probe(ctx, opAppendSync, &c.appendSyncProbed, &c.noAppendSync); err != nil {
		return err
	}
	if !c.noAppendSync.Load() {
		f, _, err := c.exchange(ctx, opAppendSync, true, encodeLogHeader(log, uint64(epoch), seq), rec)
		if err != nil {
			return err
		}
		if f.status != codeBadRequest {
			if err := replyError(f); err != nil {
				return c.wrap("append-sync", err)
			}
			return nil
		}
		c.noAppendSync.Store(true)
		c.log.Info("peer: the server predates append-sync; sending append and sync instead")
	}
	if err := c.Append(ctx, log, epoch, seq, rec); err != nil {
		return err
	}
	return c.Sync(ctx)
}

// probe sends an empty request of op once, before the first real one,
// unless probed or missing is set: a server that predates op answers
// bad request (missing is then set, and the caller falls back on older
// ops), one that knows it answers status 0 (probed is set). An empty
// request fits any server's limit for an unknown op, whereas a real one
// may not, and would close the connection.
func (c *Client) probe(ctx context.Context, op byte, probed, missing *atomic.Bool) error {
	if missing.Load() || probed.Load() {
		return nil
	}
	f, _, err := c.exchange(ctx, op, true)
	if err != nil {
		return err
	}
	switch {
	case f.status == codeBadRequest:
		missing.Store(true)
		c.log.Info("peer: the server predates an op; sending older ones instead", "op", opNames[op])
	case f.status != codeOK:
		return c.wrap(opNames[op], replyError(f))
	default:
		probed.Store(true)
	}
	return nil
}

// Seal implements blocks.Journal.
func (c *Client) Seal(ctx context.Context, log blocks.ID, epoch blocks.Epoch) error {
	_, err := c.call(ctx, opSeal, encodeLogHeader(log, uint64(epoch)))
	return err
}

// Trim implements blocks.Journal.
func (c *Client) Trim(ctx context.Context, log blocks.ID, before uint64) error {
	_, err := c.call(ctx, opTrim, encodeLogHeader(log, before))
	return err
}

// Replay implements blocks.Journal. Records arrive in batches of about
// 256 KiB; fn runs on the calling goroutine, and rec is valid only during
// the call. An error from fn ends the replay and is returned as is. If the
// connection fails mid-way, the error wraps blocks.ErrUnavailable after
// some records were passed to fn: the caller replays again.
func (c *Client) Replay(ctx context.Context, log blocks.ID, from uint64, fn func(epoch blocks.Epoch, seq uint64, rec []byte) error) error {
	return c.stream(ctx, opReplay, encodeLogHeader(log, from), func(p []byte) error {
		err := decodeReplayBatch(p, fn)
		if errors.Is(err, ErrProtocol) {
			return c.wrap("replay", markUnavailable(err))
		}
		return err
	})
}

// Walk implements blocks.Walker: the peer's keys arrive in batches of 8192
// (256 KiB); fn runs on the calling goroutine. An error from fn ends the
// walk and is returned as is.
func (c *Client) Walk(ctx context.Context, fn func(key blocks.Addr) error) error {
	return c.stream(ctx, opWalk, nil, func(p []byte) error {
		err := decodeWalkBatch(p, fn)
		if errors.Is(err, ErrProtocol) {
			return c.wrap("walk", markUnavailable(err))
		}
		return err
	})
}
