package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// notHosted is a MutableStore that hosts nothing.
type notHosted struct{ calls atomic.Int64 }

func (n *notHosted) Load(context.Context, blocks.ID) (blocks.Version, []byte, error) {
	n.calls.Add(1)
	return 0, nil, fmt.Errorf("test: shard elsewhere: %w (%w)", ErrNotHosted, blocks.ErrUnavailable)
}

func (n *notHosted) CompareAndSet(context.Context, blocks.ID, blocks.Version, []byte) (blocks.Version, error) {
	n.calls.Add(1)
	return 0, fmt.Errorf("test: shard elsewhere: %w (%w)", ErrNotHosted, blocks.ErrUnavailable)
}

// TestMutableRoundTrip: Load and CompareAndSet through the transport behave
// as the store behind the server: versions, payloads (empty and absent
// told apart), deletes, conflicts with the current version, and the size
// limit.
func TestMutableRoundTrip(t *testing.T) {
	m := memory.NewMutable()
	ts := startServer(t, nil, "", func(o *ServerOptions) { o.Mutable = m })
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	id := blocks.NameID("root")

	v, p, err := c.Load(ctx, id)
	if err != nil || v != 0 || p != nil {
		t.Fatalf("Load of an absent block: %d %q %v, want 0 nil nil", v, p, err)
	}
	if v, err = c.CompareAndSet(ctx, id, 0, []byte("one")); err != nil || v != 1 {
		t.Fatalf("CompareAndSet 0->1: %d %v", v, err)
	}
	v, err = c.CompareAndSet(ctx, id, 0, []byte("lost"))
	if !errors.Is(err, blocks.ErrConflict) || v != 1 {
		t.Fatalf("stale CompareAndSet: %d %v, want 1 and ErrConflict", v, err)
	}
	if errors.Is(err, blocks.ErrUnavailable) || errors.Is(err, ErrNotHosted) {
		t.Fatalf("a conflict is not unavailable: %v", err)
	}
	if v, p, err = c.Load(ctx, id); err != nil || v != 1 || string(p) != "one" {
		t.Fatalf("Load: %d %q %v", v, p, err)
	}
	if v, err = c.CompareAndSet(ctx, id, 1, []byte{}); err != nil || v != 2 {
		t.Fatalf("CompareAndSet to empty: %d %v", v, err)
	}
	if v, p, err = c.Load(ctx, id); err != nil || v != 2 || p == nil || len(p) != 0 {
		t.Fatalf("Load of an empty block: %d %v %v, want 2 and an empty non-nil payload", v, p, err)
	}
	if v, err = c.CompareAndSet(ctx, id, 2, nil); err != nil || v != 0 {
		t.Fatalf("delete: %d %v", v, err)
	}
	if v, p, err = c.Load(ctx, id); err != nil || v != 0 || p != nil {
		t.Fatalf("Load after delete: %d %q %v", v, p, err)
	}
	big := bytes.Repeat([]byte{7}, MaxMutablePayload)
	if v, err = c.CompareAndSet(ctx, id, 0, big); err != nil || v != 1 {
		t.Fatalf("CompareAndSet of MaxMutablePayload bytes: %d %v", v, err)
	}
	if _, p, err = c.Load(ctx, id); err != nil || !bytes.Equal(p, big) {
		t.Fatalf("Load of MaxMutablePayload bytes: %d bytes, %v", len(p), err)
	}
	if _, err = c.CompareAndSet(ctx, id, 1, append(big, 1)); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("CompareAndSet over the limit: %v, want ErrTooLarge", err)
	}
}

// TestMutableConcurrentCAS: many callers racing on one block through the
// transport: exactly one wins each version, the others see ErrConflict.
func TestMutableConcurrentCAS(t *testing.T) {
	m := memory.NewMutable()
	ts := startServer(t, nil, "", func(o *ServerOptions) { o.Mutable = m })
	c := newClient(t, ts.addr)
	ctx := testCtx(t)
	id := blocks.NameID("counter")
	const callers, rounds = 8, 20
	var wins atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				v, _, err := c.Load(ctx, id)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := c.CompareAndSet(ctx, id, v, []byte(fmt.Sprint(v+1))); err == nil {
					wins.Add(1)
				} else if !errors.Is(err, blocks.ErrConflict) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	v, p, err := c.Load(ctx, id)
	if err != nil || int64(v) != wins.Load() || string(p) != fmt.Sprint(v) {
		t.Fatalf("after %d wins: version %d payload %q err %v", wins.Load(), v, p, err)
	}
}

// TestMutableNotHosted: a server whose store hosts nothing (or that has no
// store) answers not-hosted, which the client reports as ErrNotHosted and
// ErrUnavailable, never as a conflict.
func TestMutableNotHosted(t *testing.T) {
	nh := &notHosted{}
	for name, m := range map[string]blocks.MutableStore{"store": nh, "none": nil} {
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, nil, "", func(o *ServerOptions) { o.Mutable = m })
			c := newClient(t, ts.addr)
			ctx := testCtx(t)
			_, _, lerr := c.Load(ctx, blocks.NameID("x"))
			_, cerr := c.CompareAndSet(ctx, blocks.NameID("x"), 0, []byte("p"))
			for _, err := range []error{lerr, cerr} {
				if !errors.Is(err, ErrNotHosted) || !errors.Is(err, blocks.ErrUnavailable) || errors.Is(err, blocks.ErrConflict) {
					t.Errorf("%v: want ErrNotHosted and ErrUnavailable", err)
				}
			}
		})
	}
	if nh.calls.Load() != 2 {
		t.Errorf("the store saw %d calls, want 2", nh.calls.Load())
	}
}

// TestMutableNotSent: a CompareAndSet to a peer that is not listening is
// known not to have been sent; one whose reply never came is not.
func TestMutableNotSent(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newClient(t, addr)
	ctx := testCtx(t)
	_, err = c.CompareAndSet(ctx, blocks.NameID("x"), 0, []byte("p"))
	if !errors.Is(err, ErrNotSent) || !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("CompareAndSet to nobody: %v, want ErrNotSent and ErrUnavailable", err)
	}

	release := make(chan struct{})
	ts := startServer(t, nil, "", func(o *ServerOptions) { o.Mutable = &blockingMutable{release: release} })
	c2 := newClient(t, ts.addr, func(o *ClientOptions) { o.Timeout = 300 * time.Millisecond })
	_, err = c2.CompareAndSet(ctx, blocks.NameID("x"), 0, []byte("p"))
	close(release)
	if !errors.Is(err, blocks.ErrUnavailable) || errors.Is(err, ErrNotSent) {
		t.Fatalf("CompareAndSet without a reply: %v, want ErrUnavailable, not ErrNotSent", err)
	}
}

// blockingMutable blocks every call until release is closed.
type blockingMutable struct{ release chan struct{} }

func (b *blockingMutable) Load(ctx context.Context, id blocks.ID) (blocks.Version, []byte, error) {
	<-b.release
	return 0, nil, nil
}

func (b *blockingMutable) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, payload []byte) (blocks.Version, error) {
	<-b.release
	return want + 1, nil
}

// FuzzMutableMessages: the mutable-block decoders never panic; what
// decodes re-encodes to the same bytes.
func FuzzMutableMessages(f *testing.F) {
	id := blocks.NameID("volume root")
	f.Add(append(encodeCompareAndSet(id, 7, []byte("payload")), "payload"...))
	f.Add(encodeCompareAndSet(id, 3, nil))
	f.Add(encodeCompareAndSet(id, 0, []byte{}))
	f.Add(append(encodeCompareAndSet(id, 1, nil), 'x'))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 9, 'v', 'a', 'l'})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(make([]byte, 41))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, p []byte) {
		if id, want, payload, err := decodeCompareAndSet(p); err == nil {
			enc := append(encodeCompareAndSet(id, want, payload), payload...)
			if !bytes.Equal(enc, p) {
				t.Fatalf("compare-and-set re-encodes to %x, not %x", enc, p)
			}
			if len(payload) > MaxMutablePayload {
				t.Fatal("payload over the limit")
			}
		}
		if v, payload, err := decodeLoadReply(p); err == nil {
			if len(payload) > MaxMutablePayload || (payload == nil) != (v == 0 && len(p) == 8) {
				t.Fatalf("load reply %x: version %d payload %v", p, v, payload)
			}
		}
		_, _, _ = decodeVersioned("conflict", p)
	})
}

// FuzzMutableServer: the server's decoding of any mutable-op payload gives
// a handler or an error (which closes only that connection), never a panic.
func FuzzMutableServer(f *testing.F) {
	id := blocks.NameID("b")
	f.Add(opLoad, id[:])
	f.Add(opCompareAndSet, append(encodeCompareAndSet(id, 0, []byte("x")), 'x'))
	f.Add(opCompareAndSet, encodeCompareAndSet(id, 5, nil))
	f.Add(opCompareAndSet, []byte{1, 2, 3})
	f.Add(opLoad, []byte{})
	srv := &Server{opts: ServerOptions{Mutable: memory.NewMutable()}}
	f.Fuzz(func(t *testing.T, op byte, p []byte) {
		if op != opLoad && op != opCompareAndSet {
			op = opLoad
		}
		sc := &serverConn{s: srv, ctx: context.Background()}
		fn, err := sc.decodeMutable(frame{op: op, id: 1, payload: p})
		if err == nil && fn == nil {
			t.Fatal("no error and no handler")
		}
	})
}
