package nbd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestPollReader reads through a pollReader bytes that arrive while it
// polls, bytes that arrive after it parked, with polling on and off; then
// a deadline that passes with nothing sent, and the peer's close as EOF.
func TestPollReader(t *testing.T) {
	client, server := tcpPair(t)
	var idle atomic.Bool
	idle.Store(true)
	r := newPollReader(server, 5*time.Millisecond, idle.Load)
	if _, ok := r.(*pollReader); !ok {
		t.Fatalf("newPollReader over TCP returned %T, want a *pollReader", r)
	}
	for _, c := range []struct {
		name  string
		idle  bool
		delay time.Duration
	}{
		{"within the poll", true, 500 * time.Microsecond},
		{"after the poll", true, 30 * time.Millisecond},
		{"not idle", false, 2 * time.Millisecond},
	} {
		idle.Store(c.idle)
		msg := []byte("request " + c.name)
		go func() {
			time.Sleep(c.delay)
			client.Write(msg)
		}()
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%s: read %q, %v; want %q", c.name, got, err, msg)
		}
	}
	server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if n, err := r.Read(make([]byte, 8)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %d, %v; want 0, deadline exceeded", n, err)
	}
	server.SetReadDeadline(time.Time{})
	client.Close()
	if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after the peer closed: %d, %v; want 0, EOF", n, err)
	}
}

// TestPollReaderOff: no poll asked for, or a connection without a
// descriptor, reads the connection itself.
func TestPollReaderOff(t *testing.T) {
	_, server := tcpPair(t)
	if r := newPollReader(server, 0, func() bool { return true }); r != io.Reader(server) {
		t.Fatalf("BusyPoll 0: got %T, want the connection", r)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if r := newPollReader(a, time.Millisecond, func() bool { return true }); r != io.Reader(a) {
		t.Fatalf("a pipe: got %T, want the connection", r)
	}
}
