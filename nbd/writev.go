package nbd

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Large replies are written with writev system calls made through
// syscall.RawSyscall, outside the runtime's system-call state.
//
// A 1 MiB READ reply takes one writev of about 200 µs here (the kernel
// copies the payload and, on loopback, runs the receiver's side of TCP).
// A goroutine inside syscall.Syscall that long is one the runtime's
// monitor thread (sysmon) finds "in a system call" on its next pass, and
// when no processor is idle it takes the processor away from it (handoffp)
// and keeps polling every 20 µs instead of backing off. Under fio's 1 MiB
// sequential reads at queue depth 8, sysmon's sleeps and wake-ups alone
// took 7% of the server's CPU (perf: finish_task_switch under
// runtime.sysmon's nanosleep), each a timer interrupt and a VM exit on
// this machine. A raw writev on the non-blocking socket never blocks: it
// copies what the socket buffer takes and returns, and the goroutine then
// waits for writability through the runtime's poller (RawConn.Write), as
// net.Buffers would. To the scheduler the copy is computation, like a CRC
// of the same bytes.

// maxIovecs is the most iovecs one writev takes (Linux's UIO_MAXIOV).
const maxIovecs = 1024

// rawVecWriter writes vectors to a socket with raw writev calls.
type rawVecWriter struct {
	raw syscall.RawConn
	iov []syscall.Iovec // scratch, reused
}

// newRawVecWriter returns a rawVecWriter for w, or nil when w is not a
// socket that gives access to its descriptor.
func newRawVecWriter(w io.Writer) *rawVecWriter {
	nc, ok := w.(net.Conn)
	if !ok {
		return nil
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return &rawVecWriter{raw: raw}
}

// writeVec writes the concatenation of bufs, all of it or an error. The
// socket's write deadline applies while it waits for room. After a short
// write it reslices the first unsent element of bufs in place.
func (w *rawVecWriter) writeVec(bufs [][]byte) error {
	for len(bufs) > 0 {
		w.iov = w.iov[:0]
		for _, b := range bufs {
			if len(w.iov) == maxIovecs {
				break
			}
			if len(b) == 0 {
				continue
			}
			v := syscall.Iovec{Base: unsafe.SliceData(b)}
			v.SetLen(len(b))
			w.iov = append(w.iov, v)
		}
		if len(w.iov) == 0 {
			return nil
		}
		var n int
		var errno syscall.Errno
		err := w.raw.Write(func(fd uintptr) bool {
			raceReleaseIO(fd)
			for {
				r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(unsafe.SliceData(w.iov))), uintptr(len(w.iov)))
				switch e {
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					return false // wait until the socket takes more
				}
				n, errno = int(r), e
				return true
			}
		})
		clear(w.iov) // drop references to the caller's buffers
		if err != nil {
			return err
		}
		if errno != 0 {
			return os.NewSyscallError("writev", errno)
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		bufs = consumeVec(bufs, n)
	}
	return nil
}

// consumeVec drops the first n bytes of bufs, returning what is left.
func consumeVec(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 && n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}
