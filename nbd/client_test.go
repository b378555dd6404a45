package nbd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"cairn/nbd/proto"
)

// This file holds the test harness: a server on 127.0.0.1:0 and a minimal
// raw NBD client used to drive exact byte sequences.

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testExports returns exports "disk" (16 MiB, default), "ro" (read-only,
// 1 MiB) and "busy" (refused with ErrDenied).
func testExports() (*memExports, *memDevice) {
	disk := newMem(16 << 20)
	ro := newMem(1 << 20)
	ro.readOnly = true
	for i := range ro.data {
		ro.data[i] = byte(i)
	}
	return &memExports{
		devs:   map[string]*memDevice{"disk": disk, "ro": ro, "busy": newMem(1 << 20)},
		desc:   map[string]string{"disk": "the test disk"},
		denied: map[string]bool{"busy": true},
	}, disk
}

// startServer serves exp on a fresh loopback port. Cleanup shuts the
// server down and checks that its goroutines are gone and every device
// was closed.
func startServer(t testing.TB, exp *memExports, opts ...func(*Server)) (*Server, string) {
	t.Helper()
	before := runtime.NumGoroutine()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// As cairn serve runs it: the readers busy-poll (poll.go).
	s := &Server{Exports: exp, DefaultExport: "disk", Logger: testLogger(t), BusyPoll: 30 * time.Microsecond}
	for _, o := range opts {
		o(s)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background(), l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		if !exp.allClosed() {
			t.Error("a device was left open")
		}
		waitGoroutines(t, before)
	})
	return s, l.Addr().String()
}

// waitGoroutines waits (boundedly) for the goroutine count to drop back to
// at most n.
func waitGoroutines(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawClient speaks NBD byte by byte.
type rawClient struct {
	t          testing.TB
	c          net.Conn
	br         *bufio.Reader
	serverFlag uint16
	size       uint64
	flags      proto.TransmissionFlags
	structured bool
	cookie     uint64
}

// dialRaw connects and completes the greeting with the given client flags.
func dialRaw(t testing.TB, addr string, clientFlags uint32) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	rc := &rawClient{t: t, c: c, br: bufio.NewReader(c)}
	g := make([]byte, proto.GreetingSize)
	if _, err := io.ReadFull(rc.br, g); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if rc.serverFlag, err = proto.ParseGreeting(g); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	rc.write(fmt.Appendf(nil, "%c%c%c%c", 0, 0, 0, byte(clientFlags)))
	return rc
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	if _, err := rc.c.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

func (rc *rawClient) readN(n int) []byte {
	rc.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc.br, b); err != nil {
		rc.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

type optReply struct {
	typ  proto.RepType
	data []byte
}

// opt sends an option and reads replies up to the final one (ACK or an
// error).
func (rc *rawClient) opt(o proto.Option, data []byte) []optReply {
	rc.t.Helper()
	rc.write(proto.AppendOptionRequest(nil, o, data))
	var out []optReply
	for {
		h, err := proto.ParseOptionReplyHeader(rc.readN(proto.OptionReplyHeaderSize))
		if err != nil {
			rc.t.Fatalf("option reply: %v", err)
		}
		if h.Option != o {
			rc.t.Fatalf("reply to %v, want %v", h.Option, o)
		}
		r := optReply{h.Type, rc.readN(int(h.Length))}
		out = append(out, r)
		if h.Type == proto.RepAck || h.Type.IsError() {
			return out
		}
	}
}

// last returns the final reply type.
func last(rs []optReply) proto.RepType { return rs[len(rs)-1].typ }

// goExport negotiates structured replies and base:allocation if asked,
// then NBD_OPT_GO.
func (rc *rawClient) goExport(name string, structured bool) proto.RepType {
	rc.t.Helper()
	if structured {
		if r := rc.opt(proto.OptStructuredReply, nil); last(r) != proto.RepAck {
			rc.t.Fatalf("structured reply: %v", last(r))
		}
		rc.structured = true
		r := rc.opt(proto.OptSetMetaContext, proto.AppendMetaContextRequest(nil, proto.MetaContextRequest{Export: name, Queries: []string{"base:allocation"}}))
		if len(r) != 2 || r[0].typ != proto.RepMetaContext {
			rc.t.Fatalf("set meta context: %+v", r)
		}
	}
	rs := rc.opt(proto.OptGo, proto.AppendInfoRequest(nil, proto.InfoRequest{Name: name, Requests: []proto.InfoType{proto.InfoBlockSize}}))
	for _, r := range rs {
		if r.typ == proto.RepInfo {
			if inf, err := proto.ParseInfo(r.data); err == nil && inf.Type == proto.InfoExport {
				rc.size, rc.flags = inf.Size, inf.Flags
			}
		}
	}
	return last(rs)
}

// result is a decoded reply to one request.
type result struct {
	cookie  uint64
	errno   proto.Errno
	msg     string
	data    []byte
	extents []proto.Extent
}

// send sends a request and returns its cookie.
func (rc *rawClient) send(r proto.Request, data []byte) uint64 {
	rc.t.Helper()
	rc.cookie++
	r.Cookie = rc.cookie
	rc.write(append(proto.AppendRequest(nil, r), data...))
	return r.Cookie
}

// recv reads one complete reply. readLen gives the READ length for a
// cookie (simple replies carry no length).
func (rc *rawClient) recv(readLen map[uint64]uint32) result {
	rc.t.Helper()
	magic := rc.readN(4)
	if !rc.structured || string(magic) == "\x67\x44\x66\x98" {
		rest := rc.readN(proto.SimpleReplySize - 4)
		cookie, errno, err := proto.ParseSimpleReply(append(magic, rest...))
		if err != nil {
			rc.t.Fatalf("simple reply: %v", err)
		}
		res := result{cookie: cookie, errno: errno}
		if n, ok := readLen[cookie]; ok && errno == 0 {
			res.data = rc.readN(int(n))
		}
		return res
	}
	var res result
	for {
		h, err := proto.ParseChunkHeader(append(magic, rc.readN(proto.ChunkHeaderSize-4)...))
		if err != nil {
			rc.t.Fatalf("chunk: %v", err)
		}
		res.cookie = h.Cookie
		p := rc.readN(int(h.Length))
		switch {
		case h.Type == proto.ReplyOffsetData:
			off, d, err := proto.ParseOffsetData(p)
			if err != nil {
				rc.t.Fatal(err)
			}
			_ = off
			res.data = append(res.data, d...)
		case h.Type == proto.ReplyBlockStatus:
			id, ext, err := proto.ParseBlockStatus(p)
			if err != nil || id != metaContextID {
				rc.t.Fatalf("block status: %d %v", id, err)
			}
			res.extents = ext
		case h.Type.IsError():
			ce, err := proto.ParseErrorChunk(h.Type, p)
			if err != nil {
				rc.t.Fatal(err)
			}
			res.errno, res.msg = ce.Errno, ce.Message
		case h.Type == proto.ReplyNone:
		default:
			rc.t.Fatalf("unexpected chunk type %d", h.Type)
		}
		if h.Done() {
			return res
		}
		magic = rc.readN(4)
	}
}

// do sends one request and waits for its reply.
func (rc *rawClient) do(r proto.Request, data []byte) result {
	rc.t.Helper()
	cookie := rc.send(r, data)
	lens := map[uint64]uint32{}
	if r.Type == proto.CmdRead {
		lens[cookie] = r.Length
	}
	res := rc.recv(lens)
	if res.cookie != cookie {
		rc.t.Fatalf("reply cookie %d, want %d", res.cookie, cookie)
	}
	return res
}

func (rc *rawClient) disc() {
	rc.send(proto.Request{Type: proto.CmdDisc}, nil)
	rc.c.Close()
}

// connect dials and enters transmission on export name.
func connect(t testing.TB, addr, name string, structured bool) *rawClient {
	t.Helper()
	rc := dialRaw(t, addr, proto.ClientFlagFixedNewstyle|proto.ClientFlagNoZeroes)
	if typ := rc.goExport(name, structured); typ != proto.RepAck {
		t.Fatalf("GO %q: %v", name, typ)
	}
	return rc
}
