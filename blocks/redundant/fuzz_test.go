package redundant

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
)

// FuzzParsePiece feeds arbitrary bytes to the piece decoder: it must never
// panic, and what it accepts must re-encode to the same header.
func FuzzParsePiece(f *testing.F) {
	c := newCluster(f, config{data: 4, parity: 2, holders: 6})
	r := newCluster(f, config{replicas: 2, holders: 1})
	for _, data := range [][]byte{nil, []byte("x"), blockstest.Random(1, 1000)} {
		for _, cl := range []*cluster{c, r} {
			addr, err := cl.s.Put(context.Background(), data)
			if err != nil {
				f.Fatal(err)
			}
			for _, p := range cl.pieces(f, addr) {
				f.Add(p)
			}
		}
	}
	f.Add([]byte{})
	f.Add([]byte(pieceMagic))
	f.Fuzz(func(t *testing.T, p []byte) {
		haddr, hidx, herr := PieceHeader(p)
		if herr != nil && !errors.Is(herr, blocks.ErrCorrupt) {
			t.Fatalf("PieceHeader error %v does not wrap ErrCorrupt", herr)
		}
		addr, idx, err := ParsePiece(p)
		if err == nil && (herr != nil || haddr != addr || hidx != idx) {
			t.Fatalf("PieceHeader disagrees with ParsePiece: %v", herr)
		}
		if err != nil {
			if !errors.Is(err, blocks.ErrCorrupt) {
				t.Fatalf("ParsePiece error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		h, err := parseHeader(p)
		if err != nil || h.addr != addr || int(h.index) != idx {
			t.Fatalf("ParsePiece accepted what parseHeader refuses: %v", err)
		}
		again := make([]byte, HeaderSize)
		h.put(again)
		if !bytes.Equal(again, p[:HeaderSize]) {
			t.Fatalf("header does not re-encode to itself")
		}
	})
}

// FuzzGet stores arbitrary bytes as piece 0 of a block on a holder: Get
// must never panic nor return bytes that are not the block.
func FuzzGet(f *testing.F) {
	c := newCluster(f, config{replicas: 1, holders: 1})
	addr, err := c.s.Put(context.Background(), []byte("the block"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.pieces(f, addr)[0])
	f.Add([]byte("garbage"))
	ec := newCluster(f, config{data: 2, parity: 1, holders: 1})
	if _, err := ec.s.Put(context.Background(), []byte("the block")); err != nil {
		f.Fatal(err)
	}
	f.Add(ec.pieces(f, addr)[0])
	f.Fuzz(func(t *testing.T, p []byte) {
		for _, cfg := range []config{{replicas: 1, holders: 1}, {data: 2, parity: 1, holders: 1}} {
			c := newCluster(t, cfg)
			for i := range cfg.pieces() {
				m := c.holder(addr, i).Store
				if err := m.PutPiece(t.Context(), blocks.PieceKey(addr, i), p); err != nil {
					t.Fatal(err)
				}
			}
			got, err := c.s.Get(t.Context(), addr)
			if err == nil && string(got) != "the block" {
				t.Fatalf("Get returned %q", got)
			}
		}
	})
}
