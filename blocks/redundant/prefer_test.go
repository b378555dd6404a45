package redundant

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/blocks/memory"
)

// counting is a holder that counts its GetPiece calls: a remote node's.
type counting struct {
	*memory.Store
	gets atomic.Int64
}

func (c *counting) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	c.gets.Add(1)
	return c.Store.GetPiece(ctx, key)
}

// TestPrefersLocalReplica checks that a replicated block is read from the
// replica on a local holder, whatever its index, and that the remote
// holders are not asked; and that puts reach every holder.
func TestPrefersLocalReplica(t *testing.T) {
	ctx := t.Context()
	local := &flaky{Store: memory.New(0), local: true}
	remotes := []*counting{{Store: memory.New(0)}, {Store: memory.New(0)}}
	all := []blocks.Holder{remotes[0], remotes[1], local}
	s, err := New(Options{
		Replicas: 3,
		Holders:  func(addr blocks.Addr, n int) []blocks.Holder { return place(all, addr, n) },
		All:      func() []blocks.Holder { return all },
	})
	if err != nil {
		t.Fatal(err)
	}
	var addrs []blocks.Addr
	var datas [][]byte
	at := map[int]bool{} // indexes the local replica was found at
	for i := range 30 {
		data := blockstest.Random(uint64(i), 4096)
		addr, err := s.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		for j, h := range place(all, addr, 3) {
			if h == blocks.Holder(local) {
				at[j] = true
			}
		}
		addrs, datas = append(addrs, addr), append(datas, data)
	}
	if len(at) < 2 {
		t.Fatalf("the local replica was at indexes %v only; the test wants it at several", at)
	}
	for _, r := range remotes {
		n := 0
		if err := r.Store.Walk(ctx, func(blocks.Addr) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != len(addrs) {
			t.Fatalf("a remote holder got %d pieces, want %d", n, len(addrs))
		}
	}
	for i, addr := range addrs {
		got, err := s.Get(ctx, addr)
		if err != nil || !bytes.Equal(got, datas[i]) {
			t.Fatalf("Get %d: %d bytes, %v", i, len(got), err)
		}
		got, err = s.GetInto(ctx, addr, make([]byte, 0, 8192))
		if err != nil || !bytes.Equal(got, datas[i]) {
			t.Fatalf("GetInto %d: %d bytes, %v", i, len(got), err)
		}
	}
	var buf []byte
	got, errs := s.GetMany(ctx, addrs, &buf)
	for i := range addrs {
		if errs[i] != nil || !bytes.Equal(got[i], datas[i]) {
			t.Fatalf("GetMany %d: %d bytes, %v", i, len(got[i]), errs[i])
		}
	}
	for j, r := range remotes {
		if n := r.gets.Load(); n != 0 {
			t.Fatalf("remote holder %d was read %d times; want every read from the local replica", j, n)
		}
	}
	// A bad local replica: the read falls back to a remote one (hashed)
	// and repairs the local copy.
	addr := addrs[0]
	idx := -1
	for j, h := range place(all, addr, 3) {
		if h == blocks.Holder(local) {
			idx = j
		}
	}
	if err := local.Store.DeletePiece(ctx, blocks.PieceKey(addr, idx)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, addr); err != nil || !bytes.Equal(got, datas[0]) {
		t.Fatalf("Get with the local replica lost: %d bytes, %v", len(got), err)
	}
	if ok, _ := local.HasPiece(ctx, blocks.PieceKey(addr, idx)); !ok {
		t.Fatal("the lost local replica was not repaired")
	}
}
