package nbd

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// TestRawVecWriter writes, through raw writev calls, more pieces than one
// writev takes (maxIovecs) and more bytes than the socket buffers hold,
// empty pieces among them, to a reader that starts late (so the writer
// meets EAGAIN and waits in the poller); every byte arrives in order.
func TestRawVecWriter(t *testing.T) {
	client, server := tcpPair(t)
	w := newRawVecWriter(server)
	if w == nil {
		t.Fatal("newRawVecWriter over TCP returned nil")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var bufs [][]byte
	var want []byte
	for len(bufs) < 3*maxIovecs {
		b := make([]byte, rng.IntN(9000))
		if len(bufs) == 5 || len(bufs) == maxIovecs {
			b = b[:0] // empty pieces are skipped
		}
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	bufs[5] = nil
	got := make(chan []byte, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		b, _ := io.ReadAll(io.LimitReader(client, int64(len(want))))
		got <- b
	}()
	if err := w.writeVec(bufs); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("received %d bytes, not the %d written", len(b), len(want))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reader did not get every byte written")
	}
	if err := w.writeVec(nil); err != nil {
		t.Fatalf("empty write: %v", err)
	}
}

// TestRawVecWriterDeadline: a peer that never reads makes the write wait
// until the socket's write deadline, then fail with a timeout.
func TestRawVecWriterDeadline(t *testing.T) {
	_, server := tcpPair(t)
	w := newRawVecWriter(server)
	server.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	big := make([]byte, 64<<20)
	err := w.writeVec([][]byte{big})
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a peer that never reads: %v, want a deadline error", err)
	}
}

// TestRawVecWriterClosed: writing to a connection the peer closed fails
// (EPIPE or ECONNRESET), and newRawVecWriter refuses what is not a socket.
func TestRawVecWriterClosed(t *testing.T) {
	client, server := tcpPair(t)
	client.Close()
	w := newRawVecWriter(server)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = w.writeVec([][]byte{make([]byte, 1<<20)})
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
	if newRawVecWriter(&bytes.Buffer{}) != nil {
		t.Fatal("newRawVecWriter over a bytes.Buffer is not nil")
	}
}

// TestConsumeVec drops bytes across piece boundaries.
func TestConsumeVec(t *testing.T) {
	bufs := [][]byte{[]byte("ab"), []byte("cde"), nil, []byte("f")}
	for _, c := range []struct {
		n    int
		want string
	}{{0, "abcdef"}, {1, "bcdef"}, {2, "cdef"}, {4, "ef"}, {5, "f"}, {6, ""}} {
		rest := consumeVec(append([][]byte(nil), bufs...), c.n)
		if got := string(bytes.Join(rest, nil)); got != c.want {
			t.Fatalf("consume %d: %q, want %q", c.n, got, c.want)
		}
	}
}
