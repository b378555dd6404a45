package peer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"cairn/blocks"
)

// Local is what a server serves: a node's silo (or, in tests, a
// blocks/memory.Store).
type Local interface {
	blocks.Holder
	blocks.Journal
	blocks.Walker
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// Holder is the local storage served to peers. Required.
	Holder Local
	// Secret is the cluster secret (at least MinSecret bytes). Required.
	Secret []byte
	// NodeID names this node in handshakes (at most 255 bytes).
	NodeID string
	// Logger receives connection-level events; nil discards them.
	Logger *slog.Logger
	// MaxConns bounds the open connections; one more is closed at once.
	// 0 means 1024.
	MaxConns int
	// MaxInFlight bounds the requests one connection has in progress; the
	// connection's reader waits when it is reached. 0 means 64.
	MaxInFlight int
	// MaxInFlightBytes bounds the request payload bytes one connection
	// holds in progress (a request larger than it still runs, alone).
	// 0 means 64 MiB.
	MaxInFlightBytes int64
	// Mutable serves Load and CompareAndSet of mutable blocks forwarded
	// by other nodes (see mutable.go); it must run them itself, through
	// its own raft replicas, and return an error wrapping ErrNotHosted
	// when it hosts no replica of the block's shard. nil: every such
	// request is answered not-hosted.
	Mutable blocks.MutableStore
	// ClientActivity, if not nil, is called as each request (every op but
	// stream control) is read that the client did not mark as background
	// work (flagBackground, set when the client's context carries
	// throttle.Background): a node's repair throttle notes client I/O
	// with it, so that repair yields to clients on every node their data
	// reaches, not only on the one they talk to. It must be quick and safe
	// for concurrent use.
	ClientActivity func()
	// Collector serves a cluster garbage collector's requests (see
	// gc.go); nil answers them with status 8 (bad request).
	Collector Collector
	// HandshakeTimeout bounds the handshake of a new connection. 0 means 10s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds each reply write, so that a peer that stops
	// reading cannot hold the server's goroutines. 0 means 30s.
	WriteTimeout time.Duration
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("peer: server closed")

// errShuttingDown is the cause of the handler context's cancellation at
// Shutdown; it crosses the wire as codeUnavailable.
var errShuttingDown = errors.New("peer: server shutting down")

// ServerStats are a server's counters since NewServer.
type ServerStats struct {
	Accepted  int64 // connections accepted
	Refused   int64 // handshakes that failed (wrong secret, bad frames, timeouts)
	Malformed int64 // authenticated connections closed for a protocol violation
	Requests  int64 // requests served (started on the holder)
	Conns     int   // connections open now
}

// Server serves a Local holder to authenticated peers. It is safe for
// concurrent use; one Server may Serve several listeners.
type Server struct {
	opts ServerOptions
	log  *slog.Logger

	accepted, refused, malformed, requests atomic.Int64

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	closed    bool
	wg        sync.WaitGroup // connection goroutines
}

// NewServer checks opts and returns a server; call Serve to start it.
func NewServer(opts ServerOptions) (*Server, error) {
	if opts.Holder == nil {
		return nil, errors.New("peer: server needs a holder")
	}
	if len(opts.Secret) < MinSecret {
		return nil, fmt.Errorf("peer: cluster secret of %d bytes: at least %d", len(opts.Secret), MinSecret)
	}
	if err := checkNodeID(opts.NodeID); err != nil {
		return nil, err
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 1024
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 64
	}
	if opts.MaxInFlightBytes <= 0 {
		opts.MaxInFlightBytes = 64 << 20
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = 10 * time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts.Secret = append([]byte(nil), opts.Secret...)
	return &Server{
		opts:      opts,
		log:       log.With("peer-server", opts.NodeID),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*serverConn]struct{}{},
	}, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	return ServerStats{
		Accepted:  s.accepted.Load(),
		Refused:   s.refused.Load(),
		Malformed: s.malformed.Load(),
		Requests:  s.requests.Load(),
		Conns:     n,
	}
}

// Serve accepts connections on l until Shutdown (it then returns
// ErrServerClosed) or until l fails. It closes l when it returns. ctx
// bounds the whole server's life on l: when ctx is done Serve closes l and
// every connection it accepted, and returns ctx's error.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	connCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer func() {
		if ctx.Err() != nil {
			cancel(ctx.Err())
			s.closeConns(connCtx)
		}
	}()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("peer: accept: %w", err)
		}
		delay = 0
		s.accepted.Add(1)
		s.mu.Lock()
		if s.closed || len(s.conns) >= s.opts.MaxConns {
			full := !s.closed
			s.mu.Unlock()
			if full {
				s.log.Warn("peer: connection limit reached; closing", "remote", c.RemoteAddr(), "max", s.opts.MaxConns)
			}
			c.Close()
			continue
		}
		sc := newServerConn(s, c, connCtx)
		s.conns[sc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			sc.run()
			s.mu.Lock()
			delete(s.conns, sc)
			s.mu.Unlock()
		}()
	}
}

// closeConns closes the connections whose context is ctx.
func (s *Server) closeConns(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sc := range s.conns {
		if sc.parent == ctx {
			sc.conn.Close()
		}
	}
}

// Shutdown stops the server: it closes every listener, stops reading new
// requests, and waits for the requests in progress to be answered; when ctx
// is done first it closes every connection at once and returns ctx's
// error. Serve returns ErrServerClosed. Shutdown does not close the holder.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for sc := range s.conns {
		sc.stopReading()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for sc := range s.conns {
			sc.cancel(errShuttingDown)
			sc.conn.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// serverConn is one accepted connection.
type serverConn struct {
	s      *Server
	conn   net.Conn
	parent context.Context
	ctx    context.Context // canceled when the connection ends
	cancel context.CancelCauseFunc
	w      *queuedWriter
	log    *slog.Logger

	stopping atomic.Bool
	handlers sync.WaitGroup
	sem      chan struct{}
	bytes    budget

	mu      sync.Mutex // guards streams
	streams map[uint64]*serverStream
}

func newServerConn(s *Server, c net.Conn, parent context.Context) *serverConn {
	ctx, cancel := context.WithCancelCause(parent)
	return &serverConn{
		s: s, conn: c, parent: parent, ctx: ctx, cancel: cancel,
		w:       newQueuedWriter(newFrameWriter(c, s.opts.WriteTimeout), s.opts.MaxInFlight+maxStreams+1),
		log:     s.log.With("remote", c.RemoteAddr().String()),
		sem:     make(chan struct{}, s.opts.MaxInFlight),
		bytes:   budget{max: s.opts.MaxInFlightBytes},
		streams: map[uint64]*serverStream{},
	}
}

// stopReading makes the reader stop taking requests (Shutdown); requests in
// progress are still answered.
func (sc *serverConn) stopReading() {
	sc.stopping.Store(true)
	_ = sc.conn.SetReadDeadline(time.Now())
}

func (sc *serverConn) run() {
	defer sc.conn.Close()
	defer sc.cancel(nil)
	r := bufio.NewReaderSize(sc.conn, 64<<10)
	_ = sc.conn.SetDeadline(time.Now().Add(sc.s.opts.HandshakeTimeout))
	peerID, err := serverHandshake(sc.conn, r, sc.s.opts.Secret, sc.s.opts.NodeID)
	if err != nil {
		sc.s.refused.Add(1)
		sc.log.Warn("peer: handshake failed", "err", err)
		return
	}
	_ = sc.conn.SetDeadline(time.Time{})
	if sc.stopping.Load() { // Shutdown raced with the handshake
		return
	}
	go sc.w.run()
	defer sc.w.stop() // after the handlers (defers run last first)
	sc.log = sc.log.With("peer", peerID)
	sc.log.Debug("peer: connection authenticated")
	err = sc.readLoop(r)
	if sc.stopping.Load() {
		err = nil
	}
	switch {
	case errors.Is(err, ErrProtocol):
		sc.s.malformed.Add(1)
		sc.log.Warn("peer: closing connection", "err", err)
	case err != nil:
		sc.log.Debug("peer: connection ended", "err", err)
	}
	// Answer what is in progress, then close. Streams end at once (no
	// credit can arrive any more); on a broken connection so do requests.
	sc.mu.Lock()
	for _, st := range sc.streams {
		st.cancel(errShuttingDown)
	}
	sc.mu.Unlock()
	if !sc.stopping.Load() {
		sc.cancel(err)
	}
	sc.handlers.Wait()
}

func (sc *serverConn) readLoop(r *bufio.Reader) error {
	for {
		f, err := readFrame(r, requestLimit)
		if err != nil {
			return err
		}
		if sc.stopping.Load() {
			return nil
		}
		switch f.op {
		case opCredit, opCancel:
			if len(f.payload) != 0 {
				return errMalformed("stream control", len(f.payload))
			}
			sc.mu.Lock()
			st := sc.streams[f.id]
			sc.mu.Unlock()
			if st != nil {
				st.control(f.op)
			}
			continue
		}
		h, stream, err := sc.handler(f)
		if err != nil {
			return err
		}
		if note := sc.s.opts.ClientActivity; note != nil && f.status&flagBackground == 0 {
			note()
		}
		sc.s.requests.Add(1)
		sc.handlers.Add(1)
		if stream {
			// Streams do not take a slot: one waiting for credit must not
			// stop the reader, which brings the credit.
			go func() {
				defer sc.handlers.Done()
				h()
			}()
			continue
		}
		select {
		case sc.sem <- struct{}{}:
		case <-sc.ctx.Done():
			sc.handlers.Done()
			return context.Cause(sc.ctx)
		}
		n := int64(len(f.payload))
		sc.bytes.acquire(n)
		serve := func() {
			defer sc.handlers.Done()
			defer func() { <-sc.sem }()
			defer sc.bytes.release(n)
			h()
		}
		if inlineOp(f.op) && len(sc.sem) == 1 && r.Buffered() == 0 {
			// Alone on the connection, nothing more read yet: serve it
			// here, as the NBD server does at queue depth 1. A goroutine
			// per request made the runtime wake an idle thread to steal
			// it (a futex call, then usleep(3) backing off the reader's
			// runnext): node A of a cluster made about 12 futex calls and
			// 12 nanosleeps per FLUSH (strace -c, benchnbd's fsync row).
			serve()
			continue
		}
		go serve()
	}
}

// inlineOp reports whether the reader may serve a request of op itself
// when it is alone on the connection: the requests that wait for nothing
// but the holder (memory, the page cache, the disk), never for raft or for
// another request on the connection. One that takes long (a sync, a read
// of a piece not in the page cache) holds up the requests that arrive
// meanwhile on the connection, for that long; once requests overlap they
// run on goroutines again. Measured on the cluster's 4K write+fsync row
// (benchnbd, 10 s runs, two interleaved runs each): 1102 and 1203 FLUSHes
// per second with a goroutine per request, 1196 and 1170 serving pieces
// and appends inline, 1214 and 1281 with syncs inline too.
func inlineOp(op byte) bool {
	switch op {
	case opPutPiece, opPutPieces, opGetPiece, opGetAnyPiece, opHasPiece, opAppend, opAppendSync, opPutAppendSync, opSync:
		return true
	}
	return false
}

// firstHeld returns the piece of the first of keys that get reads
// (GetAnyPiece's rule, op 22, on the server and in the client's
// fallback for older servers): a key not held is passed over, and so is
// one whose read fails otherwise (corrupt, say) while a later key may
// still serve, unless the holder is unavailable. The first such failure
// is returned when no key serves, blocks.ErrNotFound when none is held.
func firstHeld(keys []blocks.Addr, get func(blocks.Addr) ([]byte, error)) ([]byte, error) {
	var first error
	for _, k := range keys {
		data, err := get(k)
		if err == nil {
			return data, nil
		}
		if errors.Is(err, blocks.ErrUnavailable) {
			return nil, err
		}
		if first == nil && !errors.Is(err, blocks.ErrNotFound) {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	return nil, fmt.Errorf("peer: none of %d keys held: %w", len(keys), blocks.ErrNotFound)
}

// reply sends the final reply to request id: err's code and text, or
// codeOK and parts.
func (sc *serverConn) reply(id uint64, err error, parts ...[]byte) {
	if err != nil {
		code := errorCode(err)
		if code == codeInternal || code == codeUnavailable {
			sc.log.Warn("peer: request failed", "err", err)
		}
		msg := err.Error()
		if len(msg) > maxErrorText {
			msg = msg[:maxErrorText]
		}
		_ = sc.w.write(opReply, code, id, []byte(msg))
		return
	}
	_ = sc.w.write(opReply, codeOK, id, parts...)
}

// handler decodes request f and returns the function that serves it. A
// malformed request is an error (the connection is closed); an unknown op
// is answered with codeBadRequest.
func (sc *serverConn) handler(f frame) (h func(), stream bool, err error) {
	fn, err := sc.decode(f)
	if err != nil {
		return nil, false, err
	}
	if isStream(f.op) {
		sc.mu.Lock()
		n := len(sc.streams)
		sc.mu.Unlock()
		if n >= maxStreams {
			id := f.id
			return func() {
				sc.reply(id, fmt.Errorf("peer: %d streams open on one connection: %w", n, blocks.ErrUnavailable))
			}, false, nil
		}
		st := sc.openStream(f.id)
		return func() { fn(st) }, true, nil
	}
	return func() { fn(nil) }, false, nil
}

// putEntries puts the pieces of a PutPieces or PutAppendSync request on
// h, in order, and returns each one's error.
func putEntries(ctx context.Context, h Local, entries []putEntry) []error {
	errs := make([]error, len(entries))
	for i, e := range entries {
		errs[i] = h.PutPiece(ctx, e.key, e.data)
	}
	return errs
}

// maxStreams bounds the Walk and Replay streams open on one connection.
const maxStreams = 16

// decode decodes request f and returns the function that serves it (given
// its stream, for Walk and Replay). A malformed request is an error.
func (sc *serverConn) decode(f frame) (func(st *serverStream), error) {
	h := sc.s.opts.Holder
	ctx := sc.ctx
	id := f.id
	switch f.op {
	case opPutPiece:
		key, data, err := decodePut(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			if len(data) > blocks.MaxPiece {
				sc.reply(id, fmt.Errorf("peer: piece of %d bytes: %w", len(data), blocks.ErrTooLarge))
				return
			}
			sc.reply(id, h.PutPiece(ctx, key, data))
		}, nil
	case opPutPieces:
		entries, err := decodePutPieces(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			sc.reply(id, nil, encodePutResults(putEntries(ctx, h, entries)))
		}, nil
	case opGetPiece:
		key, err := decodeKey(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			data, err := h.GetPiece(ctx, key)
			if err == nil && len(data) > maxReply {
				err = fmt.Errorf("peer: holder returned a piece of %d bytes: %w", len(data), blocks.ErrTooLarge)
			}
			sc.reply(id, err, data)
		}, nil
	case opHasPiece:
		key, err := decodeKey(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			ok, err := h.HasPiece(ctx, key)
			b := []byte{0}
			if ok {
				b[0] = 1
			}
			sc.reply(id, err, b)
		}, nil
	case opHasPieces:
		keys, err := decodeHasPieces(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			has := make([]bool, len(keys))
			for i, k := range keys {
				ok, err := h.HasPiece(ctx, k)
				if err != nil {
					sc.reply(id, err)
					return
				}
				has[i] = ok
			}
			sc.reply(id, nil, encodeHasBitmap(has))
		}, nil
	case opGetAnyPiece:
		keys, err := decodeGetAnyPiece(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			if keys == nil {
				sc.reply(id, nil) // the probe
				return
			}
			data, err := firstHeld(keys, func(k blocks.Addr) ([]byte, error) {
				data, err := h.GetPiece(ctx, k)
				if err == nil && len(data) > maxReply {
					err = fmt.Errorf("peer: holder returned a piece of %d bytes: %w", len(data), blocks.ErrTooLarge)
				}
				return data, err
			})
			sc.reply(id, err, data)
		}, nil
	case opDeletePiece:
		key, err := decodeKey(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) { sc.reply(id, h.DeletePiece(ctx, key)) }, nil
	case opSync:
		if len(f.payload) != 0 {
			return nil, errMalformed("sync", len(f.payload))
		}
		return func(*serverStream) { sc.reply(id, h.Sync(ctx)) }, nil
	case opAppend, opAppendSync:
		sync := f.op == opAppendSync
		if sync && len(f.payload) == 0 {
			// A client's probe (see Client.AppendSync): no effect.
			return func(*serverStream) { sc.reply(id, nil) }, nil
		}
		log, epoch, seq, rec, err := decodeAppend(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			if len(rec) > blocks.MaxRecord {
				sc.reply(id, fmt.Errorf("peer: journal record of %d bytes: %w", len(rec), blocks.ErrTooLarge))
				return
			}
			err := h.Append(ctx, log, epoch, seq, rec)
			if err == nil && sync {
				// The holder's Sync covers every write that returned
				// before it: the record, and the pieces put before.
				err = h.Sync(ctx)
			}
			sc.reply(id, err)
		}, nil
	case opPutAppendSync:
		if len(f.payload) == 0 {
			// A client's probe (see Client.PutAppendSync): no effect.
			return func(*serverStream) { sc.reply(id, nil) }, nil
		}
		log, epoch, seq, rec, entries, err := decodePutAppendSync(f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) {
			errs := putEntries(ctx, h, entries)
			err := h.Append(ctx, log, epoch, seq, rec)
			if err == nil {
				// Covers the pieces just put and the record.
				err = h.Sync(ctx)
			}
			sc.reply(id, err, encodePutResults(errs))
		}, nil
	case opSeal:
		log, epoch, err := decodeLogOp("seal", f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) { sc.reply(id, h.Seal(ctx, log, blocks.Epoch(epoch))) }, nil
	case opTrim:
		log, before, err := decodeLogOp("trim", f.payload)
		if err != nil {
			return nil, err
		}
		return func(*serverStream) { sc.reply(id, h.Trim(ctx, log, before)) }, nil
	case opReplay:
		log, from, err := decodeLogOp("replay", f.payload)
		if err != nil {
			return nil, err
		}
		return func(st *serverStream) {
			st.run(func(ctx context.Context) error {
				return h.Replay(ctx, log, from, func(epoch blocks.Epoch, seq uint64, rec []byte) error {
					if len(rec) > blocks.MaxRecord {
						return fmt.Errorf("peer: journal record %d of %d bytes: %w", seq, len(rec), blocks.ErrTooLarge)
					}
					return st.add(appendReplayItem(st.batch, epoch, seq, rec))
				})
			})
		}, nil
	case opLoad, opCompareAndSet:
		return sc.decodeMutable(f)
	case opGCBegin, opGCLive, opGCSweep:
		return sc.decodeGC(f)
	case opWalk:
		if len(f.payload) != 0 {
			return nil, errMalformed("walk", len(f.payload))
		}
		return func(st *serverStream) {
			st.run(func(ctx context.Context) error {
				return h.Walk(ctx, func(key blocks.Addr) error {
					return st.add(append(st.batch, key[:]...))
				})
			})
		}, nil
	}
	return func(*serverStream) {
		sc.reply(id, fmt.Errorf("%w: unknown op %#x", ErrProtocol, f.op))
	}, nil
}

// serverStream is the server side of a Walk or Replay: items are gathered
// into batches of about batchTarget bytes; after sending a batch the server
// waits for the client's credit before sending the next, so a slow client
// holds at most one batch in flight and the server buffers at most one.
type serverStream struct {
	sc      *serverConn
	id      uint64
	ctx     context.Context
	cancel  context.CancelCauseFunc
	credits chan struct{}
	batch   []byte
}

// errStreamCanceled: the client abandoned the stream.
var errStreamCanceled = errors.New("peer: stream canceled by the client")

func (sc *serverConn) openStream(id uint64) *serverStream {
	ctx, cancel := context.WithCancelCause(sc.ctx)
	st := &serverStream{sc: sc, id: id, ctx: ctx, cancel: cancel, credits: make(chan struct{}, 1)}
	sc.mu.Lock()
	sc.streams[id] = st
	sc.mu.Unlock()
	return st
}

// control handles a credit or cancel frame (called by the reader).
func (st *serverStream) control(op byte) {
	if op == opCancel {
		st.cancel(errStreamCanceled)
		return
	}
	select {
	case st.credits <- struct{}{}:
	default: // more credit than batches sent: harmless, ignored
	}
}

// add takes the batch extended by one item and sends it once it is big
// enough, waiting for credit first when a batch is already in flight.
func (st *serverStream) add(b []byte) error {
	st.batch = b
	if len(st.batch) < batchTarget {
		return nil
	}
	return st.flush()
}

// flush sends the batch, then waits for the client to credit it.
func (st *serverStream) flush() error {
	if err := st.sc.w.write(opBatch, 0, st.id, st.batch); err != nil {
		return err
	}
	st.batch = nil // the writer owns the sent batch
	select {
	case <-st.credits:
		return nil
	case <-st.ctx.Done():
		return context.Cause(st.ctx)
	}
}

func (st *serverStream) run(walk func(ctx context.Context) error) {
	defer func() {
		st.sc.mu.Lock()
		delete(st.sc.streams, st.id)
		st.sc.mu.Unlock()
		st.cancel(nil)
	}()
	err := walk(st.ctx)
	if errors.Is(err, errStreamCanceled) || errors.Is(context.Cause(st.ctx), errStreamCanceled) {
		st.sc.reply(st.id, errStreamCanceled)
		return
	}
	// The last items travel in the final reply.
	st.sc.reply(st.id, err, st.batch)
}

// budget is a byte count that waits, in acquire, until it has room: the
// reader's back-pressure on large requests.
type budget struct {
	mu   sync.Mutex
	cond sync.Cond
	used int64
	max  int64
}

// acquire waits until n more bytes fit (or nothing is held: one request
// larger than max runs alone).
func (b *budget) acquire(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cond.L == nil {
		b.cond.L = &b.mu
	}
	for b.used > 0 && b.used+n > b.max {
		b.cond.Wait()
	}
	b.used += n
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	if b.cond.L != nil {
		b.cond.Broadcast()
	}
	b.mu.Unlock()
}
