package redundant

import (
	"bytes"
	"errors"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/blocks/silo"
)

// TestGetManyOverSilos: GetMany over real silos (which read neighbouring
// pieces with one pread) returns every block Get returns, including blocks
// whose first replica was lost (read from another replica and repaired),
// blocks never stored (ErrNotFound), and erasure-coded blocks.
func TestGetManyOverSilos(t *testing.T) {
	for _, cfg := range []struct {
		name                   string
		replicas, data, parity int
		holders                int
	}{
		{"replicas1", 1, 0, 0, 1},
		{"replicas3", 3, 0, 0, 3},
		{"ec2+1", 0, 2, 1, 3},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			ctx := t.Context()
			var hs []blocks.Holder
			for range cfg.holders {
				s, err := silo.Open(ctx, t.TempDir(), silo.Options{SegmentSize: 1 << 20})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				hs = append(hs, s)
			}
			n := max(cfg.replicas, cfg.data+cfg.parity)
			st, err := New(Options{
				Replicas: cfg.replicas, Data: cfg.data, Parity: cfg.parity,
				Holders: func(addr blocks.Addr, k int) []blocks.Holder { return place(hs, addr, k) },
				All:     func() []blocks.Holder { return hs },
			})
			if err != nil {
				t.Fatal(err)
			}
			var addrs []blocks.Addr
			var want [][]byte
			for i := range 300 {
				if i == 250 {
					// Most pieces in the silos' files, the rest still buffered.
					if err := st.Sync(ctx); err != nil {
						t.Fatal(err)
					}
				}
				data := blockstest.Random(uint64(i), 4096)
				a, err := st.Put(ctx, data)
				if err != nil {
					t.Fatal(err)
				}
				addrs, want = append(addrs, a), append(want, data)
			}
			if cfg.replicas > 1 {
				// Lose the first replica of block 7.
				h := place(hs, addrs[7], n)[0]
				if err := h.DeletePiece(ctx, blocks.PieceKey(addrs[7], 0)); err != nil {
					t.Fatal(err)
				}
			}
			missing := blocks.Sum([]byte("never stored"))
			addrs = append(addrs, missing)
			var buf []byte
			got, errs := st.GetMany(ctx, addrs, &buf)
			for i := range want {
				if errs[i] != nil || !bytes.Equal(got[i], want[i]) {
					t.Fatalf("block %d: %d bytes, %v; want its data", i, len(got[i]), errs[i])
				}
			}
			if last := len(addrs) - 1; !blocksIsNotFound(errs[last]) {
				t.Fatalf("never stored: %v, want ErrNotFound", errs[last])
			}
			if cfg.replicas > 1 {
				h := place(hs, addrs[7], n)[0]
				if _, err := h.GetPiece(ctx, blocks.PieceKey(addrs[7], 0)); err != nil {
					t.Fatalf("lost replica not repaired: %v", err)
				}
			}
		})
	}
}

func blocksIsNotFound(err error) bool { return errors.Is(err, blocks.ErrNotFound) }
