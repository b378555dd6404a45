// Package nbd serves Cairn's virtual disks over the Network Block Device
// protocol (fixed newstyle handshake; see package nbd/proto for the wire
// formats and the spec sections they follow).
//
// A [Server] accepts TCP connections, negotiates an export with each client
// (NBD_OPT_GO / INFO / LIST / EXPORT_NAME / STRUCTURED_REPLY /
// SET_META_CONTEXT "base:allocation"), then serves READ, WRITE (with FUA),
// FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS, CACHE and DISC against the
// [Device] that [Exports] opened for it. Many requests are in flight per
// connection and replies go out in completion order through one buffered
// writer: replies that complete together share a write system call, and
// large READ payloads go out with one vectored write, without a copy. The
// payload bytes a connection holds are bounded by [Server.MaxBuffered].
//
// The package declares what it needs ([Device], [Exports]) so that a
// volume.Volume is a Device as it stands; it imports no consensus or volume
// code.
package nbd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Device is an opened export: a range of bytes that can be read and
// written. A volume.Volume satisfies it. Methods are called concurrently.
// The server checks every request against Size() before calling, so the
// device sees only in-range offsets. Errors are mapped to NBD error values
// by the server (see the Err* kinds, blocks' sentinels and
// Server.Classify).
type Device interface {
	// Size is the device size in bytes. It must not change while the
	// device is open.
	Size() int64
	// BlockSize is the preferred I/O size, advertised to clients.
	BlockSize() int
	// ReadOnly reports whether writes are refused.
	ReadOnly() bool
	// ReadAt fills p from off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at off; it may be volatile until Flush. The device
	// must not keep p after returning.
	WriteAt(ctx context.Context, p []byte, off int64) error
	// Trim discards a range; it reads as zeros afterwards.
	Trim(ctx context.Context, off, length int64) error
	// WriteZeroes zeroes a range; with mayTrim it may become a hole.
	WriteZeroes(ctx context.Context, off, length int64, mayTrim bool) error
	// Flush makes every completed write durable.
	Flush(ctx context.Context) error
	// Extents reports consecutive extents covering [off, off+length), each
	// allocated data or a hole that reads as zeros. fn may return an error
	// to stop early; Extents then returns that error.
	Extents(ctx context.Context, off, length int64, fn func(off, length int64, hole bool) error) error
	// Close flushes and releases the device. The server calls it exactly
	// once, after the last request on the connection has completed.
	Close(ctx context.Context) error
}

// VectorReader is an optional capability of a Device: ReadVec reads
// [off, off+n) like ReadAt, but instead of copying the bytes into a
// buffer it calls fn once with slices whose concatenation is exactly
// those n bytes, valid only during the call and not to be modified. The
// server then sends a large READ reply straight from them with one
// vectored write, saving a copy of every byte read. ReadVec returns
// ReadAt's errors before calling fn (and then does not call it), or else
// fn's error. A volume.Volume of package volume has the method. The
// slices may be pages of mapped files, so the server only hands them to
// the kernel (a vectored write), which turns a page it cannot read into
// an error (EFAULT) instead of a fault.
type VectorReader interface {
	ReadVec(ctx context.Context, off int64, n int, fn func(bufs [][]byte) error) error
}

// PayloadTaker is an optional capability of a Device: TakeWrite is
// WriteAt for a payload the device may keep, in place, instead of copying
// it: the server hands over the WRITE's buffer and does not touch it
// again; the device calls release exactly once (from any goroutine, before
// or after returning) when it no longer references the buffer, and the
// server then reuses it. The server lends payloads of at least takeMin
// bytes (a large write then costs one copy, from the socket, instead of
// two). A volume.Volume of package volume has the method.
type PayloadTaker interface {
	TakeWrite(ctx context.Context, p []byte, off int64, release func()) error
}

// QuickFlusher is an optional capability of a Device: FlushIsQuick
// reports whether a Flush started after writing pending more bytes would
// be quick (little written data to push and sync: about one disk sync).
// The server asks with pending 0 for a FLUSH and with the payload's
// length for a FUA write. It runs a FLUSH, or a FUA write, on the
// connection's reader when nothing else is in flight and the device says
// so, instead of handing it to a worker goroutine: at queue depth 1 that hand-off (waking a worker, then the
// reader again) cost as much CPU as the rest of a write+FLUSH pair. A
// FLUSH it does not call quick goes to a worker, so that a long one (a
// sync after a bulk write) does not hold up the requests that arrive
// meanwhile. A volume.Volume of package volume has the method.
type QuickFlusher interface {
	FlushIsQuick(pending int64) bool
}

// WriteBehinder is an optional capability of a Device: the server calls
// WriteBehind after it answered a WRITE (not FUA) while no other request
// was in flight, which is where a client at queue depth 1, or one that
// sends a few writes and waits for them, turns around to send its next
// request, often a FLUSH. The device may start making the write durable
// then (write its data out, start the disk) so that the FLUSH finds that
// work begun. It runs on the goroutine that answered the WRITE (the
// connection's reader, or a worker), so the connection's next request may
// wait for it: it should return quickly, and do nothing when its workload
// does not flush often. It promises nothing: an error is the device's to
// report again at the next Flush, and the server only logs it. A
// volume.Volume of package volume has the method.
type WriteBehinder interface {
	WriteBehind(ctx context.Context) error
}

// ExportInfo describes an export for NBD_OPT_LIST.
type ExportInfo struct {
	Name        string
	Description string // shown to humans; may be empty
}

// Exports lists and opens exports. Safe for concurrent use.
type Exports interface {
	// List returns every export a client may open.
	List(ctx context.Context) ([]ExportInfo, error)
	// Open opens an export for one connection. Errors: wrap ErrNotFound,
	// ErrDenied or ErrShutdown (or let Server.Classify map them).
	Open(ctx context.Context, name string) (Device, error)
}

// Defaults of the Server's tunables.
const (
	DefaultMaxPayload       = 32 << 20
	DefaultMaxConns         = 1024
	DefaultHandshakeTimeout = time.Minute
	DefaultWorkers          = 16
	DefaultMaxBuffered      = 32 << 20
	DefaultCloseTimeout     = time.Minute
	DefaultWriteTimeout     = time.Minute
)

// writeDeadlineSlack is how often, at most, a connection moves its write
// deadline (see conn.armWrite): a deadline is a timer update in the
// runtime, which the write path need not pay per reply.
const writeDeadlineSlack = time.Second

// Server serves exports over NBD. Set the fields before calling Serve and
// do not change them afterwards. The zero value with Exports set is usable.
type Server struct {
	// Exports lists and opens the exports. Required.
	Exports Exports
	// DefaultExport is the export name a client gets when it asks for the
	// empty name. If empty, the empty name is passed to Exports.Open as is.
	DefaultExport string
	// Logger receives connection events. Nil discards them.
	Logger *slog.Logger
	// MaxConns bounds concurrent connections; further ones are closed at
	// once. 0 means DefaultMaxConns.
	MaxConns int
	// MaxPayload bounds the length of one READ or WRITE (advertised as the
	// maximum block size). A larger WRITE closes the connection; a larger
	// READ gets NBD_EINVAL. Other commands (TRIM, WRITE_ZEROES,
	// BLOCK_STATUS) may cover any range. 0 means DefaultMaxPayload.
	MaxPayload int
	// Workers bounds the requests one connection handles concurrently
	// besides the one its reader may handle inline. 0 means DefaultWorkers.
	Workers int
	// MaxBuffered bounds the READ and WRITE payload bytes one connection
	// holds at once (write data read but not yet written to the device,
	// read data not yet sent). A request that would go over it waits, and
	// the connection stops reading from the socket meanwhile, which pushes
	// back on the client; a single request larger than MaxBuffered is
	// still served, alone. With 1 MiB writes at queue depth 8 a
	// connection holds 8 MiB. 0 means DefaultMaxBuffered. The server's
	// payload memory is then at most MaxConns × max(MaxBuffered,
	// MaxPayload), plus the pooled buffers the garbage collector has not
	// yet reclaimed.
	MaxBuffered int
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN: set it only if every
	// connection to one export sees the same data and a FLUSH on one
	// covers writes completed on all.
	MultiConn bool
	// BusyPoll is how long a connection's reader keeps reading its socket
	// after finding it empty, before it parks, while the connection has
	// no request in flight: a client at queue depth 1 then finds the
	// reader awake, which on a VM spares a wake-up per request (see
	// poll.go). It costs up to BusyPoll of CPU per request. 0 turns it
	// off.
	BusyPoll time.Duration
	// LoopbackCongestion is the TCP congestion control of connections
	// from a loopback address (a client on this machine), with reno as
	// the fallback when the kernel refuses it; "" keeps the system's
	// default. A pacing one (BBR) costs a local client a timer interrupt
	// per burst of segments and a window sized to a round trip of
	// microseconds (see congestion.go). Other connections always keep the
	// system's default.
	LoopbackCongestion string
	// HandshakeTimeout bounds option haggling. 0 means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds how long a reply's write may block on a client
	// that does not read its socket; the connection is then closed (its
	// requests finish, its device is closed and flushed). It frees what
	// such a client holds: goroutines, payload buffers, and the pins of
	// READ replies sent from the store's mappings. 0 means
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Classify, if set, maps errors from Exports and devices that this
	// package does not know (say volume.ErrAttached or
	// volume.ErrOutOfRange) to one of the Err* kinds, or returns nil to
	// fall back to the default mapping (unknown errors are NBD_EIO).
	Classify func(error) error

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	shutdown  bool
	done      chan struct{} // closed by Shutdown
	wg        sync.WaitGroup
	active    atomic.Int64
	ccWarned  atomic.Bool // the LoopbackCongestion warning was logged
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (s *Server) writeTimeout() time.Duration {
	if s.WriteTimeout > 0 {
		return s.WriteTimeout
	}
	return DefaultWriteTimeout
}

func (s *Server) maxPayload() int {
	if s.MaxPayload > 0 {
		return s.MaxPayload
	}
	return DefaultMaxPayload
}

func (s *Server) maxBuffered() int {
	if s.MaxBuffered > 0 {
		return s.MaxBuffered
	}
	return DefaultMaxBuffered
}

func (s *Server) workers() int {
	if s.Workers > 0 {
		return s.Workers
	}
	return DefaultWorkers
}

func (s *Server) init() {
	if s.done == nil {
		s.done = make(chan struct{})
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[*conn]struct{})
	}
}

// ActiveConns returns the number of connections being served.
func (s *Server) ActiveConns() int { return int(s.active.Load()) }

// Serve accepts connections on l and serves each in its own goroutine until
// Shutdown is called or ctx is cancelled (which shuts the server down as
// Shutdown with an expired context would: in-flight requests are
// abandoned, devices are still closed). It closes l before returning and
// returns ErrServerClosed after a shutdown, or the error that stopped
// accepting. Serve may be called on several listeners at once.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if s.Exports == nil {
		return errors.New("nbd: Server.Exports is nil")
	}
	s.mu.Lock()
	s.init()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	stop := context.AfterFunc(ctx, func() {
		expired, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.Shutdown(expired)
	})
	defer stop()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()

	log := s.logger()
	maxConns := s.MaxConns
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			select {
			case <-s.done:
				return ErrServerClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("nbd: accept", "err", err, "retry", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("nbd: accept: %w", err)
		}
		backoff = 0
		if int(s.active.Load()) >= maxConns {
			log.Warn("nbd: too many connections; refusing", "remote", nc.RemoteAddr(), "max", maxConns)
			nc.Close()
			continue
		}
		if s.LoopbackCongestion != "" && isLoopback(nc) {
			if err := tuneCongestion(nc, s.LoopbackCongestion); err != nil && !s.ccWarned.Swap(true) {
				log.Warn("nbd: could not set the congestion control of loopback connections; keeping the system's", "want", s.LoopbackCongestion, "err", err)
			}
		}
		c := newConn(s, nc)
		s.mu.Lock()
		if s.shutdown {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.active.Add(1)
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				s.active.Add(-1)
			}()
			c.serve(ctx)
		}()
	}
}

// Shutdown stops accepting connections, ends option haggling on
// connections that have not chosen an export, lets in-flight requests
// finish (requests that arrive meanwhile are not read), then flushes and
// closes every device and connection. If ctx ends first, in-flight
// requests are cancelled and connections closed at once; devices are still
// closed (each with its own DefaultCloseTimeout). Shutdown returns when
// every connection goroutine has exited, or ctx's error if it had to cut
// things short.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.init()
	if !s.shutdown {
		s.shutdown = true
		close(s.done)
	}
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()

	finished := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.abort()
	}
	s.mu.Unlock()
	<-finished
	return ctx.Err()
}
