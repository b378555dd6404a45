package redundant

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
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

// TestViewManyAndGetManyReuseBatches: ViewMany and GetMany (whose batches
// are pooled) answer every call with its own blocks, whatever batches came
// before, one goroutine after another or many at once: views are the
// blocks' data, held until release; blocks never stored get no view and
// ErrNotFound.
func TestViewManyAndGetManyReuseBatches(t *testing.T) {
	ctx := t.Context()
	s, err := silo.Open(ctx, t.TempDir(), silo.Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	hs := []blocks.Holder{s}
	st, err := New(Options{
		Replicas: 1,
		Holders:  func(addr blocks.Addr, k int) []blocks.Holder { return place(hs, addr, k) },
		All:      func() []blocks.Holder { return hs },
	})
	if err != nil {
		t.Fatal(err)
	}
	const n = 400
	addrs := make([]blocks.Addr, n)
	data := make(map[blocks.Addr][]byte, n)
	for i := range n {
		d := blockstest.Random(uint64(i)+1000, 4096)
		a, err := st.Put(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		addrs[i], data[a] = a, d
	}
	if err := st.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	missing := blocks.Sum([]byte("never stored"))
	// batch returns the blocks [from, from+k), with the missing block
	// inserted at position k/2.
	batch := func(from, k int) []blocks.Addr {
		b := append([]blocks.Addr(nil), addrs[from:from+k]...)
		return slices.Insert(b, k/2, missing)
	}
	check := func(b []blocks.Addr) error {
		views := make([][]byte, len(b))
		release := st.ViewMany(ctx, b, views)
		for i, a := range b {
			if a == missing {
				if views[i] != nil {
					return fmt.Errorf("never stored: got a view of %d bytes", len(views[i]))
				}
				continue
			}
			if !bytes.Equal(views[i], data[a]) {
				return fmt.Errorf("ViewMany of %d, block %d: %d bytes, not its data", len(b), i, len(views[i]))
			}
		}
		release()
		var buf []byte
		got, errs := st.GetMany(ctx, b, &buf)
		for i, a := range b {
			if a == missing {
				if !errors.Is(errs[i], blocks.ErrNotFound) {
					return fmt.Errorf("never stored: %v, want ErrNotFound", errs[i])
				}
				continue
			}
			if errs[i] != nil || !bytes.Equal(got[i], data[a]) {
				return fmt.Errorf("GetMany of %d, block %d: %d bytes, %v", len(b), i, len(got[i]), errs[i])
			}
		}
		return nil
	}
	// Large, then small, then large again: a pooled batch's leftovers
	// must not show in a smaller one.
	for _, k := range []int{n, 3, 1, 256, 2, n - 1} {
		if err := check(batch(0, k)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for r := range 20 {
				k := 1 + (g*37+r*11)%(n-1)
				from := (g * 13) % (n - k + 1)
				if err := check(batch(from, k)); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}
