package peer

import (
	"bytes"
	"context"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// stuckSync is a holder whose Sync waits until release is closed;
// entered is closed when the first Sync starts.
type stuckSync struct {
	*memory.Store
	entered, release chan struct{}
}

func (s *stuckSync) Sync(ctx context.Context) error {
	select {
	case <-s.entered:
	default:
		close(s.entered)
	}
	<-s.release
	return s.Store.Sync(ctx)
}

// TestInlineSyncHoldsNothingForGood: a Sync alone on its connection is
// served by the connection's reader itself (inlineOp); requests sent while
// it waits are served once it returns, and the Sync's reply arrives.
func TestInlineSyncHoldsNothingForGood(t *testing.T) {
	ctx := testCtx(t)
	h := &stuckSync{Store: memory.New(0), entered: make(chan struct{}), release: make(chan struct{})}
	ts := startServer(t, h, "")
	c := newClient(t, ts.addr)
	key := blocks.Sum([]byte("piece"))
	if err := c.PutPiece(ctx, key, []byte("data")); err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 1)
	go func() { synced <- c.Sync(ctx) }()
	select {
	case <-h.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the Sync never reached the holder")
	}
	got := make(chan error, 1)
	go func() {
		p, err := c.GetPiece(ctx, key)
		if err == nil && !bytes.Equal(p, []byte("data")) {
			err = context.Canceled // any error: wrong bytes
		}
		got <- err
	}()
	served := false
	select {
	case err := <-got:
		// Served beside the Sync (it did not run inline): fine too.
		if err != nil {
			t.Fatalf("GetPiece beside a stuck Sync: %v", err)
		}
		served = true
	case <-time.After(200 * time.Millisecond):
		// Waiting behind the inline Sync, as documented.
	}
	close(h.release)
	if err := <-synced; err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if served {
		return
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("GetPiece after the Sync returned: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a request sent during an inline Sync was never served")
	}
}
