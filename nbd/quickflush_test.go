package nbd

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"cairn/nbd/proto"
)

// flushGateDevice blocks every Flush until gate is closed, reports each
// flush that has started, and says whether a flush would be quick
// (QuickFlusher) as quick tells it.
type flushGateDevice struct {
	Device
	quick   bool
	started chan struct{}
	gate    chan struct{}
}

func (d *flushGateDevice) FlushIsQuick(int64) bool { return d.quick }

func (d *flushGateDevice) Flush(ctx context.Context) error {
	d.started <- struct{}{}
	select {
	case <-d.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return d.Device.Flush(ctx)
}

// A FLUSH that arrives alone runs on the connection's reader when the
// device calls it quick (a READ sent meanwhile waits for it), and on a
// worker otherwise (the READ is served while the FLUSH is stuck), so that
// a long flush never holds up other requests.
func TestQuickFlushRunsOnTheReader(t *testing.T) {
	for _, quick := range []bool{true, false} {
		exp, _ := testExports()
		dev := &flushGateDevice{quick: quick, started: make(chan struct{}, 4), gate: make(chan struct{})}
		fe := &wrapExports{exp, func(d Device) Device { dev.Device = d; return dev }}
		_, addr := startServer(t, exp, func(s *Server) { s.Exports = fe })
		var once sync.Once
		open := func() { once.Do(func() { close(dev.gate) }) }
		t.Cleanup(open) // before the server's shutdown, should the test fail
		rc := connect(t, addr, "disk", true)
		fc := rc.send(proto.Request{Type: proto.CmdFlush}, nil)
		select {
		case <-dev.started:
		case <-time.After(time.Minute):
			t.Fatalf("quick=%v: the FLUSH never reached the device", quick)
		}
		rdc := rc.send(proto.Request{Type: proto.CmdRead, Offset: 0, Length: 4096}, nil)
		if quick {
			// The reader is inside the FLUSH: nothing can come back
			// before the gate opens.
			rc.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := rc.br.Peek(1); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("quick flush: a reply (or %v) came while the FLUSH was stuck: it did not run on the reader", err)
			}
		} else {
			rc.c.SetReadDeadline(time.Now().Add(time.Minute))
			if r := rc.recv(map[uint64]uint32{rdc: 4096}); r.cookie != rdc || r.errno != 0 {
				t.Fatalf("slow flush: got reply %d (%v), want the READ %d served while the FLUSH is stuck", r.cookie, r.errno, rdc)
			}
		}
		rc.c.SetReadDeadline(time.Now().Add(time.Minute))
		open()
		want := map[uint64]bool{fc: true}
		if quick {
			want[rdc] = true
		}
		for len(want) > 0 {
			r := rc.recv(map[uint64]uint32{rdc: 4096})
			if !want[r.cookie] || r.errno != 0 {
				t.Fatalf("quick=%v: unexpected reply %d (%v)", quick, r.cookie, r.errno)
			}
			delete(want, r.cookie)
		}
	}
}
