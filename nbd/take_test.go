package nbd

import (
	"bytes"
	"context"
	"math/rand/v2"
	"sync"
	"testing"

	"cairn/nbd/proto"
)

// takerDevice is a memDevice with TakeWrite: it writes a lent payload
// through, then keeps it (with a copy of what it held) until the test
// lets it go, as a write-back cache keeps its chunks.
type takerDevice struct {
	Device
	mu    sync.Mutex
	held  []heldBuf
	small int // writes that came through WriteAt
}

type heldBuf struct {
	p, want []byte
	release func()
}

func (d *takerDevice) WriteAt(ctx context.Context, p []byte, off int64) error {
	d.mu.Lock()
	d.small++
	d.mu.Unlock()
	return d.Device.WriteAt(ctx, p, off)
}

func (d *takerDevice) TakeWrite(ctx context.Context, p []byte, off int64, release func()) error {
	if err := d.Device.WriteAt(ctx, p, off); err != nil {
		release()
		return err
	}
	d.mu.Lock()
	d.held = append(d.held, heldBuf{p, bytes.Clone(p), release})
	d.mu.Unlock()
	return nil
}

// releaseAll checks that no held buffer changed while the device held it
// (the server reused none of them), then gives them back.
func (d *takerDevice) releaseAll(t *testing.T) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, h := range d.held {
		if !bytes.Equal(h.p, h.want) {
			t.Fatalf("lent buffer %d changed while the device held it", i)
		}
		h.release()
	}
	n := len(d.held)
	d.held = nil
	return n
}

// TestTakeWrite: WRITEs of takeMin bytes or more are lent to a
// PayloadTaker (smaller ones go through WriteAt); the server never reuses
// a lent buffer before the device releases it, however many writes
// follow; and the data reads back.
func TestTakeWrite(t *testing.T) {
	exp, disk := testExports()
	dev := &takerDevice{}
	te := &wrapExports{exp, func(d Device) Device { dev.Device = d; return dev }}
	_, addr := startServer(t, exp, func(s *Server) { s.Exports = te; s.Workers = 4 })
	rc := connect(t, addr, "disk", true)
	rng := rand.New(rand.NewPCG(7, 8))
	want := make([]byte, 16<<20)
	lent := 0
	for round := range 3 {
		const n = 24
		go func() {
			for i := range n {
				size := takeMin << (i % 3) // 64, 128, 256 KiB
				if i%4 == 3 {
					size = 4096 // below takeMin
				}
				// Its own 512 KiB slot of the disk: writes in flight
				// together may be applied in any order, so none overlap.
				const slot = 512 << 10
				off := i*slot + rng.IntN(slot-size+1)&^511
				b := make([]byte, size)
				for j := range b {
					b[j] = byte(rng.Uint32())
				}
				copy(want[off:], b)
				rc.send(proto.Request{Type: proto.CmdWrite, Offset: uint64(off), Length: uint32(size)}, b)
			}
		}()
		for range n {
			if r := rc.recv(nil); r.errno != 0 {
				t.Fatalf("round %d: write reply %v", round, r.errno)
			}
		}
		lent += dev.releaseAll(t)
	}
	if lent != 3*18 || dev.small != 3*6 {
		t.Fatalf("%d writes lent and %d through WriteAt, want %d and %d", lent, dev.small, 3*18, 3*6)
	}
	if !bytes.Equal(disk.data, want) {
		t.Fatal("the device's data differs from what was written")
	}
	rc.disc()
}
