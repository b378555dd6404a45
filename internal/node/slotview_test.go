package node

import (
	"bytes"
	"context"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/redundant"
	"cairn/internal/throttle"
)

// TestLocalSlotReadsSplit: a cluster volume's chunk read takes the split
// path through the local slot (the redundancy layer's GetSplit: the
// payload copied once, from the silo into the reader's buffer) and gets
// the block's bytes; a background read is refused there (it takes the
// slot's way), and so is a block the silo lacks.
func TestLocalSlotReadsSplit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _ := testCluster(t)
	local := &localSlot{&slot{c: c, v: c.v, primary: "a", cands: []string{"a"}, nprim: 1}}
	st, err := redundant.New(redundant.Options{
		Replicas: 1,
		Holders:  func(blocks.Addr, int) []blocks.Holder { return []blocks.Holder{local} },
		All:      func() []blocks.Holder { return []blocks.Holder{local} },
	})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("split read "), 400)
	addr, err := st.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	head, tail := make([]byte, 100), make([]byte, len(data)-100)
	scratch := make([]byte, blocks.SplitScratch)
	if !st.GetSplit(ctx, addr, head, tail, scratch) {
		t.Fatal("GetSplit through the local slot reported false: reads fall back to the copying path")
	}
	if got := append(append([]byte(nil), head...), tail...); !bytes.Equal(got, data) {
		t.Fatalf("GetSplit read %d bytes that differ from the %d written", len(got), len(data))
	}
	if st.GetSplit(throttle.Background(ctx), addr, head, tail, scratch) {
		t.Error("a background read took the split path; it must take the slot's way")
	}
	if st.GetSplit(ctx, blocks.Sum([]byte("never written")), head, tail, scratch) {
		t.Error("GetSplit of a block never written reported true")
	}
}
