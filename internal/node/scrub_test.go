package node

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/blocks/silo"
	"cairn/internal/peer"
	"cairn/policies"
)

// TestScrubPassIsBackgroundAndSyncsOnce: an anti-entropy pass on node a
// that rewrites the pieces node b lost marks every call it makes to b as
// background work (b notes no client activity, so b's own repair stays
// unthrottled while no client does I/O), and syncs b once at the end of
// the pass rather than once per rewritten piece; b then holds every piece
// again, durably (a power cut of b keeps them).
func TestScrubPassIsBackgroundAndSyncsOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	secret := bytes.Repeat([]byte{7}, peer.MinSecret)
	s, err := silo.Open(ctx, filepath.Join(t.TempDir(), "silo"), silo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	remote := memory.New(0)
	var noted atomic.Int64
	srv, err := peer.NewServer(peer.ServerOptions{Holder: remote, Secret: secret, NodeID: "b",
		ClientActivity: func() { noted.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ctx, l)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	cl := peer.NewClient(l.Addr().String(), peer.ClientOptions{Secret: secret, NodeID: "a", Timeout: 30 * time.Second})
	t.Cleanup(func() { cl.Close() })

	v := viewOf(t, true, "a", "b")
	c := clusterWithView(v)
	c.clients["b"] = cl
	c.scrub = scrubber{kick: make(chan struct{}, 1), period: time.Hour}
	n := &Node{silo: s, log: slog.New(slog.NewTextHandler(io.Discard, nil)), stores: map[string]blocks.Store{}, cluster: c}
	c.n = n
	c.setRepairRate(1 << 20) // would bite if b's pass were throttled

	st, err := n.redundantFor(policies.Redundancy{Replicas: 2}, policies.SpreadNode)
	if err != nil {
		t.Fatal(err)
	}
	const nblocks = 40
	var addrs []blocks.Addr
	for i := range nblocks {
		a, err := st.Put(ctx, bytes.Repeat([]byte{byte(i)}, 4096))
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	if err := st.(interface{ Sync(context.Context) error }).Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// b loses every piece it held.
	lost := 0
	_ = remote.Walk(ctx, func(k blocks.Addr) error {
		lost++
		return remote.DeletePiece(ctx, k)
	})
	if lost != nblocks {
		t.Fatalf("b held %d pieces, want %d (one of each block)", lost, nblocks)
	}
	noted.Store(0)
	syncs := remote.Syncs()

	c.scrubPass(ctx)

	ss := c.scrubStatus()
	if ss.Repaired != nblocks || ss.Unreadable != 0 {
		t.Fatalf("the pass repaired %d pieces (%d unreadable), want %d", ss.Repaired, ss.Unreadable, nblocks)
	}
	if k := noted.Load(); k != 0 {
		t.Errorf("b noted %d calls of the pass as client activity, want none", k)
	}
	if k := remote.Syncs() - syncs; k != 1 {
		t.Errorf("b synced %d times for %d rewritten pieces, want once, after the pass", k, nblocks)
	}
	remote.Crash() // a power cut of b: what it synced stays
	for i, a := range addrs {
		p, err := remote.GetPiece(ctx, blocks.PieceKey(a, 1))
		if err != nil || len(p) == 0 {
			// Piece 1 is b's for a block whose ranks put a first; the
			// others are piece 0 there.
			p, err = remote.GetPiece(ctx, blocks.PieceKey(a, 0))
		}
		if err != nil || len(p) == 0 {
			t.Fatalf("block %d: b lacks its piece after the pass and a power cut: %v", i, err)
		}
	}
}
