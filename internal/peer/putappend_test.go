package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// testPieces returns n distinct pieces of a few hundred bytes each.
func testPieces(n int) []Piece {
	ps := make([]Piece, n)
	for i := range ps {
		data := bytes.Repeat([]byte{byte(i + 1)}, 300+i)
		ps[i] = Piece{Key: blocks.Sum(data), Data: data}
	}
	return ps
}

// checkPieces fails unless every piece reads back from h.
func checkPieces(t *testing.T, ctx context.Context, h blocks.Holder, ps []Piece) {
	t.Helper()
	for i, p := range ps {
		got, err := h.GetPiece(ctx, p.Key)
		if err != nil || !bytes.Equal(got, p.Data) {
			t.Fatalf("piece %d: %d bytes, %v; want %d bytes", i, len(got), err, len(p.Data))
		}
	}
}

// TestPutAppendSyncDurable: the pieces and the record of one
// PutAppendSync survive a power cut of the holder (memory.Store.Crash
// drops what no Sync covered), after one Sync and one request.
func TestPutAppendSyncDurable(t *testing.T) {
	ctx := testCtx(t)
	store := memory.New(0)
	ts := startServer(t, store, "")
	c := newClient(t, ts.addr)
	log := blocks.NameID("vol")
	ps := testPieces(3)
	// The first call probes; count the second.
	if _, err := c.PutAppendSync(ctx, ps[:1], log, 1, 1, []byte("rec1")); err != nil {
		t.Fatal(err)
	}
	syncs, reqs := store.Syncs(), ts.srv.Stats().Requests
	errs, err := c.PutAppendSync(ctx, ps[1:], log, 1, 2, []byte("rec2"))
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != 2 || errs[0] != nil || errs[1] != nil {
		t.Fatalf("piece outcomes %v, want two nils", errs)
	}
	if n := store.Syncs() - syncs; n != 1 {
		t.Fatalf("the holder synced %d times for one PutAppendSync, want 1", n)
	}
	if n := ts.srv.Stats().Requests - reqs; n != 1 {
		t.Fatalf("one PutAppendSync took %d requests, want 1", n)
	}
	store.Crash()
	got := replayAll(t, ctx, c, log)
	if string(got[1]) != "rec1" || string(got[2]) != "rec2" {
		t.Fatalf("after the crash the log holds %q and %q, want rec1 and rec2", got[1], got[2])
	}
	checkPieces(t, ctx, c, ps)
}

// pieceFailing is a holder that refuses one piece (no space).
type pieceFailing struct {
	*memory.Store
	bad blocks.Addr
}

func (p *pieceFailing) PutPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	if key == p.bad {
		return fmt.Errorf("fault: %w", blocks.ErrNoSpace)
	}
	return p.Store.PutPiece(ctx, key, data)
}

// TestPutAppendSyncErrors: a piece the holder refuses comes back as that
// piece's error, with its sentinel, and the record is appended all the
// same; Append's and Sync's errors fail the whole call; a record over
// MaxRecord is refused before it is sent.
func TestPutAppendSyncErrors(t *testing.T) {
	ctx := testCtx(t)
	ps := testPieces(3)
	log := blocks.NameID("vol")
	store := &pieceFailing{Store: memory.New(0), bad: ps[1].Key}
	c := newClient(t, startServer(t, store, "").addr)
	errs, err := c.PutAppendSync(ctx, ps, log, 1, 1, []byte("rec"))
	if err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || !errors.Is(errs[1], blocks.ErrNoSpace) || errs[2] != nil {
		t.Fatalf("piece outcomes %v, want nil, ErrNoSpace, nil", errs)
	}
	store.Crash()
	if got := replayAll(t, ctx, c, log); string(got[1]) != "rec" {
		t.Fatalf("record after a refused piece: %q", got[1])
	}
	checkPieces(t, ctx, c, []Piece{ps[0], ps[2]})

	if err := store.Seal(ctx, log, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutAppendSync(ctx, ps[:1], log, 4, 2, []byte("r")); !errors.Is(err, blocks.ErrFenced) {
		t.Fatalf("PutAppendSync below the seal: %v, want ErrFenced", err)
	}
	if _, err := c.PutAppendSync(ctx, ps[:1], log, 5, 2, make([]byte, blocks.MaxRecord+1)); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("PutAppendSync of an over-long record: %v, want ErrTooLarge", err)
	}
	fc := newClient(t, startServer(t, &syncFailing{Store: memory.New(0)}, "").addr)
	if _, err := fc.PutAppendSync(ctx, ps[:1], log, 1, 1, []byte("r")); !errors.Is(err, blocks.ErrNoSpace) {
		t.Fatalf("PutAppendSync where Sync fails: %v, want ErrNoSpace", err)
	}
}

// TestPutAppendSyncOverLimits: pieces past what one request carries go
// apart, then the record with AppendSync; all of it is durable.
func TestPutAppendSyncOverLimits(t *testing.T) {
	ctx := testCtx(t)
	store := memory.New(0)
	c := newClient(t, startServer(t, store, "").addr)
	log := blocks.NameID("vol")
	big := bytes.Repeat([]byte{7}, CarryPiece+1)
	ps := append(testPieces(2), Piece{Key: blocks.Sum(big), Data: big})
	errs, err := c.PutAppendSync(ctx, ps, log, 1, 1, []byte("rec"))
	if err != nil || len(errs) != 3 || errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("PutAppendSync past the limits: %v, %v", errs, err)
	}
	store.Crash()
	if got := replayAll(t, ctx, c, log); string(got[1]) != "rec" {
		t.Fatalf("record: %q", got[1])
	}
	checkPieces(t, ctx, c, ps)
}

// TestPutAppendSyncOlderServer: against a server that predates ops 13 to
// 15, the probe gets status 8 and the client puts the pieces one by one,
// then appends and syncs: everything is durable, and only probes were
// refused.
func TestPutAppendSyncOlderServer(t *testing.T) {
	ctx := testCtx(t)
	store := memory.New(0)
	addr, refused := startOldServer(t, store)
	c := newClient(t, addr)
	log := blocks.NameID("vol")
	ps := testPieces(4)
	for seq := uint64(1); seq <= 2; seq++ {
		part := ps[2*(seq-1) : 2*seq]
		errs, err := c.PutAppendSync(ctx, part, log, 1, seq, []byte{byte(seq)})
		if err != nil || errs[0] != nil || errs[1] != nil {
			t.Fatalf("PutAppendSync %d against an older server: %v, %v", seq, errs, err)
		}
	}
	if n := refused[opPutAppendSync].Load(); n != 1 {
		t.Fatalf("the older server refused %d PutAppendSync frames, want 1 (the probe)", n)
	}
	store.Crash()
	if got := replayAll(t, ctx, store, log); len(got) != 2 {
		t.Fatalf("after a crash the older server holds %d records, want 2", len(got))
	}
	checkPieces(t, ctx, store, ps)
}
