package node

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/blocks/silo"
	"cairn/internal/peer"
	"cairn/overlay"
)

// testCluster is a two-node cluster as node "a" sees it: its own silo,
// and node "b" behind a real peer server over a memory store (whose
// Crash drops what no Sync covered).
func testCluster(t *testing.T) (*cluster, *memory.Store) {
	t.Helper()
	remote := memory.New(0)
	return testClusterWith(t, peer.ServerOptions{Holder: remote}), remote
}

// testClusterWith is testCluster with node b's server options (its
// Holder, and any other; the secret and node ID are set here).
func testClusterWith(t *testing.T, opts peer.ServerOptions) *cluster {
	t.Helper()
	ctx := context.Background()
	secret := bytes.Repeat([]byte{7}, peer.MinSecret)
	s, err := silo.Open(ctx, filepath.Join(t.TempDir(), "silo"), silo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	opts.Secret, opts.NodeID = secret, "b"
	addr := servePeerWith(t, opts)
	cl := peer.NewClient(addr, peer.ClientOptions{Secret: secret, NodeID: "a", Timeout: 30 * time.Second})
	t.Cleanup(func() { cl.Close() })
	c := &cluster{
		n:       &Node{silo: s},
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		self:    overlay.Node{ID: "a"},
		clients: map[string]*peer.Client{"b": cl},
		suspect: map[string]time.Time{},
		hints:   map[hint]struct{}{},
		v: &view{
			nodes: map[string]overlay.Node{"a": {ID: "a"}, "b": {ID: "b"}},
			alive: map[string]bool{"a": true, "b": true},
		},
	}
	return c
}

// TestJournalAppendSyncDurable: a journal slot's AppendSync makes the
// record, and the pieces put on that node before it, durable there (the
// remote holder's Crash drops what no Sync covered), and the cluster's
// sync group then counts the node without calling it; a put after that
// makes the sync group call it again.
func TestJournalAppendSyncDurable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, remote := testCluster(t)
	log := blocks.NameID("vol")
	g := &journalGroup{c: c, log: log}
	slot := &journalSlot{g: g, node: "b"}
	local := &journalSlot{g: g, node: "a"}
	g.slots = []*journalSlot{slot, local}

	piece := []byte("a piece put before the record")
	if err := c.putPiece(ctx, "b", blocks.Sum(piece), piece); err != nil {
		t.Fatal(err)
	}
	if c.isCovered("b") {
		t.Fatal("node b counted as synced with a piece put and no sync")
	}
	t0 := time.Now()
	for _, s := range g.slots {
		if err := s.AppendSync(ctx, log, 1, 1, []byte("record 1")); err != nil {
			t.Fatalf("AppendSync on %s: %v", s.node, err)
		}
	}
	if !c.isCovered("a") || !c.isCovered("b") {
		t.Fatal("AppendSync did not count as a sync of its node")
	}
	syncs := remote.Syncs()
	if err := (syncGroup{c}).Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// (On a machine so slow that a second passed, b is synced again,
	// rightly: coverage is only trusted for coveredFresh.)
	if remote.Syncs() != syncs && time.Since(t0) < coveredFresh {
		t.Fatal("the sync group synced node b again right after AppendSync covered it")
	}
	// A put after the sync: the sync group must call b again.
	syncs = remote.Syncs()
	piece2 := []byte("a piece put after the record")
	if err := c.putPiece(ctx, "b", blocks.Sum(piece2), piece2); err != nil {
		t.Fatal(err)
	}
	if c.isCovered("b") {
		t.Fatal("node b counted as synced after a later put")
	}
	if err := (syncGroup{c}).Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if remote.Syncs() != syncs+1 {
		t.Fatalf("the sync group synced node b %d times after a put, want 1", remote.Syncs()-syncs)
	}
	// What was synced survives a power cut of b.
	if err := slot.Append(ctx, log, 1, 2, []byte("record 2, never synced")); err != nil {
		t.Fatal(err)
	}
	remote.Crash()
	var recs []string
	if err := slot.Replay(ctx, log, 0, func(_ blocks.Epoch, _ uint64, rec []byte) error {
		recs = append(recs, string(rec))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0] != "record 1" {
		t.Fatalf("after b's power cut its journal holds %q, want just record 1", recs)
	}
	for _, p := range [][]byte{piece, piece2} {
		if got, err := remote.GetPiece(ctx, blocks.Sum(p)); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("piece %q after b's power cut: %v", p, err)
		}
	}
	// The local copy replays too.
	n := 0
	if err := local.Replay(ctx, log, 0, func(blocks.Epoch, uint64, []byte) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("local copy: %d records, %v", n, err)
	}
}

// TestSyncCoverage: a sync covers only the puts that returned before it
// was sent, and a node counts as synced only for coveredFresh.
func TestSyncCoverage(t *testing.T) {
	c := &cluster{}
	if c.isCovered("x") {
		t.Fatal("a node never synced counted as synced")
	}
	ns := c.syncState("x")
	ns.puts.Add(1)
	// A put that returns while the sync is under way is not covered.
	if err := c.synced("x", func() error { ns.puts.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	if c.isCovered("x") {
		t.Fatal("a put that returned during a sync counted as covered")
	}
	if err := c.synced("x", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if !c.isCovered("x") {
		t.Fatal("a sync after every put did not count")
	}
	// A failed sync covers nothing.
	ns.puts.Add(1)
	if err := c.synced("x", func() error { return blocks.ErrUnavailable }); err == nil || c.isCovered("x") {
		t.Fatal("a failed sync counted")
	}
	// An old sync does not count.
	if err := c.synced("x", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	ns.at.Store(time.Now().Add(-2 * coveredFresh).UnixNano())
	if c.isCovered("x") {
		t.Fatal("a sync older than coveredFresh counted")
	}
}
