package node

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// carrySetup is testCluster with node b's journal slot (and a's), and a
// piece slot whose holder is b.
func carrySetup(t *testing.T) (c *cluster, remote *memory.Store, jb, ja *journalSlot, sl *slot) {
	c, mem := testCluster(t)
	g := &journalGroup{c: c, log: blocks.NameID("vol")}
	jb = &journalSlot{g: g, node: "b"}
	ja = &journalSlot{g: g, node: "a"}
	g.slots = []*journalSlot{jb, ja}
	sl = &slot{c: c, v: c.v, idx: 1, primary: "b", cands: []string{"a", "b"}, nprim: 2}
	return c, mem, jb, ja, sl
}

// TestCarriedFlush: under a FLUSH's carry a piece for a journal node is
// held back (PutPiece returns, b does not have it), then goes with that
// node's AppendSync: after it, b holds the piece and the record durably
// (a power cut keeps both) after one sync, the sync group counts b as
// synced, and finish has nothing left to put.
func TestCarriedFlush(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, remote, jb, ja, sl := carrySetup(t)
	log := jb.g.log
	piece := []byte("a piece carried with the record")
	key := blocks.Sum(piece)
	cctx, finish := ja.CarryFlush(ctx)
	if err := sl.PutPiece(cctx, key, piece); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.GetPiece(ctx, key); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("the held piece is on b before the append: %v", err)
	}
	syncs := remote.Syncs()
	if err := jb.AppendSync(cctx, log, 1, 1, []byte("record 1")); err != nil {
		t.Fatal(err)
	}
	if n := remote.Syncs() - syncs; n != 1 {
		t.Fatalf("b synced %d times for a carried append, want 1", n)
	}
	if err := finish(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.isCovered("b") {
		t.Fatal("the carried append did not count as a sync of b's pieces")
	}
	remote.Crash()
	if got, err := remote.GetPiece(ctx, key); err != nil || !bytes.Equal(got, piece) {
		t.Fatalf("the carried piece after b's power cut: %q, %v", got, err)
	}
	n := 0
	if err := jb.Replay(ctx, log, 0, func(blocks.Epoch, uint64, []byte) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("b's journal after its power cut: %d records, %v", n, err)
	}
	// After finish the carry holds nothing more: a put goes at once.
	late := []byte("a piece put after finish")
	if err := sl.PutPiece(cctx, blocks.Sum(late), late); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.GetPiece(ctx, blocks.Sum(late)); err != nil {
		t.Fatalf("a put after finish was held: %v", err)
	}
}

// TestCarryNotSent: a held piece whose journal copy skipped the append
// (down) is put by finish; a piece for a node that holds no journal copy
// is never held.
func TestCarryNotSent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, remote, jb, ja, sl := carrySetup(t)
	piece := []byte("held, then the append skipped b")
	key := blocks.Sum(piece)
	cctx, finish := ja.CarryFlush(ctx)
	if err := sl.PutPiece(cctx, key, piece); err != nil {
		t.Fatal(err)
	}
	jb.g.mu.Lock()
	jb.down = true // b's copy is down: its AppendSync is skipped...
	jb.g.mu.Unlock()
	c.mu.Lock()
	c.suspect["b"] = time.Now().Add(time.Hour) // ...and not restored
	c.mu.Unlock()
	if err := jb.AppendSync(cctx, jb.g.log, 1, 1, []byte("r")); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.GetPiece(ctx, key); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("piece on b before finish: %v", err)
	}
	c.mu.Lock()
	delete(c.suspect, "b")
	c.mu.Unlock()
	if err := finish(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := remote.GetPiece(ctx, key); err != nil || !bytes.Equal(got, piece) {
		t.Fatalf("finish did not put the piece left behind: %q, %v", got, err)
	}

	// A journal without b: b's pieces are not held.
	_, remote2, _, ja2, sl2 := carrySetup(t)
	ja2.g.slots = []*journalSlot{ja2}
	cctx2, finish2 := ja2.CarryFlush(ctx)
	other := []byte("b holds no journal copy")
	if err := sl2.PutPiece(cctx2, blocks.Sum(other), other); err != nil {
		t.Fatal(err)
	}
	if _, err := remote2.GetPiece(ctx, blocks.Sum(other)); err != nil {
		t.Fatalf("a piece for a node outside the journal was held: %v", err)
	}
	if err := finish2(ctx); err != nil {
		t.Fatal(err)
	}
}
