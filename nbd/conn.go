package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"cairn/internal/fastcopy"
	"cairn/nbd/proto"
)

// Buffer sizes of a connection's reader and writer.
const (
	readBufferSize  = 128 << 10
	writeBufferSize = 128 << 10
)

// maxExtents bounds the descriptors of one BLOCK_STATUS reply (the spec
// asks for no more than 2^20).
const maxExtents = 1 << 16

// conn is one client connection.
//
// The reader goroutine (serve) runs the handshake, then reads requests and
// either handles one inline (when nothing else is in flight and no further
// request is already buffered, the common case at queue depth 1; a FLUSH
// or FUA write only when the device calls the flush quick) or hands
// it to one of at most Server.Workers worker goroutines, started on demand
// and kept for the connection's life. Before it reads a WRITE's payload or
// hands on a READ, the reader takes the payload's size from the
// connection's budget (Server.MaxBuffered), so the bytes a connection
// holds stay bounded: when they would not, it stops reading the socket
// until earlier requests complete.
//
// Replies from all of them go through send, which serializes them on one
// replyWriter. A reply is written out at once when no other request is in
// flight; otherwise the flusher goroutine writes it out as soon as it is
// scheduled, together with the replies that completed meanwhile, so
// replies that complete together share a write system call. Large READ
// payloads go out with one vectored write, without a copy.
type conn struct {
	s   *Server
	nc  net.Conn
	log *slog.Logger
	br  *bufio.Reader

	ctx    context.Context
	cancel context.CancelFunc

	// Handshake state, owned by the reader goroutine.
	scratch      [64]byte
	noZeroes     bool
	structured   bool
	metaSelected bool
	metaExport   string
	pending      Device // opened by NBD_OPT_INFO, reused by a following GO
	pendingName  string

	// Transmission state, fixed once the export is chosen.
	dev         Device
	devName     string
	size        uint64
	flags       proto.TransmissionFlags
	blockStatus bool // base:allocation was selected for this export

	// Requests.
	inflight sync.WaitGroup // every request being handled
	busy     atomic.Int32   // requests handed to workers, not yet done
	work     chan *request  // unbuffered: a send succeeds only if a worker is idle
	nworkers int            // owned by the reader goroutine

	// budget bounds the payload bytes of the requests in flight.
	budget *budget

	// Replies. wmu guards bw and werr; waiting counts senders waiting for
	// wmu, so the last one flushes; unreplied counts requests dispatched
	// whose reply is not yet written. flushReq wakes the flusher; it is
	// closed once the last request has completed, and flusherDone is
	// closed when the flusher has ended.
	wmu         sync.Mutex
	bw          *replyWriter
	werr        error
	armed       time.Time // when armWrite last moved the write deadline (guarded by wmu)
	waiting     atomic.Int32
	unreplied   atomic.Int32
	flushReq    chan struct{}
	flusherDone chan struct{}

	// mu guards transmitting and stopping.
	mu           sync.Mutex
	transmitting bool
	stopping     bool
}

// request is a request read from the wire, with its write payload.
type request struct {
	proto.Request
	buf  *[]byte // WRITE data, from getBuf
	cost int64   // bytes taken from the connection's budget
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		s:      s,
		nc:     nc,
		log:    s.logger().With("remote", nc.RemoteAddr().String()),
		bw:     newReplyWriter(nc, writeBufferSize),
		work:   make(chan *request),
		budget: newBudget(int64(s.maxBuffered())),
	}
	// The reader polls the socket (Server.BusyPoll) only while no
	// request is with the workers: see poll.go.
	c.br = bufio.NewReaderSize(newPollReader(nc, s.BusyPoll, func() bool { return c.busy.Load() == 0 }), readBufferSize)
	return c
}

// stop asks the connection to wind down for a server shutdown: a
// connection still haggling is closed; one in transmission stops reading
// requests, finishes the ones in flight and closes its device.
func (c *conn) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	if c.transmitting {
		c.nc.SetReadDeadline(time.Now())
	} else {
		c.nc.Close()
	}
}

// abort cancels in-flight requests and closes the socket.
func (c *conn) abort() {
	c.mu.Lock()
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	c.nc.Close()
}

// serve runs the connection to its end.
func (c *conn) serve(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	c.mu.Lock()
	c.ctx, c.cancel = ctx, cancel
	stopping := c.stopping
	c.mu.Unlock()
	defer cancel()
	defer c.nc.Close()
	if stopping {
		return
	}

	timeout := c.s.HandshakeTimeout
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	c.nc.SetDeadline(time.Now().Add(timeout))
	err := c.handshake()
	c.closePending()
	if err != nil {
		if errors.Is(err, errHangUp) {
			c.log.Debug("nbd: handshake ended", "err", err)
		} else {
			c.log.Warn("nbd: handshake failed", "err", err)
		}
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.closeDevice()
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.mu.Lock()
	c.transmitting = true
	stopping = c.stopping
	c.mu.Unlock()
	c.log.Info("nbd: export attached", "export", c.devName, "size", c.size, "structured", c.structured)
	if !stopping {
		c.flushReq = make(chan struct{}, 1)
		c.flusherDone = make(chan struct{})
		go c.flusher()
		c.transmit()
	}
	c.inflight.Wait()
	close(c.work)
	if c.flushReq != nil {
		close(c.flushReq)
		<-c.flusherDone
	}
	c.wmu.Lock()
	if c.werr == nil {
		c.armWrite()
		c.bw.Flush()
	}
	c.wmu.Unlock()
	c.closeDevice()
}

// closeDevice closes the device, which flushes it. It uses a context that
// survives the connection's cancellation so that a shutdown still flushes.
func (c *conn) closeDevice() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), DefaultCloseTimeout)
	defer cancel()
	if err := c.dev.Close(ctx); err != nil {
		c.log.Error("nbd: closing export failed", "export", c.devName, "err", err)
		return
	}
	c.log.Info("nbd: export detached", "export", c.devName)
}

// transmit reads requests until the client disconnects, sends garbage or
// the server stops.
func (c *conn) transmit() {
	var hb [proto.RequestSize]byte
	maxPayload := c.s.maxPayload()
	for {
		if _, err := io.ReadFull(c.br, hb[:]); err != nil {
			c.readEnded(err)
			return
		}
		r, err := proto.ParseRequest(hb[:])
		if err != nil {
			c.log.Warn("nbd: bad request; disconnecting", "err", err)
			return
		}
		req := &request{Request: r}
		switch r.Type {
		case proto.CmdDisc:
			// Spec "NBD_CMD_DISC": handle all outstanding requests, then
			// close; there is no reply.
			c.log.Debug("nbd: client disconnected")
			return
		case proto.CmdWrite:
			if int64(r.Length) > int64(maxPayload) {
				// Spec "Size constraints": a payload too large to be
				// anything but a denial of service MAY be answered with a
				// hard disconnect; the data cannot be skipped cheaply.
				c.log.Warn("nbd: write payload too large; disconnecting", "length", r.Length, "max", maxPayload)
				return
			}
			if err := c.take(req, int64(r.Length)); err != nil {
				c.readEnded(err)
				return
			}
			req.buf = getBuf(int(r.Length))
			// The payload follows a 28-byte header in the reader's buffer:
			// fastcopy keeps its copy off memmove's slow misaligned path.
			if _, err := fastcopy.ReadFull(c.br, *req.buf); err != nil {
				putBuf(req.buf)
				c.budget.release(req.cost)
				c.readEnded(err)
				return
			}
		case proto.CmdRead:
			if int64(r.Length) <= int64(maxPayload) { // a larger one is refused without a buffer
				if err := c.take(req, int64(r.Length)); err != nil {
					c.readEnded(err)
					return
				}
			}
		}
		c.dispatch(req)
	}
}

// take takes n bytes of the connection's budget for r, waiting until
// earlier requests give back enough. It fails only when the connection is
// aborted.
func (c *conn) take(r *request, n int64) error {
	if err := c.budget.acquire(c.ctx, n); err != nil {
		return fmt.Errorf("nbd: waiting for buffer space: %w", err)
	}
	r.cost = n
	return nil
}

// readEnded logs why the request stream ended.
func (c *conn) readEnded(err error) {
	c.mu.Lock()
	stopping := c.stopping
	c.mu.Unlock()
	switch {
	case stopping:
		c.log.Info("nbd: server shutting down; closing connection")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.Canceled):
		c.log.Info("nbd: client went away", "err", err)
	default:
		c.log.Warn("nbd: read", "err", err)
	}
}

// takeMin is the smallest WRITE payload lent to a PayloadTaker: a large
// write's second copy is what lending saves, while a small one would only
// move a buffer of the pool into the device's cache for a long while.
const takeMin = 64 << 10

// dispatchMode selects the dispatch policy for benchmarks: 0 is the
// default heuristic, 1 never handles inline, 2 always does.
var dispatchMode = 0

// dispatch handles r inline or hands it to a worker.
func (c *conn) dispatch(r *request) {
	c.inflight.Add(1)
	c.unreplied.Add(1)
	if dispatchMode == 2 || dispatchMode == 0 && c.busy.Load() == 0 && c.br.Buffered() == 0 && c.quickEnough(r) {
		c.handle(r)
		if behind(r) {
			c.writeBehind(true)
		}
		return
	}
	c.busy.Add(1)
	select {
	case c.work <- r:
		return
	default:
	}
	if c.nworkers < c.s.workers() {
		c.nworkers++
		go c.worker()
	}
	c.work <- r // blocks while every worker is busy: back-pressure on the client
}

// writeBehind lets the device start on a WRITE just answered
// (WriteBehinder) when no other request is in flight: the client is
// turning around, and what it sends next, often a FLUSH, finds the work
// begun. The reader calls it after a WRITE it handled itself (and not
// while the client's next request already waits in its buffer); a worker
// after the last WRITE of a batch, as a database sends several and then
// its FLUSH.
func (c *conn) writeBehind(onReader bool) {
	wb, ok := c.dev.(WriteBehinder)
	if !ok || c.busy.Load() != 0 || c.unreplied.Load() != 0 || onReader && c.br.Buffered() != 0 {
		return
	}
	if err := wb.WriteBehind(c.ctx); err != nil {
		c.log.Debug("nbd: write behind", "export", c.devName, "err", err)
	}
}

// behind reports whether r is a request after which writeBehind may run:
// a WRITE without FUA (a FUA write is flushed already).
func behind(r *request) bool {
	return r.Type == proto.CmdWrite && r.Flags&proto.CmdFlagFUA == 0
}

// inlineReadMax is the longest READ the reader handles itself. A longer
// one goes to a worker even when nothing else is in flight, so that the
// reader takes the next request at once and the two run on both CPUs:
// gathering a 1 MiB read (map lookups, the CRC of every record) and
// writing it to the socket take 600 µs here, during which a reader
// handling it inline leaves the queue depth the client keeps unused. The
// hand-off costs a few microseconds, nothing beside that. fio's 1 MiB
// sequential reads at depth 8 over NBD, six interleaved pairs: 1,625 to
// 1,834 MB/s against 929 to 1,609 inline (the inline runs also lost 2 to
// 40% of the machine to the VM's host, against 0.3 to 2.5%: idling and
// waking one CPU per request costs more than keeping both at work).
const inlineReadMax = 256 << 10

// quickEnough reports whether r may run on the reader: any request but a
// FLUSH, a FUA write or a READ longer than inlineReadMax; a FLUSH or a FUA
// write too when the device says a flush would be quick (QuickFlusher).
func (c *conn) quickEnough(r *request) bool {
	if r.Type == proto.CmdRead {
		return r.Length <= inlineReadMax
	}
	if r.Type != proto.CmdFlush && r.Flags&proto.CmdFlagFUA == 0 {
		return true
	}
	var pending int64
	if r.Type == proto.CmdWrite {
		pending = int64(r.Length)
	}
	qf, ok := c.dev.(QuickFlusher)
	return ok && qf.FlushIsQuick(pending)
}

func (c *conn) worker() {
	for r := range c.work {
		wb := behind(r)
		if wb {
			// Counted until the write behind is over, so that the
			// connection does not close its device under it (r is still
			// counted: this never adds to a zero count).
			c.inflight.Add(1)
		}
		c.handle(r)
		c.busy.Add(-1)
		if wb {
			c.writeBehind(false)
			c.inflight.Done()
		}
	}
}

// handle runs one request and sends its reply.
func (c *conn) handle(r *request) {
	defer c.inflight.Done()
	defer c.budget.release(r.cost)
	defer func() { putBuf(r.buf) }() // nil when lent to the device (TakeWrite)
	if errno, msg := c.check(r); errno != 0 {
		c.replyError(r, errno, msg)
		return
	}
	ctx := c.ctx
	dev := c.dev
	off, n := int64(r.Offset), int64(r.Length)
	var err error
	switch r.Type {
	case proto.CmdRead:
		c.read(r)
		return
	case proto.CmdBlockStatus:
		c.extents(r)
		return
	case proto.CmdWrite:
		if pt, ok := dev.(PayloadTaker); ok && n >= takeMin {
			buf := r.buf
			r.buf = nil // the device gives it back through release
			err = pt.TakeWrite(ctx, *buf, off, func() { putBuf(buf) })
		} else {
			err = dev.WriteAt(ctx, *r.buf, off)
		}
	case proto.CmdFlush:
		err = dev.Flush(ctx)
	case proto.CmdTrim:
		if n > 0 {
			err = dev.Trim(ctx, off, n)
		}
	case proto.CmdWriteZeroes:
		if n > 0 {
			err = dev.WriteZeroes(ctx, off, n, r.Flags&proto.CmdFlagNoHole == 0)
		}
	case proto.CmdCache:
		// A hint; the device has no cache to warm.
	}
	if err == nil && r.Flags&proto.CmdFlagFUA != 0 && r.Type != proto.CmdFlush && r.Type != proto.CmdCache {
		// Spec "Ordering of messages and writes": no reply to a FUA
		// command until its data is persisted.
		err = dev.Flush(ctx)
	}
	if err != nil {
		c.deviceError(r, err)
		return
	}
	c.send(func(w *replyWriter) error {
		var b [proto.SimpleReplySize]byte
		_, err := w.Write(proto.AppendSimpleReply(b[:0], r.Cookie, 0))
		return err
	})
}

// allowedFlags lists the command flags each command accepts (spec "Command
// flags"); FUA is valid on every command.
var allowedFlags = map[proto.Cmd]proto.CmdFlags{
	proto.CmdRead:        proto.CmdFlagFUA | proto.CmdFlagDF,
	proto.CmdWrite:       proto.CmdFlagFUA,
	proto.CmdFlush:       proto.CmdFlagFUA,
	proto.CmdTrim:        proto.CmdFlagFUA,
	proto.CmdCache:       proto.CmdFlagFUA,
	proto.CmdWriteZeroes: proto.CmdFlagFUA | proto.CmdFlagNoHole | proto.CmdFlagFastZero,
	proto.CmdBlockStatus: proto.CmdFlagFUA | proto.CmdFlagReqOne,
}

// check validates a request before it reaches the device (spec "Error
// values"): unknown commands and flags are NBD_EINVAL; writes to a
// read-only export NBD_EPERM; a write past the end NBD_ENOSPC, any other
// command past the end NBD_EINVAL.
func (c *conn) check(r *request) (proto.Errno, string) {
	allowed, known := allowedFlags[r.Type]
	if !known {
		return proto.EINVAL, "unknown command " + r.Type.String()
	}
	if r.Flags&^allowed != 0 || (r.Flags&proto.CmdFlagDF != 0 && !c.structured) {
		return proto.EINVAL, "flag not valid for " + r.Type.String()
	}
	write := r.Type == proto.CmdWrite || r.Type == proto.CmdTrim || r.Type == proto.CmdWriteZeroes
	if write && c.flags&proto.FlagReadOnly != 0 {
		return proto.EPERM, "export is read-only"
	}
	if r.Type == proto.CmdFlush {
		return 0, ""
	}
	if end, ok := r.End(); !ok || end > c.size {
		if r.Type == proto.CmdWrite || r.Type == proto.CmdWriteZeroes {
			return proto.ENOSPC, "request beyond the end of the export"
		}
		return proto.EINVAL, "request beyond the end of the export"
	}
	switch r.Type {
	case proto.CmdRead:
		if int64(r.Length) > int64(c.s.maxPayload()) {
			return proto.EINVAL, "read larger than the maximum payload"
		}
	case proto.CmdBlockStatus:
		if !c.blockStatus {
			return proto.EINVAL, "no metadata context selected"
		}
		if r.Length == 0 {
			return proto.EINVAL, "zero-length block status"
		}
	case proto.CmdWriteZeroes:
		if r.Flags&proto.CmdFlagFastZero != 0 && r.Flags&proto.CmdFlagNoHole != 0 {
			// Zeroes that must stay allocated are written like data: not
			// faster than a WRITE, so fail fast (spec "NBD_CMD_WRITE_ZEROES").
			return proto.ENOTSUP, "fast zero without holes is not faster than a write"
		}
	}
	return 0, ""
}

// read serves NBD_CMD_READ. The whole range is read before any reply byte
// goes out, so a device error always gets a clean error reply.
func (c *conn) read(r *request) {
	if r.Length == 0 {
		// Spec: the behaviour is unspecified but the server SHOULD NOT
		// disconnect; answer success with no data.
		c.send(func(w *replyWriter) error {
			var b [proto.ChunkHeaderSize]byte
			if c.structured {
				_, err := w.Write(proto.AppendNone(b[:0], r.Cookie))
				return err
			}
			_, err := w.Write(proto.AppendSimpleReply(b[:0], r.Cookie, 0))
			return err
		})
		return
	}
	if vr, ok := c.dev.(VectorReader); ok && r.Length >= vectorMin {
		c.readVec(r, vr)
		return
	}
	buf := getBuf(int(r.Length))
	defer putBuf(buf)
	if err := c.dev.ReadAt(c.ctx, *buf, int64(r.Offset)); err != nil {
		c.deviceError(r, err)
		return
	}
	c.send(func(w *replyWriter) error {
		var b [proto.OffsetDataHeaderSize]byte
		var hdr []byte
		if c.structured {
			// One content chunk, final: nothing can fail after it starts.
			hdr = proto.AppendOffsetDataHeader(b[:0], proto.ReplyFlagDone, r.Cookie, r.Offset, len(*buf))
		} else {
			hdr = proto.AppendSimpleReply(b[:0], r.Cookie, 0)
		}
		return w.WriteData(hdr, *buf)
	})
}

// readVec serves a large NBD_CMD_READ through the device's ReadVec: the
// reply goes out from the device's own buffers. As in read, nothing is
// sent before the whole range was read, so a device error always gets a
// clean error reply; slices that do not add up to the request's length
// (a device bug) get an EIO reply rather than a desynchronized stream.
func (c *conn) readVec(r *request, vr VectorReader) {
	replied := false
	err := vr.ReadVec(c.ctx, int64(r.Offset), int(r.Length), func(bufs [][]byte) error {
		total := 0
		for _, b := range bufs {
			total += len(b)
		}
		if total != int(r.Length) {
			return fmt.Errorf("nbd: device returned %d bytes for a read of %d", total, r.Length) // reported as EIO
		}
		replied = true
		c.send(func(w *replyWriter) error {
			var b [proto.OffsetDataHeaderSize]byte
			var hdr []byte
			if c.structured {
				hdr = proto.AppendOffsetDataHeader(b[:0], proto.ReplyFlagDone, r.Cookie, r.Offset, total)
			} else {
				hdr = proto.AppendSimpleReply(b[:0], r.Cookie, 0)
			}
			return w.WriteVec(hdr, bufs)
		})
		return nil
	})
	if err != nil && !replied {
		c.deviceError(r, err)
	}
}

// errStopExtents stops Device.Extents once the reply is full.
var errStopExtents = errors.New("nbd: enough extents")

// extents serves NBD_CMD_BLOCK_STATUS for base:allocation: holes are
// NBD_STATE_HOLE|NBD_STATE_ZERO, data is 0. Gaps the device leaves are
// reported as data (status 0 is always safe).
func (c *conn) extents(r *request) {
	limit := maxExtents
	if r.Flags&proto.CmdFlagReqOne != 0 {
		limit = 1
	}
	start, end := int64(r.Offset), int64(r.Offset)+int64(r.Length)
	next := start
	var ext []proto.Extent
	add := func(length int64, status uint32) bool {
		if n := len(ext); n > 0 && ext[n-1].Status == status {
			ext[n-1].Length += uint32(length) // the sum stays within the request length
			return true
		}
		if len(ext) == limit {
			return false
		}
		ext = append(ext, proto.Extent{Length: uint32(length), Status: status})
		return true
	}
	err := c.dev.Extents(c.ctx, start, end-start, func(off, length int64, hole bool) error {
		e := min(off+length, end)
		if e <= next {
			return nil // overlaps what was already reported
		}
		if off > next {
			if !add(off-next, 0) {
				return errStopExtents
			}
			next = off
		}
		status := uint32(0)
		if hole {
			status = proto.StateHole | proto.StateZero
		}
		if !add(e-next, status) {
			return errStopExtents
		}
		next = e
		if next >= end {
			return errStopExtents
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopExtents) {
		c.deviceError(r, err)
		return
	}
	if next < end && len(ext) < limit || len(ext) == 0 {
		add(end-next, 0)
	}
	c.send(func(w *replyWriter) error {
		_, err := w.Write(proto.AppendBlockStatus(nil, proto.ReplyFlagDone, r.Cookie, metaContextID, ext))
		return err
	})
}

// deviceError reports a device error for r.
func (c *conn) deviceError(r *request, err error) {
	_, errno := protocolError(err, c.s.Classify)
	if c.ctx.Err() == nil {
		c.log.Warn("nbd: device error", "export", c.devName, "cmd", r.Type, "offset", r.Offset, "length", r.Length, "err", err, "errno", errno)
	}
	c.replyError(r, errno, err.Error())
}

// replyError sends an error reply: a structured NBD_REPLY_TYPE_ERROR chunk
// with a message when structured replies were negotiated (the spec
// prefers it, and READ requires it), a simple reply otherwise.
func (c *conn) replyError(r *request, errno proto.Errno, msg string) {
	c.send(func(w *replyWriter) error {
		var b [proto.ChunkHeaderSize + 6 + 128]byte
		if c.structured {
			if len(msg) > 128 {
				msg = msg[:128]
			}
			if !proto.ValidString(msg) {
				msg = ""
			}
			_, err := w.Write(proto.AppendError(b[:0], proto.ReplyFlagDone, r.Cookie, errno, msg))
			return err
		}
		_, err := w.Write(proto.AppendSimpleReply(b[:0], r.Cookie, errno))
		return err
	})
}

// send writes the reply to one request (exactly one per request: it
// also counts the request as replied). Senders queue on wmu; the last in
// the queue writes the replies out, at once if no other request is in
// flight (queue depth 1 pays no hand-off), else through the flusher, so
// that replies completing together share a write system call. A write
// error is sticky and closes the socket (the reader then ends).
func (c *conn) send(fn func(*replyWriter) error) {
	c.waiting.Add(1)
	c.wmu.Lock()
	last := c.waiting.Add(-1) == 0
	others := c.unreplied.Add(-1) > 0
	if c.werr == nil {
		c.armWrite()
		err := fn(c.bw)
		if err == nil && last && c.bw.Buffered() > 0 {
			if others && c.flushReq != nil {
				select {
				case c.flushReq <- struct{}{}:
				default: // a flush is already due; it will take this reply too
				}
			} else {
				err = c.bw.Flush()
			}
		}
		if err != nil {
			c.werr = err
			c.nc.Close()
		}
	}
	c.wmu.Unlock()
}

// flusher writes out the replies send left buffered, until flushReq is
// closed. It first yields once, so that handlers already runnable can add
// their replies to the same write: measured with fio (4 KiB random reads
// at queue depth 32), that takes write system calls from 0.75 per reply
// (a flush per reply) to about 0.15. The wait is bounded by the
// scheduler, never by another request's device call.
func (c *conn) flusher() {
	defer close(c.flusherDone)
	for range c.flushReq {
		runtime.Gosched()
		c.wmu.Lock()
		if c.werr == nil {
			c.armWrite()
			if err := c.bw.Flush(); err != nil {
				c.werr = err
				c.nc.Close()
			}
		}
		c.wmu.Unlock()
	}
}

// armWrite moves the socket's write deadline Server.WriteTimeout ahead,
// unless it did so less than writeDeadlineSlack ago (the deadline is then
// at least WriteTimeout minus the slack away). A client that stops
// reading its replies makes a write block until the deadline, fail, and
// close the connection. Called with wmu held, before replies are written.
func (c *conn) armWrite() {
	now := time.Now()
	if now.Sub(c.armed) < writeDeadlineSlack {
		return
	}
	c.armed = now
	c.nc.SetWriteDeadline(now.Add(c.s.writeTimeout()))
}
