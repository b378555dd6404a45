package nbd

import (
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"cairn/nbd/proto"
)

// serverCongestion returns the congestion control of the server's side of
// its only connection.
func serverCongestion(t *testing.T, s *Server) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for s.ActiveConns() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the connection never showed up")
		}
		time.Sleep(time.Millisecond)
	}
	s.mu.Lock()
	var nc net.Conn
	for c := range s.conns {
		nc = c.nc
	}
	s.mu.Unlock()
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var name string
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		var b [16]byte
		n := uint32(len(b))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_CONGESTION, uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&n)), 0)
		if e != 0 {
			gerr = e
			return
		}
		name = strings.TrimRight(string(b[:min(int(n), len(b))]), "\x00")
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatalf("getsockopt TCP_CONGESTION: %v", gerr)
	}
	return name
}

// procWords returns the words of a /proc file.
func procWords(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

// TestLoopbackCongestion: a loopback client's connection gets the
// server's choice, reno when the kernel refuses that, and the system's
// default when the server makes no choice.
func TestLoopbackCongestion(t *testing.T) {
	system := procWords(t, "/proc/sys/net/ipv4/tcp_congestion_control")[0]
	// A choice other than the system's, so that the test sees it applied:
	// reno is built into every kernel and allowed to every process.
	want := congestionFallback
	if system == want {
		for _, n := range procWords(t, "/proc/sys/net/ipv4/tcp_available_congestion_control") {
			if n != system {
				want = n
				break
			}
		}
	}
	tests := []struct {
		name, set, got string
	}{
		{"chosen", want, want},
		{"refused", "no_such_cc", congestionFallback},
		{"system", "", system},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp, _ := testExports()
			s, addr := startServer(t, exp, func(s *Server) { s.LoopbackCongestion = tc.set })
			a := dialRaw(t, addr, proto.ClientFlagFixedNewstyle)
			if got := serverCongestion(t, s); got != tc.got {
				t.Errorf("LoopbackCongestion %q: the connection uses %q, want %q (system default %q)", tc.set, got, tc.got, system)
			}
			a.opt(proto.OptAbort, nil)
		})
	}
}
