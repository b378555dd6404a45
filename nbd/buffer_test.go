package nbd

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"cairn/nbd/proto"
)

// gateDevice blocks every WriteAt until gate is closed, and reports each
// write that has started.
type gateDevice struct {
	Device
	started chan int64 // offsets of writes that reached the device
	gate    chan struct{}
}

func (d *gateDevice) WriteAt(ctx context.Context, p []byte, off int64) error {
	d.started <- off
	select {
	case <-d.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return d.Device.WriteAt(ctx, p, off)
}

type gateExports struct {
	*memExports
	started chan int64
	gate    chan struct{}
}

func (e *gateExports) Open(ctx context.Context, name string) (Device, error) {
	d, err := e.memExports.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return &gateDevice{Device: d, started: e.started, gate: e.gate}, nil
}

func newGateExports() (*gateExports, *memDevice) {
	exp, disk := testExports()
	return &gateExports{memExports: exp, started: make(chan int64, 64), gate: make(chan struct{})}, disk
}

// With MaxBuffered = 64 KiB, a client that pipelines sixteen 16 KiB writes
// gets only four of them to the device while the device is stuck: the
// reader stops taking payloads once four are held. Once the device moves
// on, every write completes with the data the client sent.
func TestMaxBufferedBoundsWrites(t *testing.T) {
	ge, disk := newGateExports()
	_, addr := startServer(t, ge.memExports, func(s *Server) { s.Exports = ge; s.MaxBuffered = 64 << 10 })
	rc := connect(t, addr, "disk", true)
	const n, size = 16, 16 << 10
	want := make([]byte, n*size)
	for i := range want {
		want[i] = byte(rand.Uint32())
	}
	// FUA keeps each write off the reader's inline path, so the reader
	// stays free to take more requests while the device is stuck.
	go func() {
		for i := range n {
			rc.send(proto.Request{Type: proto.CmdWrite, Flags: proto.CmdFlagFUA, Offset: uint64(i * size), Length: size}, want[i*size:(i+1)*size])
		}
	}()
	for range 4 {
		select {
		case <-ge.started:
		case <-time.After(time.Minute):
			t.Fatal("fewer than four writes reached the device")
		}
	}
	select {
	case off := <-ge.started:
		t.Fatalf("a fifth write (offset %d) reached the device with 64 KiB already held", off)
	case <-time.After(200 * time.Millisecond):
	}
	close(ge.gate)
	for range n {
		if r := rc.recv(nil); r.errno != 0 {
			t.Fatalf("write %d: %v %s", r.cookie, r.errno, r.msg)
		}
	}
	if got, _ := disk.snapshot(); !bytes.Equal(got[:n*size], want) {
		t.Fatal("disk content differs from the writes")
	}
}

// A request larger than MaxBuffered is still served (alone), whether it is
// a write or a read, and requests queued behind it go through after it.
func TestMaxBufferedOversizeRequest(t *testing.T) {
	exp, _ := testExports()
	_, addr := startServer(t, exp, func(s *Server) { s.MaxBuffered = 4096 })
	for _, structured := range []bool{false, true} {
		rc := connect(t, addr, "disk", structured)
		big := bytes.Repeat([]byte{0x5A}, 256<<10)
		small := bytes.Repeat([]byte{0xA5}, 8192)
		c1 := rc.send(proto.Request{Type: proto.CmdWrite, Offset: 0, Length: uint32(len(big))}, big)
		c2 := rc.send(proto.Request{Type: proto.CmdWrite, Offset: uint64(len(big)), Length: uint32(len(small))}, small)
		c3 := rc.send(proto.Request{Type: proto.CmdRead, Offset: 0, Length: uint32(len(big) + len(small))}, nil)
		lens := map[uint64]uint32{c3: uint32(len(big) + len(small))}
		got := map[uint64]result{}
		for range 3 {
			r := rc.recv(lens)
			got[r.cookie] = r
		}
		for _, c := range []uint64{c1, c2, c3} {
			if got[c].errno != 0 {
				t.Fatalf("structured=%v: request %d: %v %s", structured, c, got[c].errno, got[c].msg)
			}
		}
		if !bytes.Equal(got[c3].data, append(big, small...)) {
			t.Fatalf("structured=%v: read back differs", structured)
		}
		rc.disc()
	}
}

// A reply that completes while another request is stuck in the device goes
// out at once: batching replies never holds one back behind a slow request.
func TestReplyNotHeldBehindSlowRequest(t *testing.T) {
	ge, _ := newGateExports()
	_, addr := startServer(t, ge.memExports, func(s *Server) { s.Exports = ge })
	rc := connect(t, addr, "disk", true)
	// FUA keeps the write off the reader's inline path (an inline request
	// stalls the reader until it completes).
	wc := rc.send(proto.Request{Type: proto.CmdWrite, Flags: proto.CmdFlagFUA, Offset: 0, Length: 4096}, make([]byte, 4096))
	<-ge.started
	for _, n := range []uint32{512, 64 << 10} { // buffered, and sent with writev
		rc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		c := rc.send(proto.Request{Type: proto.CmdRead, Offset: 1 << 20, Length: n}, nil)
		r := rc.recv(map[uint64]uint32{c: n})
		if r.cookie != c || r.errno != 0 || len(r.data) != int(n) {
			t.Fatalf("read of %d while a write is stuck: cookie %d (want %d), %v, %d bytes", n, r.cookie, c, r.errno, len(r.data))
		}
	}
	rc.c.SetReadDeadline(time.Now().Add(2 * time.Minute))
	close(ge.gate)
	if r := rc.recv(nil); r.cookie != wc || r.errno != 0 {
		t.Fatalf("stuck write: cookie %d, %v", r.cookie, r.errno)
	}
}

// Many pipelined reads of mixed sizes (small ones that are buffered
// together, large ones that go out with a vectored write behind what is
// buffered, and one larger than the writer's buffer) all arrive intact,
// with simple and structured replies.
func TestPipelinedMixedReplies(t *testing.T) {
	exp, disk := testExports()
	for i := range disk.data {
		disk.data[i] = byte(i * 7 >> 3)
	}
	want := bytes.Clone(disk.data) // the writes below rewrite what is there
	_, addr := startServer(t, exp)
	sizes := []uint32{512, 4096, vectorMin - 1, vectorMin, 200 << 10, 1 << 20, 1}
	for _, structured := range []bool{false, true} {
		rc := connect(t, addr, "disk", structured)
		type req struct{ off, n uint32 }
		reqs := map[uint64]req{}
		lens := map[uint64]uint32{}
		for i := range 200 {
			n := sizes[rand.IntN(len(sizes))]
			off := uint32(rand.IntN(len(want)-int(n))) &^ 511
			c := rc.send(proto.Request{Type: proto.CmdRead, Offset: uint64(off), Length: n}, nil)
			reqs[c], lens[c] = req{off, n}, n
			if i%3 == 0 { // a few writes in the mix; they rewrite what is already there
				rc.send(proto.Request{Type: proto.CmdWrite, Offset: 4096, Length: 4096}, want[4096:8192])
			}
		}
		for len(reqs) > 0 {
			r := rc.recv(lens)
			if r.errno != 0 {
				t.Fatalf("structured=%v: reply %d: %v %s", structured, r.cookie, r.errno, r.msg)
			}
			q, ok := reqs[r.cookie]
			if !ok {
				continue // a write
			}
			delete(reqs, r.cookie)
			if !bytes.Equal(r.data, want[q.off:q.off+q.n]) {
				t.Fatalf("structured=%v: read of %d at %d: data differs", structured, q.n, q.off)
			}
		}
		rc.disc()
	}
}

// recorder is an io.Writer that keeps what it was given and counts calls.
type recorder struct {
	bytes.Buffer
	calls int
}

func (r *recorder) Write(p []byte) (int, error) { r.calls++; return r.Buffer.Write(p) }

func TestReplyWriter(t *testing.T) {
	var out recorder
	w := newReplyWriter(&out, 64)
	var want []byte
	put := func(p []byte) {
		t.Helper()
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
	}
	data := func(hdr, p []byte) {
		t.Helper()
		if err := w.WriteData(hdr, p); err != nil {
			t.Fatal(err)
		}
		want = append(want, hdr...)
		want = append(want, p...)
	}
	fill := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }

	put(fill(10, 'a'))
	data(fill(4, 'h'), fill(20, 'b'))
	if out.calls != 0 || w.Buffered() != 34 {
		t.Fatalf("small messages: %d writes, %d buffered; want 0, 34", out.calls, w.Buffered())
	}
	put(fill(40, 'c')) // does not fit: the pending 34 go out first
	if out.calls != 1 || w.Buffered() != 40 {
		t.Fatalf("overflow: %d writes, %d buffered; want 1, 40", out.calls, w.Buffered())
	}
	data(fill(4, 'h'), fill(vectorMin, 'd')) // large: pending, header and data at once
	if w.Buffered() != 0 {
		t.Fatalf("large payload left %d bytes buffered", w.Buffered())
	}
	put(fill(100, 'e')) // larger than the buffer: written through
	if w.Buffered() != 0 {
		t.Fatalf("oversized write left %d bytes buffered", w.Buffered())
	}
	data(fill(4, 'h'), fill(62, 'f')) // small payload that does not fit with its header
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil { // nothing pending: no write
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("stream differs: got %d bytes, want %d", out.Len(), len(want))
	}
}

func TestBudget(t *testing.T) {
	b := newBudget(100)
	ctx := context.Background()
	if err := b.acquire(ctx, 60); err != nil {
		t.Fatal(err)
	}
	if err := b.acquire(ctx, 40); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire(ctx, 30) }()
	select {
	case err := <-got:
		t.Fatalf("acquire over the budget returned %v without waiting", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(40)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if h := b.held(); h != 90 {
		t.Fatalf("held %d, want 90", h)
	}
	b.release(60)
	b.release(30)
	if err := b.acquire(ctx, 1000); err != nil { // larger than the budget, but nothing held
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.acquire(cctx, 1); err == nil {
		t.Fatal("acquire with a cancelled context while over the budget succeeded")
	}
	b.release(1000)
	if h := b.held(); h != 0 {
		t.Fatalf("held %d after releasing everything, want 0", h)
	}
}
