package peer

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"cairn/blocks"
	"cairn/internal/crc32c"
	"cairn/internal/fastcopy"
)

// headerSize is the size of a frame header (see the package doc).
const headerSize = 20

// Operations: the op byte of a frame. Values are part of the wire format and
// never change meaning.
const (
	// Requests, client to server.
	opPutPiece    byte = 1
	opGetPiece    byte = 2
	opHasPiece    byte = 3
	opDeletePiece byte = 4
	opSync        byte = 5
	opAppend      byte = 6
	opSeal        byte = 7
	opReplay      byte = 8
	opTrim        byte = 9
	opWalk        byte = 10
	// Mutable blocks, forwarded to a node that hosts the block's raft
	// shard (see mutable.go).
	opLoad          byte = 11
	opCompareAndSet byte = 12
	// Several PutPiece requests in one frame (see msg.go).
	opPutPieces byte = 13
	// Append then Sync in one round trip: Append's payload; the reply
	// (empty) comes once the record and everything the holder took
	// before it is durable. A new op, not a flag on Append: a server
	// ignores flags it does not know, so an older one would append
	// without syncing, whereas it answers an unknown op with
	// codeBadRequest, which tells the client to send Append and Sync.
	// An empty one is a probe (see the package doc).
	opAppendSync byte = 14
	// PutPieces then AppendSync in one round trip (see msg.go). An empty
	// one is a probe, as for AppendSync.
	opPutAppendSync byte = 15
	// Garbage collection (see gc.go).
	opGCBegin byte = 18
	opGCLive  byte = 19
	opGCSweep byte = 20
	// Which of several pieces the holder has, in one round trip (see
	// msg.go); an empty one is a probe, as for AppendSync.
	opHasPieces byte = 21
	// The first of several keys the holder has, in one round trip (see
	// msg.go); an empty one is a probe, as for AppendSync.
	opGetAnyPiece byte = 22
	// Stream control, client to server, naming a stream by its request ID.
	opCredit byte = 16
	opCancel byte = 17

	// Handshake.
	opHello     byte = 0x40 // client to server
	opChallenge byte = 0x41 // server to client
	opProof     byte = 0x42 // client to server
	opWelcome   byte = 0x43 // server to client
	opRefused   byte = 0x44 // server to client, then close

	// Replies, server to client.
	opReply byte = 0x80 // the final reply to a request, with a status
	opBatch byte = 0x81 // one batch of a stream (Walk, Replay); more follow
)

// Status codes: the status byte of an opReply frame. Part of the wire format.
const (
	codeOK          byte = 0
	codeNotFound    byte = 1
	codeCorrupt     byte = 2
	codeNoSpace     byte = 3
	codeFenced      byte = 4
	codeTooLarge    byte = 5
	codeUnavailable byte = 6 // the holder is closed or shutting down
	codeConflict    byte = 7
	codeBadRequest  byte = 8 // an op the server does not know
	codeNotHosted   byte = 9 // Load, CompareAndSet: the server hosts no replica of the shard
	codeInternal    byte = 255
)

// Request flags: the status byte of a request frame (see the package
// doc). Part of the wire format. A server ignores flags it does not know,
// so a client may set them whatever the server's version.
const (
	// flagBackground marks background work (anti-entropy repair,
	// give-back): the client's context was marked by throttle.Background.
	// The server does not count it as client activity
	// (ServerOptions.ClientActivity).
	flagBackground byte = 1 << 0
)

// codeSentinels maps status codes to the sentinel a client wraps.
var codeSentinels = map[byte]error{
	codeNotFound:    blocks.ErrNotFound,
	codeCorrupt:     blocks.ErrCorrupt,
	codeNoSpace:     blocks.ErrNoSpace,
	codeFenced:      blocks.ErrFenced,
	codeTooLarge:    blocks.ErrTooLarge,
	codeUnavailable: blocks.ErrUnavailable,
	codeConflict:    blocks.ErrConflict,
	codeBadRequest:  ErrProtocol,
	codeNotHosted:   errNotHostedRemote,
}

// errorCode is the status code that carries err across the wire.
func errorCode(err error) byte {
	switch {
	case errors.Is(err, ErrNotHosted):
		return codeNotHosted
	case errors.Is(err, blocks.ErrNotFound):
		return codeNotFound
	case errors.Is(err, blocks.ErrCorrupt):
		return codeCorrupt
	case errors.Is(err, blocks.ErrNoSpace):
		return codeNoSpace
	case errors.Is(err, blocks.ErrFenced):
		return codeFenced
	case errors.Is(err, blocks.ErrTooLarge):
		return codeTooLarge
	case errors.Is(err, blocks.ErrClosed), errors.Is(err, blocks.ErrUnavailable),
		errors.Is(err, errShuttingDown), errors.Is(err, context.Canceled):
		return codeUnavailable
	case errors.Is(err, blocks.ErrConflict):
		return codeConflict
	case errors.Is(err, ErrProtocol):
		return codeBadRequest
	}
	return codeInternal
}

// remoteError is an error returned by the peer's holder: the text it had
// there, unwrapping to the sentinel its status code names.
type remoteError struct {
	msg      string
	sentinel error // nil for codeInternal
}

func (e *remoteError) Error() string { return "remote: " + e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// maxErrorText bounds the error text a reply carries.
const maxErrorText = 1024

// Payload limits, checked against the header's length before the payload
// is allocated.
const (
	maxSmall      = 64                                  // fixed-size requests
	maxPutPiece   = 32 + blocks.MaxPiece                // key, data
	maxAppend     = 32 + 8 + 8 + blocks.MaxRecord       // log, epoch, seq, record
	batchTarget   = 256 << 10                           // a batch is sent once it reaches this
	maxBatch      = batchTarget + 20 + blocks.MaxRecord // at most one item past the target
	maxReply      = blocks.MaxPiece                     // GetPiece data is the largest reply
	maxHandshake  = 1 + 32 + 1 + maxNodeID
	maxNodeID     = 255
	maxFrameLimit = maxPutPiece // the largest of all, for the fuzzers
	// maxCompareAndSet: id, want, flags, payload.
	maxCompareAndSet = 32 + 8 + 1 + MaxMutablePayload
	// MaxHasPieces is the most keys one HasPieces request asks about;
	// Client.HasPieces splits longer lists.
	MaxHasPieces = 4096
	maxHasPieces = 2 + 32*MaxHasPieces // count, keys
	// MaxAnyPiece is the most keys one GetAnyPiece request names (the
	// most pieces a block has under any policy).
	MaxAnyPiece  = 32
	maxAnyPieces = 1 + 32*MaxAnyPiece // count, keys
)

// requestLimit is the largest payload a server accepts for op (0: unknown
// op, whose frame is still read and refused with codeBadRequest, up to
// maxSmall bytes).
func requestLimit(op byte) int {
	switch op {
	case opPutPiece:
		return maxPutPiece
	case opPutPieces:
		return maxPutPieces
	case opAppend, opAppendSync:
		return maxAppend
	case opPutAppendSync:
		return maxPutAppendSync
	case opCompareAndSet:
		return maxCompareAndSet
	case opGCSweep:
		return maxGCSweep
	case opHasPieces:
		return maxHasPieces
	case opGetAnyPiece:
		return maxAnyPieces
	case opHello:
		return maxHandshake
	}
	return maxSmall
}

// replyLimit is the largest payload a client accepts for op.
func replyLimit(op byte) int {
	switch op {
	case opReply:
		return maxReply
	case opBatch:
		return maxBatch
	case opChallenge:
		return maxHandshake
	case opWelcome, opRefused:
		return maxSmall
	}
	return -1
}

// ErrProtocol marks a malformed frame or message: the connection that
// carried it is closed.
var ErrProtocol = errors.New("peer: protocol violation")

// frame is one decoded frame. The payload is owned by whoever holds the frame.
type frame struct {
	op      byte
	status  byte
	id      uint64
	payload []byte
}

// readPayload reads len(p) bytes from r; from a bufio.Reader through
// fastcopy (the payload follows a 20-byte header in its buffer, off the
// alignment memmove's fast path wants).
func readPayload(r io.Reader, p []byte) error {
	var err error
	if br, ok := r.(*bufio.Reader); ok {
		_, err = fastcopy.ReadFull(br, p)
	} else {
		_, err = io.ReadFull(r, p)
	}
	return err
}

// readFrame reads one frame from r. limit returns the largest payload
// accepted for an op (negative: the op is not accepted at all). A length
// over the limit, a non-zero reserved field or a CRC mismatch is an
// ErrProtocol error; the caller closes the connection.
func readFrame(r io.Reader, limit func(op byte) int) (frame, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return frame{}, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	f := frame{op: h[4], status: h[5], id: binary.BigEndian.Uint64(h[8:16])}
	if h[6] != 0 || h[7] != 0 {
		return frame{}, fmt.Errorf("%w: reserved header bytes set", ErrProtocol)
	}
	max := limit(f.op)
	if max < 0 {
		return frame{}, fmt.Errorf("%w: unexpected op %#x", ErrProtocol, f.op)
	}
	if uint64(n) > uint64(max) {
		return frame{}, fmt.Errorf("%w: op %#x payload of %d bytes, limit %d", ErrProtocol, f.op, n, max)
	}
	f.payload = make([]byte, n)
	if err := readPayload(r, f.payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return frame{}, err
	}
	crc := crc32c.Update(crc32c.Checksum(h[:16]), f.payload)
	if crc != binary.BigEndian.Uint32(h[16:20]) {
		return frame{}, fmt.Errorf("%w: frame checksum mismatch", ErrProtocol)
	}
	return f, nil
}

// appendFrame appends the encoding of a frame whose payload is the
// concatenation of parts. (Used by tests and fuzzers; connections use
// frameWriter, which does not copy large parts.)
func appendFrame(dst []byte, op, status byte, id uint64, parts ...[]byte) []byte {
	h := encodeHeader(op, status, id, parts)
	dst = append(dst, h[:]...)
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}

func encodeHeader(op, status byte, id uint64, parts [][]byte) [headerSize]byte {
	var h [headerSize]byte
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	binary.BigEndian.PutUint32(h[0:4], uint32(n))
	h[4], h[5] = op, status
	binary.BigEndian.PutUint64(h[8:16], id)
	crc := crc32c.Checksum(h[:16])
	for _, p := range parts {
		crc = crc32c.Update(crc, p)
	}
	binary.BigEndian.PutUint32(h[16:20], crc)
	return h
}

// frameWriter serializes frames from many goroutines onto one connection.
// Writers coalesce: a writer that sees others waiting leaves the flush to
// the last of them, so concurrent small frames share one write system call.
type frameWriter struct {
	conn    net.Conn
	timeout time.Duration // per write; 0: none
	waiting atomic.Int32
	mu      sync.Mutex // guards bw, err and dirty
	bw      *bufio.Writer
	err     error // sticky: once a write fails the connection is dead
	dirty   bool  // frames written by writeDeferred wait in bw for a flush
}

func newFrameWriter(c net.Conn, timeout time.Duration) *frameWriter {
	return &frameWriter{conn: c, timeout: timeout, bw: bufio.NewWriterSize(c, 64<<10)}
}

// write sends one frame. It returns the first write error of the
// connection, now or earlier.
func (w *frameWriter) write(op, status byte, id uint64, parts ...[]byte) error {
	w.waiting.Add(1)
	w.mu.Lock()
	w.waiting.Add(-1)
	defer w.mu.Unlock()
	if err := w.writeLocked(op, status, id, parts); err != nil {
		return err
	}
	if w.waiting.Load() == 0 {
		return w.flushLocked()
	}
	return nil
}

// writeDeferred puts one frame in the buffer without flushing it (unless
// the buffer fills), so that frames from several callers leave in one
// write. kick reports that this frame made the buffer dirty: the caller
// must then see to a flushDeferred (frames written after it, before that
// flush, ride along). The parts are copied (or written) before it returns.
func (w *frameWriter) writeDeferred(op, status byte, id uint64, parts ...[]byte) (kick bool, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writeLocked(op, status, id, parts); err != nil {
		return false, err
	}
	if w.bw.Buffered() == 0 || w.dirty {
		return false, nil
	}
	w.dirty = true
	return true, nil
}

// flushDeferred flushes what writeDeferred left in the buffer.
func (w *frameWriter) flushDeferred() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

func (w *frameWriter) writeLocked(op, status byte, id uint64, parts [][]byte) error {
	if w.err != nil {
		return w.err
	}
	h := encodeHeader(op, status, id, parts)
	if w.timeout > 0 {
		_ = w.conn.SetWriteDeadline(time.Now().Add(w.timeout))
	}
	if _, err := w.bw.Write(h[:]); err != nil {
		return w.broken(err)
	}
	for _, p := range parts {
		if _, err := w.bw.Write(p); err != nil {
			return w.broken(err)
		}
	}
	return nil
}

// broken records a write error and closes the connection: a frame may be
// half sent, so nothing more can follow it.
func (w *frameWriter) broken(err error) error {
	w.err = err
	w.conn.Close()
	return err
}

func (w *frameWriter) flushLocked() error {
	w.dirty = false
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		return w.broken(err)
	}
	return nil
}

// outFrame is a frame waiting in a queuedWriter.
type outFrame struct {
	op, status byte
	id         uint64
	parts      [][]byte
}

// queuedWriter sends frames from many goroutines through one writer
// goroutine, which writes whatever has queued up and then flushes once: the
// server's replies, whose payloads the server owns (a caller's slice could
// not be queued past its call's return). Frames are sent in queue order.
type queuedWriter struct {
	fw     *frameWriter
	queued atomic.Int64 // frames queued and not yet written
	q      chan outFrame
	done   chan struct{} // closed by stop
	once   sync.Once
	exit   chan struct{} // closed when run returns
}

func newQueuedWriter(fw *frameWriter, depth int) *queuedWriter {
	return &queuedWriter{fw: fw, q: make(chan outFrame, depth), done: make(chan struct{}), exit: make(chan struct{})}
}

// write queues a frame; it fails only once the writer was stopped. Write
// errors show as the connection's end.
func (w *queuedWriter) write(op, status byte, id uint64, parts ...[]byte) error {
	// The fast path: nothing queued and the connection idle, write at once
	// (no hand-off to the writer goroutine). Frames still queued keep
	// later ones behind them, so one goroutine's frames stay in order.
	if w.queued.Load() == 0 && w.fw.mu.TryLock() {
		if w.queued.Load() == 0 {
			err := w.fw.writeLocked(op, status, id, parts)
			if err == nil {
				err = w.fw.flushLocked()
			}
			w.fw.mu.Unlock()
			return err
		}
		w.fw.mu.Unlock()
	}
	w.queued.Add(1)
	select {
	case w.q <- outFrame{op, status, id, parts}:
		return nil
	case <-w.done:
		w.queued.Add(-1)
		return net.ErrClosed
	}
}

// run writes queued frames until stop, then writes what is left.
func (w *queuedWriter) run() {
	defer close(w.exit)
	for {
		var f outFrame
		select {
		case f = <-w.q:
		case <-w.done:
			w.drain()
			return
		}
		w.fw.mu.Lock()
		_ = w.fw.writeLocked(f.op, f.status, f.id, f.parts)
		w.queued.Add(-1)
		for more := true; more; {
			select {
			case f = <-w.q:
				_ = w.fw.writeLocked(f.op, f.status, f.id, f.parts)
				w.queued.Add(-1)
			default:
				more = false
			}
		}
		_ = w.fw.flushLocked()
		w.fw.mu.Unlock()
	}
}

func (w *queuedWriter) drain() {
	w.fw.mu.Lock()
	defer w.fw.mu.Unlock()
	for {
		select {
		case f := <-w.q:
			_ = w.fw.writeLocked(f.op, f.status, f.id, f.parts)
			w.queued.Add(-1)
		default:
			_ = w.fw.flushLocked()
			return
		}
	}
}

// stop ends run after it has written what was queued, and waits for it.
func (w *queuedWriter) stop() {
	w.once.Do(func() { close(w.done) })
	<-w.exit
}
