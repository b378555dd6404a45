package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"cairn/nbd/proto"
)

// hostileConn dials, writes b, drains whatever the server answers until it
// closes or a deadline passes, and reports whether the server closed.
func hostileConn(t *testing.T, addr string, b []byte) (closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.Write(b)
		c.(*net.TCPConn).CloseWrite() // then vanish: EOF mid-message
	}()
	_, err = io.Copy(io.Discard, c)
	wg.Wait()
	return err == nil // EOF from the server: it closed
}

// Malformed input closes only the offending connection (spec "Terminating
// the transmission phase": either side MAY hard-disconnect on a violation
// of a mandatory condition); unknown options and commands are refused
// without closing (spec "Baseline", "Error values"). Other clients carry
// on and the data stays intact.
func TestHostileInput(t *testing.T) {
	exp, disk := testExports()
	exp.devs["scratch"] = newMem(1 << 20)
	s, addr := startServer(t, exp, func(s *Server) { s.HandshakeTimeout = 3 * time.Second })

	good := connect(t, addr, "disk", true)
	pattern := bytes.Repeat([]byte("intact!!"), 512)
	if r := good.do(proto.Request{Type: proto.CmdWrite, Offset: 1 << 20, Length: 4096}, pattern); r.errno != 0 {
		t.Fatal(r.errno)
	}

	flagsAndGo := func(name string) []byte {
		b := binary.BigEndian.AppendUint32(nil, proto.ClientFlagFixedNewstyle|proto.ClientFlagNoZeroes)
		return proto.AppendOptionRequest(b, proto.OptGo, proto.AppendInfoRequest(nil, proto.InfoRequest{Name: name}))
	}
	req := func(r proto.Request) []byte { return proto.AppendRequest(nil, r) }
	cases := []struct {
		name string
		b    []byte
	}{
		{"bad option magic", append(binary.BigEndian.AppendUint32(nil, 1), "IHAVEOPX\x00\x00\x00\x07\x00\x00\x00\x00"...)},
		{"unknown client flags", []byte{0xff, 0xff, 0xff, 0xff}},
		{"huge option length", append(binary.BigEndian.AppendUint32(nil, 1), proto.AppendOptionRequest(nil, proto.OptGo, nil)[:12]...)},
		{"option cut short", append(binary.BigEndian.AppendUint32(nil, 1), proto.AppendOptionRequest(nil, proto.OptGo, []byte{0, 0})[:17]...)},
		{"bad request magic", append(flagsAndGo("scratch"), 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"oversized write", append(flagsAndGo("scratch"), req(proto.Request{Type: proto.CmdWrite, Length: 64 << 20})...)},
		{"max write length", append(flagsAndGo("scratch"), req(proto.Request{Type: proto.CmdWrite, Length: 1<<32 - 1})...)},
		{"truncated request", append(flagsAndGo("scratch"), req(proto.Request{Type: proto.CmdRead, Length: 512})[:13]...)},
		{"write cut short", append(append(flagsAndGo("scratch"), req(proto.Request{Type: proto.CmdWrite, Length: 4096})...), make([]byte, 1000)...)},
		{"unknown commands then disc", append(append(append(flagsAndGo("scratch"), req(proto.Request{Type: 77, Length: 512})...), req(proto.Request{Type: proto.CmdRead, Flags: 0xffff, Length: 512})...), req(proto.Request{Type: proto.CmdDisc})...)},
	}
	// The huge option length: IHAVEOPT, GO, length 0xffffffff.
	cases[2].b = binary.BigEndian.AppendUint32(cases[2].b, 0xffffffff)
	for _, tt := range cases {
		if !hostileConn(t, addr, tt.b) {
			t.Errorf("%s: server did not close the connection", tt.name)
		}
	}

	// Random bytes: after the greeting, and after a valid GO.
	n := 200
	if testing.Short() {
		n = 40
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range n {
		junk := make([]byte, rng.IntN(512))
		for j := range junk {
			junk[j] = byte(rng.Uint32())
		}
		var b []byte
		switch i % 3 {
		case 0:
			b = junk
		case 1:
			b = append(flagsAndGo("scratch"), junk...)
		case 2: // valid request headers with random fields
			b = flagsAndGo("scratch")
			for range 8 {
				r := proto.Request{Type: proto.Cmd(rng.IntN(10)), Flags: proto.CmdFlags(rng.IntN(64)), Offset: rng.Uint64() >> rng.IntN(64), Length: uint32(rng.IntN(1 << 16))}
				if r.Type == proto.CmdDisc {
					continue
				}
				b = append(b, req(r)...)
				if r.Type == proto.CmdWrite {
					b = append(b, make([]byte, r.Length)...)
				}
			}
			b = append(b, junk...)
		}
		hostileConn(t, addr, b) // the server may close or time out the handshake; it must not die
	}

	// The old client still works, its data is intact, and a new client
	// can connect.
	if r := good.do(proto.Request{Type: proto.CmdRead, Offset: 1 << 20, Length: 4096}, nil); r.errno != 0 || !bytes.Equal(r.data, pattern) {
		t.Fatalf("old client after the attack: %v", r.errno)
	}
	good.disc()
	fresh := connect(t, addr, "disk", false)
	if r := fresh.do(proto.Request{Type: proto.CmdRead, Offset: 1 << 20, Length: 4096}, nil); r.errno != 0 || !bytes.Equal(r.data, pattern) {
		t.Fatalf("new client after the attack: %v", r.errno)
	}
	fresh.disc()
	if data, _ := disk.snapshot(); !bytes.Equal(data[1<<20:1<<20+4096], pattern) {
		t.Fatal("data changed")
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.ActiveConns() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", s.ActiveConns())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
