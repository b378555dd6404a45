package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/nbd/proto"
)

func TestProtocolError(t *testing.T) {
	errAttached := errors.New("volume: already attached by another writer")
	classify := func(err error) error {
		if errors.Is(err, errAttached) {
			return ErrDenied
		}
		return nil
	}
	tests := []struct {
		err   error
		rep   proto.RepType
		errno proto.Errno
	}{
		{fmt.Errorf("x: %w", ErrNotFound), proto.RepErrUnknown, proto.EIO},
		{fmt.Errorf("x: %w", ErrDenied), proto.RepErrPolicy, proto.EPERM},
		{fmt.Errorf("x: %w", errAttached), proto.RepErrPolicy, proto.EPERM},
		{ErrReadOnly, proto.RepErrPolicy, proto.EPERM},
		{ErrNoSpace, proto.RepErrPolicy, proto.ENOSPC},
		{fmt.Errorf("silo: %w", blocks.ErrNoSpace), proto.RepErrPolicy, proto.ENOSPC},
		{syscall.ENOSPC, proto.RepErrPolicy, proto.ENOSPC},
		{syscall.EDQUOT, proto.RepErrPolicy, proto.ENOSPC},
		{ErrInvalid, proto.RepErrInvalid, proto.EINVAL},
		{ErrUnsupported, proto.RepErrUnsup, proto.ENOTSUP},
		{ErrShutdown, proto.RepErrShutdown, proto.ESHUTDOWN},
		{context.Canceled, proto.RepErrShutdown, proto.ESHUTDOWN},
		{fmt.Errorf("get: %w", blocks.ErrCorrupt), proto.RepErrUnknown, proto.EIO},
		{blocks.ErrUnavailable, proto.RepErrUnknown, proto.EIO},
		{errors.New("something else"), proto.RepErrUnknown, proto.EIO},
	}
	for _, tt := range tests {
		rep, errno := protocolError(tt.err, classify)
		if rep != tt.rep || errno != tt.errno {
			t.Errorf("protocolError(%v) = %v, %v; want %v, %v", tt.err, rep, errno, tt.rep, tt.errno)
		}
	}
}

func TestPool(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 4097, 1 << 20, 32 << 20, 32<<20 + 1} {
		p := getBuf(n)
		if len(*p) != n {
			t.Fatalf("getBuf(%d) has length %d", n, len(*p))
		}
		putBuf(p)
	}
}

// Spec "Option types": LIST returns one NBD_REP_SERVER per export then ACK;
// INFO returns NBD_INFO_EXPORT (mandatory), BLOCK_SIZE, NAME and
// DESCRIPTION; unknown options get NBD_REP_ERR_UNSUP and the session
// continues (spec "Baseline"); malformed data gets NBD_REP_ERR_INVALID.
func TestHandshakeOptions(t *testing.T) {
	exp, _ := testExports()
	_, addr := startServer(t, exp)
	rc := dialRaw(t, addr, proto.ClientFlagFixedNewstyle|proto.ClientFlagNoZeroes)
	if rc.serverFlag != proto.FlagFixedNewstyle|proto.FlagNoZeroes {
		t.Fatalf("handshake flags %#x", rc.serverFlag)
	}

	rs := rc.opt(proto.OptList, nil)
	var names []string
	for _, r := range rs[:len(rs)-1] {
		n, d, err := proto.ParseServer(r.data)
		if err != nil || r.typ != proto.RepServer {
			t.Fatalf("list entry %+v: %v", r, err)
		}
		names = append(names, n+"/"+d)
	}
	if fmt.Sprint(names) != "[busy/ disk/the test disk ro/]" || last(rs) != proto.RepAck {
		t.Fatalf("LIST = %v, %v", names, last(rs))
	}
	if r := rc.opt(proto.OptList, []byte{1}); last(r) != proto.RepErrInvalid {
		t.Fatalf("LIST with data: %v", last(r))
	}
	if r := rc.opt(99, []byte("whatever")); last(r) != proto.RepErrUnsup {
		t.Fatalf("unknown option: %v", last(r))
	}
	if r := rc.opt(proto.OptStartTLS, nil); last(r) != proto.RepErrUnsup {
		t.Fatalf("STARTTLS: %v", last(r))
	}
	if r := rc.opt(proto.OptInfo, []byte{0, 0, 0, 9, 'x'}); last(r) != proto.RepErrInvalid {
		t.Fatalf("malformed INFO: %v", last(r))
	}
	if r := rc.opt(proto.OptSetMetaContext, proto.AppendMetaContextRequest(nil, proto.MetaContextRequest{Queries: []string{"base:allocation"}})); last(r) != proto.RepErrInvalid {
		t.Fatalf("SET_META_CONTEXT before STRUCTURED_REPLY: %v", last(r))
	}
	if r := rc.opt(proto.OptInfo, proto.AppendInfoRequest(nil, proto.InfoRequest{Name: "nope"})); last(r) != proto.RepErrUnknown {
		t.Fatalf("INFO unknown export: %v", last(r))
	}
	if r := rc.opt(proto.OptGo, proto.AppendInfoRequest(nil, proto.InfoRequest{Name: "busy"})); last(r) != proto.RepErrPolicy {
		t.Fatalf("GO busy export: %v", last(r))
	}
	// Oversized option data is skipped and refused; the session goes on.
	if r := rc.opt(proto.OptInfo, make([]byte, maxOptionData+1)); last(r) != proto.RepErrTooBig {
		t.Fatalf("huge option: %v", last(r))
	}

	// INFO on the default export (empty name) with every item requested.
	rs = rc.opt(proto.OptInfo, proto.AppendInfoRequest(nil, proto.InfoRequest{Requests: []proto.InfoType{proto.InfoName, proto.InfoDescription, proto.InfoBlockSize}}))
	got := map[proto.InfoType]proto.Info{}
	for _, r := range rs[:len(rs)-1] {
		inf, err := proto.ParseInfo(r.data)
		if err != nil {
			t.Fatal(err)
		}
		got[inf.Type] = inf
	}
	if last(rs) != proto.RepAck || got[proto.InfoExport].Size != 16<<20 || got[proto.InfoName].Name != "disk" ||
		got[proto.InfoDescription].Description != "the test disk" ||
		got[proto.InfoBlockSize].BlockSize != (proto.BlockSize{Minimum: 512, Preferred: 4096, Maximum: 32 << 20}) {
		t.Fatalf("INFO = %+v, %v", got, last(rs))
	}
	f := got[proto.InfoExport].Flags
	want := proto.FlagHasFlags | proto.FlagSendFlush | proto.FlagSendFUA | proto.FlagSendTrim | proto.FlagSendWriteZeroes | proto.FlagSendFastZero | proto.FlagSendCache
	if f != want {
		t.Fatalf("flags %#x, want %#x (no DF without structured replies, no MULTI_CONN by default)", f, want)
	}

	// LIST_META_CONTEXT: "base:" is a wildcard; unknown namespaces are
	// ignored; a query without a namespace is invalid.
	if r := rc.opt(proto.OptStructuredReply, nil); last(r) != proto.RepAck {
		t.Fatal("STRUCTURED_REPLY")
	}
	for _, tt := range []struct {
		opt     proto.Option
		queries []string
		n       int
		final   proto.RepType
	}{
		{proto.OptListMetaContext, nil, 1, proto.RepAck},
		{proto.OptListMetaContext, []string{"base:"}, 1, proto.RepAck},
		{proto.OptListMetaContext, []string{"qemu:dirty-bitmap:x"}, 0, proto.RepAck},
		{proto.OptListMetaContext, []string{"nocolon"}, 0, proto.RepErrInvalid},
		{proto.OptSetMetaContext, []string{"base:"}, 0, proto.RepAck},
		{proto.OptSetMetaContext, []string{"base:other", "x-y:z"}, 0, proto.RepAck},
		{proto.OptSetMetaContext, []string{"base:allocation"}, 1, proto.RepAck},
	} {
		rs := rc.opt(tt.opt, proto.AppendMetaContextRequest(nil, proto.MetaContextRequest{Export: "disk", Queries: tt.queries}))
		if len(rs) != tt.n+1 || last(rs) != tt.final {
			t.Errorf("%v %q: %d replies ending %v", tt.opt, tt.queries, len(rs), last(rs))
			continue
		}
		if tt.n == 1 {
			id, name, err := proto.ParseMetaContext(rs[0].data)
			wantID := uint32(0)
			if tt.opt == proto.OptSetMetaContext {
				wantID = metaContextID
			}
			if err != nil || name != "base:allocation" || id != wantID {
				t.Errorf("%v: context %d %q %v", tt.opt, id, name, err)
			}
		}
	}

	// GO reuses the INFO device; DF is now advertised.
	if typ := rc.goExport("disk", false); typ != proto.RepAck {
		t.Fatalf("GO: %v", typ)
	}
	if rc.flags&proto.FlagSendDF == 0 || rc.size != 16<<20 {
		t.Fatalf("after structured replies: flags %#x size %d", rc.flags, rc.size)
	}
	rc.structured = true
	res := rc.do(proto.Request{Type: proto.CmdBlockStatus, Length: 8192}, nil)
	if res.errno != 0 || len(res.extents) != 1 || res.extents[0] != (proto.Extent{Length: 8192, Status: proto.StateHole | proto.StateZero}) {
		t.Fatalf("block status: %+v", res)
	}
	rc.disc()
}

// Spec "NBD_OPT_EXPORT_NAME": size, flags and 124 zero bytes unless
// NBD_FLAG_C_NO_ZEROES; an export that cannot be opened ends the session.
// Spec "Client flags": unknown client flags drop the connection.
func TestExportName(t *testing.T) {
	exp, _ := testExports()
	_, addr := startServer(t, exp)
	for _, noZeroes := range []bool{false, true} {
		fl := proto.ClientFlagFixedNewstyle
		if noZeroes {
			fl |= proto.ClientFlagNoZeroes
		}
		rc := dialRaw(t, addr, fl)
		rc.write(proto.AppendOptionRequest(nil, proto.OptExportName, nil))
		n := proto.ExportNameReplySize
		if !noZeroes {
			n += proto.ExportNamePadding
		}
		b := rc.readN(n)
		if !bytes.Equal(b[:8], []byte{0, 0, 0, 0, 1, 0, 0, 0}) {
			t.Fatalf("size bytes % x", b[:8])
		}
		res := rc.do(proto.Request{Type: proto.CmdRead, Length: 512}, nil)
		if res.errno != 0 || len(res.data) != 512 {
			t.Fatalf("read after EXPORT_NAME: %+v", res)
		}
		rc.disc()
	}
	rc := dialRaw(t, addr, proto.ClientFlagFixedNewstyle)
	rc.write(proto.AppendOptionRequest(nil, proto.OptExportName, []byte("nope")))
	if _, err := rc.br.ReadByte(); err == nil {
		t.Fatal("unknown EXPORT_NAME did not end the session")
	}
	rc = dialRaw(t, addr, 1<<5)
	if _, err := rc.br.ReadByte(); err == nil {
		t.Fatal("unknown client flag did not end the session")
	}
}

// Spec "Request types" and "Error values", with simple replies.
func TestTransmissionSimple(t *testing.T) {
	exp, disk := testExports()
	_, addr := startServer(t, exp)
	rc := connect(t, addr, "", false)
	data := bytes.Repeat([]byte("cairn!!!"), 1024)
	if r := rc.do(proto.Request{Type: proto.CmdWrite, Offset: 4096, Length: uint32(len(data))}, data); r.errno != 0 {
		t.Fatalf("write: %v", r.errno)
	}
	if r := rc.do(proto.Request{Type: proto.CmdRead, Offset: 4096, Length: uint32(len(data))}, nil); r.errno != 0 || !bytes.Equal(r.data, data) {
		t.Fatalf("read back: %v", r.errno)
	}
	flushes := disk.flushes.Load()
	if r := rc.do(proto.Request{Type: proto.CmdWrite, Flags: proto.CmdFlagFUA, Offset: 0, Length: 512}, make([]byte, 512)); r.errno != 0 {
		t.Fatalf("FUA write: %v", r.errno)
	}
	if r := rc.do(proto.Request{Type: proto.CmdFlush}, nil); r.errno != 0 {
		t.Fatalf("flush: %v", r.errno)
	}
	if got := disk.flushes.Load() - flushes; got != 2 {
		t.Fatalf("FUA write + FLUSH flushed %d times, want 2", got)
	}
	_, durable := disk.snapshot()
	if !bytes.Equal(durable[4096:4096+len(data)], data) {
		t.Fatal("flushed data not durable")
	}
	for _, tt := range []struct {
		name string
		r    proto.Request
		data []byte
		want proto.Errno
	}{
		{"read past end", proto.Request{Type: proto.CmdRead, Offset: 16 << 20, Length: 512}, nil, proto.EINVAL},
		{"read offset overflow", proto.Request{Type: proto.CmdRead, Offset: 1<<64 - 256, Length: 512}, nil, proto.EINVAL},
		{"write past end", proto.Request{Type: proto.CmdWrite, Offset: 16<<20 - 256, Length: 512}, make([]byte, 512), proto.ENOSPC},
		{"trim past end", proto.Request{Type: proto.CmdTrim, Offset: 16 << 20, Length: 1}, nil, proto.EINVAL},
		{"zeroes past end", proto.Request{Type: proto.CmdWriteZeroes, Offset: 16 << 20, Length: 1}, nil, proto.ENOSPC},
		{"unknown command", proto.Request{Type: 42}, nil, proto.EINVAL},
		{"resize", proto.Request{Type: proto.CmdResize}, nil, proto.EINVAL},
		{"unknown flag", proto.Request{Type: proto.CmdRead, Flags: 1 << 9, Length: 512}, nil, proto.EINVAL},
		{"NO_HOLE on write", proto.Request{Type: proto.CmdWrite, Flags: proto.CmdFlagNoHole, Length: 512}, make([]byte, 512), proto.EINVAL},
		{"DF without structured replies", proto.Request{Type: proto.CmdRead, Flags: proto.CmdFlagDF, Length: 512}, nil, proto.EINVAL},
		{"block status without context", proto.Request{Type: proto.CmdBlockStatus, Length: 512}, nil, proto.EINVAL},
		{"read over max payload", proto.Request{Type: proto.CmdRead, Length: 32<<20 + 512}, nil, proto.EINVAL},
		{"fast zero no hole", proto.Request{Type: proto.CmdWriteZeroes, Flags: proto.CmdFlagFastZero | proto.CmdFlagNoHole, Length: 4096}, nil, proto.ENOTSUP},
		{"fast zero", proto.Request{Type: proto.CmdWriteZeroes, Flags: proto.CmdFlagFastZero, Length: 4096}, nil, 0},
		{"cache", proto.Request{Type: proto.CmdCache, Length: 1 << 20}, nil, 0},
		{"zero-length read", proto.Request{Type: proto.CmdRead, Offset: 512}, nil, 0},
		{"zero-length trim", proto.Request{Type: proto.CmdTrim}, nil, 0},
		{"huge trim", proto.Request{Type: proto.CmdTrim, Offset: 0, Length: 16 << 20}, nil, 0},
	} {
		if r := rc.do(tt.r, tt.data); r.errno != tt.want {
			t.Errorf("%s: errno %v, want %v", tt.name, r.errno, tt.want)
		}
	}
	// The connection still works and the trim zeroed everything.
	if r := rc.do(proto.Request{Type: proto.CmdRead, Offset: 4096, Length: 4096}, nil); r.errno != 0 || !bytes.Equal(r.data, make([]byte, 4096)) {
		t.Fatalf("read after errors: %v", r.errno)
	}
	rc.disc()

	ro := connect(t, addr, "ro", false)
	if ro.flags&proto.FlagReadOnly == 0 || ro.flags&proto.FlagSendTrim != 0 {
		t.Fatalf("read-only flags %#x", ro.flags)
	}
	for _, c := range []proto.Cmd{proto.CmdWrite, proto.CmdTrim, proto.CmdWriteZeroes} {
		var data []byte
		if c == proto.CmdWrite {
			data = make([]byte, 512)
		}
		if r := ro.do(proto.Request{Type: c, Length: 512}, data); r.errno != proto.EPERM {
			t.Errorf("%v on read-only export: %v, want EPERM", c, r.errno)
		}
	}
	if r := ro.do(proto.Request{Type: proto.CmdRead, Offset: 256, Length: 4}, nil); r.errno != 0 || !bytes.Equal(r.data, []byte{0, 1, 2, 3}) {
		t.Fatalf("read-only read: %+v", r)
	}
	ro.disc()
}

// Spec "Structured reply chunk message", "NBD_CMD_READ" (structured) and
// "NBD_CMD_BLOCK_STATUS".
func TestTransmissionStructured(t *testing.T) {
	exp, disk := testExports()
	_, addr := startServer(t, exp)
	rc := connect(t, addr, "disk", true)
	data := make([]byte, 3*4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if r := rc.do(proto.Request{Type: proto.CmdWrite, Offset: 8192, Length: uint32(len(data))}, data); r.errno != 0 {
		t.Fatalf("write: %v", r.errno)
	}
	if r := rc.do(proto.Request{Type: proto.CmdRead, Flags: proto.CmdFlagDF, Offset: 8192, Length: uint32(len(data))}, nil); r.errno != 0 || !bytes.Equal(r.data, data) {
		t.Fatalf("read: %v %q", r.errno, r.msg)
	}
	// Zero with NO_HOLE keeps the chunk allocated; plain zero punches it.
	if r := rc.do(proto.Request{Type: proto.CmdWriteZeroes, Flags: proto.CmdFlagNoHole, Offset: 8192, Length: 4096}, nil); r.errno != 0 {
		t.Fatal(r.errno)
	}
	if r := rc.do(proto.Request{Type: proto.CmdWriteZeroes, Offset: 12288, Length: 4096}, nil); r.errno != 0 {
		t.Fatal(r.errno)
	}
	const H = proto.StateHole | proto.StateZero
	x := func(n, st uint32) proto.Extent { return proto.Extent{Length: n, Status: st} }
	for _, tt := range []struct {
		r    proto.Request
		want []proto.Extent
	}{
		{proto.Request{Offset: 0, Length: 32768}, []proto.Extent{x(8192, H), x(4096, 0), x(4096, H), x(4096, 0), x(12288, H)}},
		{proto.Request{Offset: 9000, Length: 100}, []proto.Extent{x(100, 0)}},
		{proto.Request{Flags: proto.CmdFlagReqOne, Offset: 0, Length: 32768}, []proto.Extent{x(8192, H)}},
		{proto.Request{Flags: proto.CmdFlagReqOne, Offset: 0, Length: 1000}, []proto.Extent{x(1000, H)}},
		{proto.Request{Offset: 16<<20 - 4096, Length: 4096}, []proto.Extent{x(4096, H)}},
	} {
		tt.r.Type = proto.CmdBlockStatus
		r := rc.do(tt.r, nil)
		if r.errno != 0 || fmt.Sprint(r.extents) != fmt.Sprint(tt.want) {
			t.Errorf("block status %+v = %v %v, want %v", tt.r, r.errno, r.extents, tt.want)
		}
	}
	if r := rc.do(proto.Request{Type: proto.CmdBlockStatus, Offset: 16 << 20, Length: 1}, nil); r.errno != proto.EINVAL {
		t.Errorf("block status past end: %v", r.errno)
	}
	// A device error on READ is a structured error chunk, and the
	// connection carries on.
	disk.mu.Lock()
	disk.failRead = fmt.Errorf("mem: %w", blocks.ErrCorrupt)
	disk.mu.Unlock()
	if r := rc.do(proto.Request{Type: proto.CmdRead, Length: 4096}, nil); r.errno != proto.EIO || r.msg == "" || r.data != nil {
		t.Fatalf("read error: %+v", r)
	}
	disk.mu.Lock()
	disk.failRead = nil
	disk.failAll = fmt.Errorf("mem: %w", blocks.ErrNoSpace)
	disk.mu.Unlock()
	if r := rc.do(proto.Request{Type: proto.CmdWrite, Length: 512}, make([]byte, 512)); r.errno != proto.ENOSPC {
		t.Fatalf("write on full device: %v", r.errno)
	}
	disk.mu.Lock()
	disk.failAll = nil
	disk.mu.Unlock()
	if r := rc.do(proto.Request{Type: proto.CmdRead, Length: 0}, nil); r.errno != 0 {
		t.Fatalf("zero-length structured read: %v", r.errno)
	}
	rc.disc()
}

// Spec "Transmission": replies need not be in request order. Many requests
// in flight on one connection, checked by cookie.
func TestPipelined(t *testing.T) {
	exp, _ := testExports()
	_, addr := startServer(t, exp, func(s *Server) { s.Workers = 4 })
	for _, structured := range []bool{false, true} {
		rc := connect(t, addr, "disk", structured)
		rng := rand.New(rand.NewPCG(1, 2))
		const n = 256
		want := map[int64][]byte{}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // send while replies come back: no deadlock on full buffers
			defer wg.Done()
			for i := range n {
				b := make([]byte, 4096)
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				off := int64(i) * 8192
				want[off] = b
				rc.send(proto.Request{Type: proto.CmdWrite, Offset: uint64(off), Length: 4096}, b)
			}
		}()
		for range n {
			if r := rc.recv(nil); r.errno != 0 {
				t.Fatalf("write reply: %v", r.errno)
			}
		}
		wg.Wait()
		lens := map[uint64]uint32{}
		offs := map[uint64]int64{}
		for off := range want {
			c := rc.send(proto.Request{Type: proto.CmdRead, Offset: uint64(off), Length: 4096}, nil)
			lens[c], offs[c] = 4096, off
		}
		for range len(want) {
			r := rc.recv(lens)
			if r.errno != 0 || !bytes.Equal(r.data, want[offs[r.cookie]]) {
				t.Fatalf("read %d: %v", offs[r.cookie], r.errno)
			}
			delete(lens, r.cookie)
		}
		rc.disc()
	}
}

// slowDevice blocks writes until released, to catch requests in flight.
type slowDevice struct {
	Device
	started chan struct{}
	release chan struct{}
}

func (d *slowDevice) WriteAt(ctx context.Context, p []byte, off int64) error {
	d.started <- struct{}{}
	select {
	case <-d.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return d.Device.WriteAt(ctx, p, off)
}

type slowExports struct {
	*memExports
	started, release chan struct{}
}

func (e *slowExports) Open(ctx context.Context, name string) (Device, error) {
	d, err := e.memExports.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return &slowDevice{Device: d, started: e.started, release: e.release}, nil
}

// Spec "Terminating the transmission phase": on shutdown the server SHOULD
// wait for in-flight requests before disconnecting. A write in flight when
// Shutdown starts completes, is acknowledged and is flushed by Close.
func TestShutdownWaitsForInflight(t *testing.T) {
	exp, disk := testExports()
	se := &slowExports{memExports: exp, started: make(chan struct{}, 1), release: make(chan struct{})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Exports: se, DefaultExport: "disk", Logger: testLogger(t)}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background(), l) }()
	rc := connect(t, l.Addr().String(), "disk", false)
	idle := dialRaw(t, l.Addr().String(), proto.ClientFlagFixedNewstyle) // still haggling
	data := bytes.Repeat([]byte{0xAB}, 4096)
	rc.send(proto.Request{Type: proto.CmdWrite, Offset: 0, Length: 4096}, data)
	<-se.started
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	// The haggling connection is closed at once.
	if _, err := idle.br.ReadByte(); err == nil {
		t.Fatal("haggling connection not closed")
	}
	close(se.release)
	if r := rc.recv(nil); r.errno != 0 {
		t.Fatalf("in-flight write: %v", r.errno)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if _, durable := disk.snapshot(); !bytes.Equal(durable[:4096], data) {
		t.Fatal("acknowledged write not flushed at shutdown")
	}
	if !exp.allClosed() || s.ActiveConns() != 0 {
		t.Fatal("devices or connections left open")
	}
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		// The listener is closed; a connect may still succeed on some
		// systems only if something else took the port.
		t.Log("note: port reused after shutdown")
	}
}

// Shutdown with an expired context cancels in-flight requests instead of
// waiting, and still closes the devices.
func TestShutdownForced(t *testing.T) {
	exp, _ := testExports()
	se := &slowExports{memExports: exp, started: make(chan struct{}, 1), release: make(chan struct{})}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	s := &Server{Exports: se, DefaultExport: "disk", Logger: testLogger(t)}
	go s.Serve(context.Background(), l)
	rc := connect(t, l.Addr().String(), "disk", false)
	rc.send(proto.Request{Type: proto.CmdWrite, Length: 512}, make([]byte, 512))
	<-se.started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	if !exp.allClosed() {
		t.Fatal("device left open")
	}
}

// A client that vanishes right after its writes were acknowledged loses
// nothing: the server finishes, then Close flushes.
func TestVanishingClientKeepsAckedWrites(t *testing.T) {
	exp, disk := testExports()
	s, addr := startServer(t, exp)
	rc := connect(t, addr, "disk", false)
	data := bytes.Repeat([]byte{7}, 8192)
	if r := rc.do(proto.Request{Type: proto.CmdWrite, Offset: 1 << 20, Length: 8192}, data); r.errno != 0 {
		t.Fatal(r.errno)
	}
	// Half a write, then gone.
	rc.write(proto.AppendRequest(nil, proto.Request{Type: proto.CmdWrite, Offset: 0, Length: 4096}))
	rc.write(make([]byte, 100))
	rc.c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for s.ActiveConns() != 0 || !exp.allClosed() {
		if time.Now().After(deadline) {
			t.Fatal("connection not cleaned up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, durable := disk.snapshot(); !bytes.Equal(durable[1<<20:1<<20+8192], data) {
		t.Fatal("acknowledged write lost")
	}
}

func TestMaxConns(t *testing.T) {
	exp, _ := testExports()
	s, addr := startServer(t, exp, func(s *Server) { s.MaxConns = 1 })
	a := dialRaw(t, addr, proto.ClientFlagFixedNewstyle)
	for s.ActiveConns() != 1 {
		time.Sleep(time.Millisecond)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if n, err := io.ReadFull(c, make([]byte, 1)); n != 0 || err == nil {
		t.Fatal("connection over the limit was served")
	}
	a.opt(proto.OptAbort, nil)
}

func TestServeContextCancel(t *testing.T) {
	exp, _ := testExports()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	s := &Server{Exports: exp, Logger: testLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, l) }()
	rc := connect(t, l.Addr().String(), "disk", false)
	_ = rc
	cancel()
	if err := <-errc; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !exp.allClosed() || s.ActiveConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("device not closed after cancel")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client that stops reading its replies is dropped once a reply's write
// has been blocked for WriteTimeout: its connection ends and its device
// is closed, while other clients carry on.
func TestStuckReaderIsDropped(t *testing.T) {
	exp, _ := testExports()
	s, addr := startServer(t, exp, func(s *Server) { s.WriteTimeout = 300 * time.Millisecond })
	good := connect(t, addr, "disk", false)
	stuck := connect(t, addr, "disk", false)
	for s.ActiveConns() != 2 {
		time.Sleep(time.Millisecond)
	}
	// 64 MiB of READs, replies never read: more than the sockets buffer.
	var reqs []byte
	for i := range 64 {
		reqs = proto.AppendRequest(reqs, proto.Request{Type: proto.CmdRead, Cookie: uint64(i), Offset: 0, Length: 1 << 20})
	}
	go stuck.c.Write(reqs) // it may block too, once the server stops reading
	deadline := time.Now().Add(30 * time.Second)
	for s.ActiveConns() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("a client that reads no replies still holds its connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The other client was not disturbed.
	data := bytes.Repeat([]byte{9}, 4096)
	if r := good.do(proto.Request{Type: proto.CmdWrite, Offset: 8192, Length: 4096}, data); r.errno != 0 {
		t.Fatal(r.errno)
	}
	if r := good.do(proto.Request{Type: proto.CmdRead, Offset: 8192, Length: 4096}, nil); r.errno != 0 || !bytes.Equal(r.data, data) {
		t.Fatalf("read back: %v", r.errno)
	}
	stuck.c.Close()
}
