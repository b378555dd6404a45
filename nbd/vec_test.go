package nbd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/nbd/proto"
)

// vecHandle is a memHandle with ReadVec: it hands the range over in
// pieces of random sizes (empty ones too), or, when short is set, one
// byte short (a device bug the server must not pass on to the wire).
type vecHandle struct {
	*memHandle
	short *atomic.Bool
	calls *atomic.Int64
}

var _ VectorReader = vecHandle{}

func (h vecHandle) ReadVec(ctx context.Context, off int64, n int, fn func([][]byte) error) error {
	h.calls.Add(1)
	p := make([]byte, n)
	if err := h.ReadAt(ctx, p, off); err != nil {
		return err
	}
	if h.short.Load() {
		p = p[:n-1]
	}
	rng := rand.New(rand.NewPCG(uint64(off), uint64(n)))
	var bufs [][]byte
	for len(p) > 0 {
		k := min(len(p), rng.IntN(1500))
		bufs = append(bufs, p[:k])
		p = p[k:]
	}
	return fn(bufs)
}

// vecExports serves memExports' devices as vecHandles.
type vecExports struct {
	*memExports
	short atomic.Bool
	calls atomic.Int64
}

func (e *vecExports) Open(ctx context.Context, name string) (Device, error) {
	d, err := e.memExports.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return vecHandle{memHandle: d.(*memHandle), short: &e.short, calls: &e.calls}, nil
}

// TestVectoredRead: large READs of a device with ReadVec go out from its
// pieces (thousands of them, more than one writev takes) and arrive
// intact, in simple and structured replies, many in flight at once; a
// device error or a device that returns the wrong length gets an EIO
// reply and the connection carries on.
func TestVectoredRead(t *testing.T) {
	exp, disk := testExports()
	rng := rand.New(rand.NewPCG(8, 9))
	for i := range disk.data {
		disk.data[i] = byte(rng.Uint32())
	}
	vexp := &vecExports{memExports: exp}
	_, addr := startServer(t, exp, func(s *Server) { s.Exports = vexp; s.Workers = 4 })
	for _, structured := range []bool{false, true} {
		rc := connect(t, addr, "disk", structured)
		// The requests are small: send them all, then read the replies
		// (in any order), which the server sends while it reads requests.
		lens := map[uint64]uint32{}
		offs := map[uint64]int64{}
		r := rand.New(rand.NewPCG(1, 2))
		const n = 40
		for i := range n {
			length := uint32(vectorMin + r.IntN(2<<20))
			if i == 0 {
				length = vectorMin
			}
			off := r.Int64N(int64(len(disk.data)) - int64(length))
			c := rc.send(proto.Request{Type: proto.CmdRead, Offset: uint64(off), Length: length}, nil)
			lens[c], offs[c] = length, off
		}
		for range n {
			res := rc.recv(lens)
			off, length := offs[res.cookie], lens[res.cookie]
			if res.errno != 0 || !bytes.Equal(res.data, disk.data[off:off+int64(length)]) {
				t.Fatalf("structured %v: read [%d, +%d): errno %v, %d bytes", structured, off, length, res.errno, len(res.data))
			}
		}
		if vexp.calls.Load() == 0 {
			t.Fatal("ReadVec was never called")
		}
		// Small reads still go through ReadAt.
		before := vexp.calls.Load()
		if r := rc.do(proto.Request{Type: proto.CmdRead, Offset: 100, Length: vectorMin - 1}, nil); r.errno != 0 || !bytes.Equal(r.data, disk.data[100:100+vectorMin-1]) {
			t.Fatalf("small read: %v", r.errno)
		}
		if vexp.calls.Load() != before {
			t.Fatal("a small read went through ReadVec")
		}
		// A device error, then a device returning one byte short.
		disk.mu.Lock()
		disk.failRead = fmt.Errorf("mem: %w", blocks.ErrCorrupt)
		disk.mu.Unlock()
		if r := rc.do(proto.Request{Type: proto.CmdRead, Length: 1 << 20}, nil); r.errno != proto.EIO || r.data != nil {
			t.Fatalf("read error: %+v", r.errno)
		}
		disk.mu.Lock()
		disk.failRead = nil
		disk.mu.Unlock()
		vexp.short.Store(true)
		if r := rc.do(proto.Request{Type: proto.CmdRead, Length: 1 << 20}, nil); r.errno != proto.EIO || r.data != nil {
			t.Fatalf("short device read: %+v", r.errno)
		}
		vexp.short.Store(false)
		if r := rc.do(proto.Request{Type: proto.CmdRead, Offset: 4096, Length: 1 << 20}, nil); r.errno != 0 || !bytes.Equal(r.data, disk.data[4096:4096+1<<20]) {
			t.Fatalf("read after errors: %v", r.errno)
		}
		rc.disc()
	}
}

// TestWriteVec: the reply writer sends pending bytes, a header and a
// payload in pieces as their concatenation, and keeps no reference to
// the pieces.
func TestWriteVec(t *testing.T) {
	var out bytes.Buffer
	w := newReplyWriter(&out, 64)
	w.Write([]byte("pending-"))
	pieces := [][]byte{[]byte("a"), nil, bytes.Repeat([]byte("b"), 3000), {}, []byte("c")}
	if err := w.WriteVec([]byte("hdr-"), pieces); err != nil {
		t.Fatal(err)
	}
	want := "pending-hdr-a" + string(bytes.Repeat([]byte("b"), 3000)) + "c"
	if out.String() != want || w.Buffered() != 0 {
		t.Fatalf("wrote %d bytes (%d buffered), want %d", out.Len(), w.Buffered(), len(want))
	}
	for _, b := range w.many[:cap(w.many)] {
		if b != nil {
			t.Fatal("WriteVec kept a reference to a piece")
		}
	}
	failing := newReplyWriter(errWriter{}, 64)
	if err := failing.WriteVec(nil, pieces); err == nil {
		t.Fatal("a failed write was not reported")
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestNbdcopyVectored: a real client (nbdcopy, 256 KiB requests, several
// in flight) copies an export out through ReadVec's vectored replies, byte
// for byte.
func TestNbdcopyVectored(t *testing.T) {
	nbdcopy := requireTool(t, "nbdcopy")
	const size = 16 << 20
	disk := newMem(size)
	rng := rand.New(rand.NewPCG(10, 11))
	img := make([]byte, size)
	for i := range img {
		img[i] = byte(rng.Uint32())
	}
	// Written, not set: BLOCK_STATUS must report data, not holes.
	if err := disk.WriteAt(context.Background(), img, 0); err != nil {
		t.Fatal(err)
	}
	exp := &memExports{devs: map[string]*memDevice{"disk": disk}}
	vexp := &vecExports{memExports: exp}
	_, addr := startServer(t, exp, func(s *Server) { s.Exports = vexp })
	out := filepath.Join(t.TempDir(), "out.img")
	run(t, nbdcopy, uri(addr, "disk"), out)
	got, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("image copied out differs: %v", err)
	}
	if vexp.calls.Load() == 0 {
		t.Fatal("ReadVec was never called")
	}
}
