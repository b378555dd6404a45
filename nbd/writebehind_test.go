package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn/nbd/proto"
)

// behindDevice counts WriteBehind calls; each waits for gate and then
// fails (the server must only log that).
type behindDevice struct {
	Device
	calls atomic.Int32
	gate  chan struct{}
}

func (d *behindDevice) WriteBehind(ctx context.Context) error {
	d.calls.Add(1)
	select {
	case <-d.gate:
	case <-ctx.Done():
	}
	return errors.New("test: write behind failed")
}

// TestWriteBehind: after answering a WRITE at queue depth 1, on the
// reader or on a worker, the server calls the device's WriteBehind, once,
// after the reply has gone out (the
// client has it while WriteBehind is still blocked); not after a FUA
// write, a READ, a FLUSH, a TRIM or a WRITE_ZEROES; and a WriteBehind
// error changes nothing the client sees.
func TestWriteBehind(t *testing.T) {
	for _, mode := range []int{0, 1} { // the reader handles the WRITE, then a worker does
		t.Run(fmt.Sprintf("dispatchMode=%d", mode), func(t *testing.T) {
			defer func(m int) { dispatchMode = m }(dispatchMode)
			dispatchMode = mode
			testWriteBehind(t)
		})
	}
}

func testWriteBehind(t *testing.T) {
	exp, _ := testExports()
	dev := &behindDevice{gate: make(chan struct{})}
	fe := &wrapExports{exp, func(d Device) Device { dev.Device = d; return dev }}
	_, addr := startServer(t, exp, func(s *Server) { s.Exports = fe })
	var once sync.Once
	open := func() { once.Do(func() { close(dev.gate) }) }
	t.Cleanup(open)
	rc := connect(t, addr, "disk", true)
	rc.c.SetReadDeadline(time.Now().Add(time.Minute))
	ok := func(cookie uint64, readLen uint32) result {
		t.Helper()
		r := rc.recv(map[uint64]uint32{cookie: readLen})
		if r.cookie != cookie || r.errno != 0 {
			t.Fatalf("reply %d (%v %s), want %d without error", r.cookie, r.errno, r.msg, cookie)
		}
		return r
	}
	data := bytes.Repeat([]byte("cairn!"), 4096/6+1)[:4096]
	w := rc.send(proto.Request{Type: proto.CmdWrite, Offset: 8192, Length: 4096}, data)
	ok(w, 0) // while the write behind waits at the gate
	deadline := time.Now().Add(time.Minute)
	for dev.calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := dev.calls.Load(); n != 1 {
		t.Fatalf("%d write behind calls after a WRITE, want 1", n)
	}
	open()
	ok(rc.send(proto.Request{Type: proto.CmdFlush}, nil), 0)
	ok(rc.send(proto.Request{Type: proto.CmdWrite, Flags: proto.CmdFlagFUA, Offset: 0, Length: 4096}, data), 0)
	ok(rc.send(proto.Request{Type: proto.CmdTrim, Offset: 0, Length: 4096}, nil), 0)
	ok(rc.send(proto.Request{Type: proto.CmdWriteZeroes, Offset: 0, Length: 4096}, nil), 0)
	r := ok(rc.send(proto.Request{Type: proto.CmdRead, Offset: 8192, Length: 4096}, nil), 4096)
	if !bytes.Equal(r.data, data) {
		t.Fatal("the data written before the failed write behind reads back wrong")
	}
	if n := dev.calls.Load(); n != 1 {
		t.Fatalf("%d write behind calls, want still 1: only a plain WRITE asks for one", n)
	}
}
