package nbd

import (
	"io"
	"net"

	"cairn/internal/fastcopy"
)

// vectorMin is the payload size from which replyWriter.WriteData sends the
// payload straight from the caller's buffer (one writev with whatever is
// pending and the header) instead of copying it into its buffer.
const vectorMin = 32 << 10

// replyWriter buffers the messages of one connection and writes them out
// on Flush. Unlike a bufio.Writer it can send a large payload with the
// bytes already buffered and a header in front of it as one writev,
// without copying the payload. It is not safe for concurrent use (conn
// guards it with wmu).
type replyWriter struct {
	w    io.Writer // the connection
	buf  []byte    // pending bytes; cap is the buffer size
	vec  [3][]byte // scratch for bufs
	bufs net.Buffers
	many [][]byte      // scratch for WriteVec's bufs
	raw  *rawVecWriter // WriteVec's writer when w is a socket (writev.go), else nil
}

func newReplyWriter(w io.Writer, size int) *replyWriter {
	return &replyWriter{w: w, buf: make([]byte, 0, size), raw: newRawVecWriter(w)}
}

// Buffered returns the number of bytes waiting for Flush.
func (w *replyWriter) Buffered() int { return len(w.buf) }

// Write buffers p, writing out what is pending first if p does not fit.
// A p larger than the buffer is written through.
func (w *replyWriter) Write(p []byte) (int, error) {
	if len(w.buf)+len(p) <= cap(w.buf) {
		w.buf = appendData(w.buf, p)
		return len(p), nil
	}
	if len(p) > cap(w.buf) {
		if err := w.writeVec(nil, p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if err := w.Flush(); err != nil {
		return 0, err
	}
	w.buf = appendData(w.buf, p)
	return len(p), nil
}

// appendData appends p to buf, which has room for it, through fastcopy: a
// structured reply's payload follows its 28 bytes of header, off the
// alignment memmove's fast path wants for a 4 KiB copy.
func appendData(buf, p []byte) []byte {
	n := len(buf)
	buf = buf[:n+len(p)]
	fastcopy.Copy(buf[n:], p)
	return buf
}

// WriteData writes a header followed by a payload. A small payload is
// buffered like Write; one of vectorMin bytes or more goes out at once,
// behind the pending bytes and hdr, in one vectored write, and is not
// retained.
func (w *replyWriter) WriteData(hdr, data []byte) error {
	if len(data) < vectorMin && len(w.buf)+len(hdr)+len(data) <= cap(w.buf) {
		w.buf = append(w.buf, hdr...)
		w.buf = appendData(w.buf, data)
		return nil
	}
	if len(data) < vectorMin {
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		_, err := w.Write(data)
		return err
	}
	return w.writeVec(hdr, data)
}

// writeVec writes the pending bytes, hdr and data with one vectored write
// (where the connection supports it) and empties the buffer.
func (w *replyWriter) writeVec(hdr, data []byte) error {
	w.bufs = w.vec[:0]
	if len(w.buf) > 0 {
		w.bufs = append(w.bufs, w.buf)
	}
	if len(hdr) > 0 {
		w.bufs = append(w.bufs, hdr)
	}
	w.bufs = append(w.bufs, data)
	err := w.out(w.bufs)
	w.buf = w.buf[:0]
	w.vec = [3][]byte{} // drop references to the caller's buffers
	return err
}

// out writes the concatenation of bufs to the connection: with raw
// writev calls on a socket (writev.go), else through net.Buffers. bufs
// may be resliced.
func (w *replyWriter) out(bufs [][]byte) error {
	if w.raw != nil {
		return w.raw.writeVec(bufs)
	}
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(w.w)
	return err
}

// Flush writes out the pending bytes.
func (w *replyWriter) Flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	w.vec[0] = w.buf
	err := w.out(w.vec[:1])
	w.vec[0] = nil
	w.buf = w.buf[:0]
	return err
}

// WriteVec writes a header followed by a payload given in pieces (their
// concatenation), with the pending bytes, in one vectored write (where
// the connection supports it; the kernel takes up to 1024 pieces per
// call, net.Buffers loops over more). Nothing is retained.
func (w *replyWriter) WriteVec(hdr []byte, data [][]byte) error {
	w.many = w.many[:0]
	if len(w.buf) > 0 {
		w.many = append(w.many, w.buf)
	}
	if len(hdr) > 0 {
		w.many = append(w.many, hdr)
	}
	for _, d := range data {
		if len(d) > 0 {
			w.many = append(w.many, d)
		}
	}
	all := w.many
	err := w.out(w.many)
	w.buf = w.buf[:0]
	clear(all) // drop references to the caller's buffers
	w.many = all[:0]
	return err
}
