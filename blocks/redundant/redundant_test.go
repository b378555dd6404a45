package redundant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/blocks/memory"
	"cairn/internal/crc32c"
)

// config is one redundancy layout over a number of memory holders.
type config struct {
	name                   string
	replicas, data, parity int
	holders                int
	local                  bool // holders say they are blocks.Local
}

var configs = []config{
	{name: "replicas1", replicas: 1, holders: 1},
	{name: "replicas3-on-1", replicas: 3, holders: 1},
	{name: "replicas3-on-3", replicas: 3, holders: 3},
	{name: "ec4+2-on-6", data: 4, parity: 2, holders: 6},
	{name: "ec4+2-on-1", data: 4, parity: 2, holders: 1},
}

func (c config) pieces() int {
	if c.replicas > 0 {
		return c.replicas
	}
	return c.data + c.parity
}

func (c config) tolerates() int {
	if c.replicas > 0 {
		return c.replicas - 1
	}
	return c.parity
}

// flaky is a holder whose GetPiece can be made to fail as an unreachable
// node's would.
type flaky struct {
	*memory.Store
	down  atomic.Bool
	local bool
	sums  sync.Map // when local: key -> CRC-32C of the piece, as a silo keeps
	puts  atomic.Int64
}

// PutPiece implements blocks.Holder; a local holder remembers a checksum.
func (f *flaky) PutPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	f.puts.Add(1)
	if f.local {
		if ok, _ := f.Store.HasPiece(ctx, key); !ok {
			f.sums.Store(key, crc32c.Checksum(data))
		}
	}
	return f.Store.PutPiece(ctx, key, data)
}

// DeletePiece implements blocks.Holder.
func (f *flaky) DeletePiece(ctx context.Context, key blocks.Addr) error {
	f.sums.Delete(key)
	return f.Store.DeletePiece(ctx, key)
}

// GetPieceInto implements blocks.PieceGetterInto: the piece copied into
// dst when it fits, as the silo does.
func (f *flaky) GetPieceInto(ctx context.Context, key blocks.Addr, dst []byte) ([]byte, error) {
	p, err := f.GetPiece(ctx, key)
	if err != nil || cap(dst) < len(p) {
		return p, err
	}
	return append(dst[:0], p...), nil
}

// IsLocal implements blocks.Local (true only in local configurations).
func (f *flaky) IsLocal() bool { return f.local }

var errDown = errors.New("test: holder down")

func (f *flaky) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	if f.down.Load() {
		return nil, errDown
	}
	p, err := f.Store.GetPiece(ctx, key)
	if err == nil && f.local {
		// A blocks.Local holder verifies its own checksum (the contract).
		if sum, ok := f.sums.Load(key); !ok || sum.(uint32) != crc32c.Checksum(p) {
			return nil, fmt.Errorf("test holder: %w", blocks.ErrCorrupt)
		}
	}
	return p, err
}

// cluster is a Store over memory holders, with the means to reach the
// pieces behind its back.
type cluster struct {
	cfg     config
	mems    []*flaky
	holders []blocks.Holder
	s       *Store
}

// place spreads the n pieces of addr over hs starting at a holder chosen
// by addr, so different blocks start on different holders.
func place(hs []blocks.Holder, addr blocks.Addr, n int) []blocks.Holder {
	out := make([]blocks.Holder, n)
	for i := range out {
		out[i] = hs[(int(addr[0])+i)%len(hs)]
	}
	return out
}

func newCluster(t testing.TB, cfg config) *cluster {
	t.Helper()
	c := &cluster{cfg: cfg}
	for range cfg.holders {
		m := &flaky{Store: memory.New(0), local: cfg.local}
		c.mems = append(c.mems, m)
		c.holders = append(c.holders, m)
	}
	s, err := New(Options{
		Replicas: cfg.replicas, Data: cfg.data, Parity: cfg.parity,
		Holders: func(addr blocks.Addr, n int) []blocks.Holder { return place(c.holders, addr, n) },
		All:     func() []blocks.Holder { return c.holders },
		Logger:  nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.s = s
	return c
}

// holder returns the memory holder of piece i of addr.
func (c *cluster) holder(addr blocks.Addr, i int) *flaky {
	return place(c.holders, addr, c.cfg.pieces())[i].(*flaky)
}

func (c *cluster) getPiece(t testing.TB, addr blocks.Addr, i int) ([]byte, error) {
	t.Helper()
	return c.holder(addr, i).GetPiece(t.Context(), blocks.PieceKey(addr, i))
}

// pieces returns copies of every stored piece of addr.
func (c *cluster) pieces(t testing.TB, addr blocks.Addr) [][]byte {
	t.Helper()
	out := make([][]byte, c.cfg.pieces())
	for i := range out {
		p, err := c.getPiece(t, addr, i)
		if err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
		out[i] = p
	}
	return out
}

// damage ways.
const (
	rot     = iota // flip a byte (memory.Store.Corrupt)
	lose           // delete the piece
	garbage        // replace it with random bytes
	forge          // change its payload and fix its checksums: only the block hash can tell
	misfile        // replace it with a piece of another block
	nDamage
)

func (c *cluster) damage(t testing.TB, addr blocks.Addr, i, how int, other blocks.Addr) {
	t.Helper()
	h, key := c.holder(addr, i), blocks.PieceKey(addr, i)
	ctx := t.Context()
	switch how {
	case rot:
		if !h.Corrupt(key) {
			t.Fatalf("piece %d not found to rot", i)
		}
		return
	case lose:
		if err := h.DeletePiece(ctx, key); err != nil {
			t.Fatal(err)
		}
		return
	}
	p, err := h.GetPiece(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	switch how {
	case garbage:
		p = blockstest.Random(uint64(i)+77, len(p))
	case forge:
		hd, err := parseHeader(p)
		if err != nil {
			t.Fatal(err)
		}
		p[len(p)-1] ^= 0x01
		hd.crc = crc32c.Checksum(p[HeaderSize:])
		hd.put(p)
	case misfile:
		p, err = c.getPiece(t, other, i%c.cfg.pieces())
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := h.DeletePiece(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := h.PutPiece(ctx, key, p); err != nil {
		t.Fatal(err)
	}
}

func TestConformance(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			blockstest.RunStore(t, func(t testing.TB) blocks.Store { return newCluster(t, cfg).s })
		})
	}
}

// TestRepairOnePiece damages one piece in each way and checks that Get
// returns the block, and that Get (for the pieces it reads) or Scrub (for
// the rest) puts the original piece back on its holder.
func TestRepairOnePiece(t *testing.T) {
	for _, cfg := range configs {
		if cfg.tolerates() == 0 {
			continue
		}
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			other, err := c.s.Put(ctx, blockstest.Random(999, 3000))
			if err != nil {
				t.Fatal(err)
			}
			for how := range nDamage {
				for i := range cfg.pieces() {
					data := blockstest.Random(uint64(how*100+i), 10000+i)
					addr, err := c.s.Put(ctx, data)
					if err != nil {
						t.Fatal(err)
					}
					orig := c.pieces(t, addr)
					c.damage(t, addr, i, how, other)
					got, err := c.s.Get(ctx, addr)
					if err != nil || !bytes.Equal(got, data) {
						t.Fatalf("damage %d to piece %d: Get = %d bytes, %v; want the block", how, i, len(got), err)
					}
					// Get repairs what it read: piece 0 of replicas, the data
					// pieces of erasure coding.
					readByGet := i == 0 || (cfg.replicas == 0 && i < cfg.data)
					if readByGet {
						if p, err := c.getPiece(t, addr, i); err != nil || !bytes.Equal(p, orig[i]) {
							t.Fatalf("damage %d to piece %d: after Get the piece is %d bytes, %v; want it repaired", how, i, len(p), err)
						}
					}
					repaired := 0
					err = c.s.Scrub(ctx, func(a blocks.Addr, n int, err error) error {
						if err != nil {
							t.Errorf("Scrub: %v: %v", a, err)
						}
						repaired += n
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
					if want := map[bool]int{true: 0, false: 1}[readByGet]; repaired != want {
						t.Errorf("damage %d to piece %d: Scrub repaired %d pieces, want %d", how, i, repaired, want)
					}
					if got := c.pieces(t, addr); !equalPieces(got, orig) {
						t.Fatalf("damage %d to piece %d: pieces differ from the originals after Scrub", how, i)
					}
				}
			}
		})
	}
}

func equalPieces(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestTooManyLost checks that a block with more damaged pieces than its
// redundancy tolerates reads as an error, never as wrong bytes.
func TestTooManyLost(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			for _, how := range []int{rot, lose, garbage, forge} {
				data := blockstest.Random(uint64(how), 5000)
				addr, err := c.s.Put(ctx, data)
				if err != nil {
					t.Fatal(err)
				}
				for i := range cfg.tolerates() + 1 {
					c.damage(t, addr, i, how, blocks.Addr{})
				}
				got, err := c.s.Get(ctx, addr)
				want := blocks.ErrCorrupt
				if how == lose && cfg.replicas > 0 {
					want = blocks.ErrNotFound // nothing left at all
				}
				if !errors.Is(err, want) {
					t.Fatalf("damage %d to %d pieces: Get = %d bytes, %v; want %v", how, cfg.tolerates()+1, len(got), err, want)
				}
			}
		})
	}
}

// TestRandomDamage damages random sets of pieces in random ways: Get gives
// the block whenever no more pieces are damaged than tolerated, and never
// gives wrong bytes.
func TestRandomDamage(t *testing.T) {
	rounds := 60
	if testing.Short() {
		rounds = 15
	}
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			r := rand.New(rand.NewPCG(1, 2))
			other, err := c.s.Put(ctx, []byte("another block"))
			if err != nil {
				t.Fatal(err)
			}
			for round := range rounds {
				data := blockstest.Random(uint64(round), r.IntN(20000))
				addr, err := c.s.Put(ctx, data)
				if err != nil {
					t.Fatal(err)
				}
				bad := r.Perm(cfg.pieces())[:r.IntN(cfg.pieces()+1)]
				for _, i := range bad {
					how := r.IntN(nDamage)
					if how == rot && len(data) == 0 {
						how = lose
					}
					c.damage(t, addr, i, how, other)
				}
				got, err := c.s.Get(ctx, addr)
				switch {
				case err == nil && !bytes.Equal(got, data):
					t.Fatalf("round %d: %d damaged pieces: Get returned wrong bytes", round, len(bad))
				case err != nil && len(bad) <= cfg.tolerates():
					t.Fatalf("round %d: %d damaged pieces of %d tolerated: %v", round, len(bad), cfg.tolerates(), err)
				case err != nil && !errors.Is(err, blocks.ErrCorrupt) && !errors.Is(err, blocks.ErrNotFound):
					t.Fatalf("round %d: %v, want ErrCorrupt or ErrNotFound", round, err)
				}
				if err := c.s.Delete(ctx, addr); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestZeroLength checks the empty block, including its repair.
func TestZeroLength(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			addr, err := c.s.Put(ctx, nil)
			if err != nil || addr != blocks.Sum(nil) {
				t.Fatalf("Put(nil) = %v, %v", addr, err)
			}
			if cfg.tolerates() > 0 {
				c.damage(t, addr, 0, lose, blocks.Addr{})
			}
			got, err := c.s.Get(ctx, addr)
			if err != nil || len(got) != 0 {
				t.Fatalf("Get = %q, %v", got, err)
			}
			if _, err := c.getPiece(t, addr, 0); err != nil {
				t.Fatalf("piece 0 after Get: %v", err)
			}
		})
	}
}

// TestUnavailable checks that holders that fail (rather than miss a piece)
// are tolerated like lost pieces, and give ErrUnavailable beyond that.
func TestUnavailable(t *testing.T) {
	cfg := config{name: "ec4+2-on-6", data: 4, parity: 2, holders: 6}
	c := newCluster(t, cfg)
	ctx := t.Context()
	data := blockstest.Random(1, 100000)
	addr, err := c.s.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	c.holder(addr, 0).down.Store(true)
	c.holder(addr, 3).down.Store(true)
	if got, err := c.s.Get(ctx, addr); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get with 2 holders down = %d bytes, %v", len(got), err)
	}
	c.holder(addr, 5).down.Store(true)
	if _, err := c.s.Get(ctx, addr); !errors.Is(err, blocks.ErrUnavailable) || !errors.Is(err, errDown) {
		t.Fatalf("Get with 3 holders down: %v, want ErrUnavailable wrapping the holders' error", err)
	}
	for _, m := range c.mems {
		m.down.Store(false)
	}
	// The holders that were down were not "repaired": their pieces are intact.
	if got, err := c.s.Get(ctx, addr); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get after holders came back = %d bytes, %v", len(got), err)
	}
}

func TestHas(t *testing.T) {
	c := newCluster(t, config{data: 4, parity: 2, holders: 6})
	ctx := t.Context()
	addr, err := c.s.Put(ctx, blockstest.Random(1, 1000))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, true, false} { // pieces 0, 1, 2 lost: 3 left of 4 needed
		c.damage(t, addr, i, lose, blocks.Addr{})
		if ok, err := c.s.Has(ctx, addr); err != nil || ok != want {
			t.Fatalf("Has with %d pieces lost = %v, %v; want %v", i+1, ok, err, want)
		}
	}
}

func TestWalk(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			want := map[blocks.Addr]bool{}
			for i := range 20 {
				addr, err := c.s.Put(ctx, blockstest.Random(uint64(i), 100*i))
				if err != nil {
					t.Fatal(err)
				}
				want[addr] = true
			}
			// A stray piece that is not a piece, and a rotten header, are skipped.
			if err := c.mems[0].PutPiece(ctx, blocks.Sum([]byte("x")), []byte("not a piece")); err != nil {
				t.Fatal(err)
			}
			got := map[blocks.Addr]int{}
			if err := c.s.Walk(ctx, func(a blocks.Addr) error { got[a]++; return nil }); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("Walk found %d blocks, want %d", len(got), len(want))
			}
			for a, n := range got {
				if !want[a] || n != 1 {
					t.Fatalf("Walk gave %v %d times (put: %v)", a, n, want[a])
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	hs := func(blocks.Addr, int) []blocks.Holder { return nil }
	all := func() []blocks.Holder { return nil }
	for _, tc := range []struct {
		name string
		opts Options
		ok   bool
	}{
		{"replicas", Options{Replicas: 3, Holders: hs, All: all}, true},
		{"ec", Options{Data: 4, Parity: 2, Holders: hs, All: all}, true},
		{"nothing", Options{Holders: hs, All: all}, false},
		{"both", Options{Replicas: 2, Data: 4, Parity: 2, Holders: hs, All: all}, false},
		{"no parity", Options{Data: 4, Holders: hs, All: all}, false},
		{"too many", Options{Data: 200, Parity: 56, Holders: hs, All: all}, false},
		{"too many replicas", Options{Replicas: 256, Holders: hs, All: all}, false},
		{"no holders", Options{Replicas: 1, All: all}, false},
		{"no all", Options{Replicas: 1, Holders: hs}, false},
	} {
		_, err := New(tc.opts)
		if (err == nil) != tc.ok {
			t.Errorf("%s: New = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	// A placement that gives the wrong number of holders is unavailable.
	s, err := New(Options{Replicas: 3, Holders: hs, All: all})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(t.Context(), []byte("x")); !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("Put with no holders: %v, want ErrUnavailable", err)
	}
}

func TestSyncAllHolders(t *testing.T) {
	c := newCluster(t, config{data: 2, parity: 1, holders: 3})
	if err := c.s.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, m := range c.mems {
		if m.Syncs() != 1 {
			t.Errorf("holder %d synced %d times, want 1", i, m.Syncs())
		}
	}
}

func TestPieceHeader(t *testing.T) {
	c := newCluster(t, config{data: 4, parity: 2, holders: 6})
	data := blockstest.Random(1, 4097)
	addr, err := c.s.Put(t.Context(), data)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range c.pieces(t, addr) {
		a, idx, err := ParsePiece(p)
		if err != nil || a != addr || idx != i {
			t.Fatalf("ParsePiece(piece %d) = %v, %d, %v", i, a, idx, err)
		}
		if want := HeaderSize + 1025; len(p) != want {
			t.Fatalf("piece %d is %d bytes, want %d", i, len(p), want)
		}
		for _, bad := range [][]byte{p[:HeaderSize-1], p[:len(p)-1], append(bytes.Clone(p), 0)} {
			if _, _, err := ParsePiece(bad); !errors.Is(err, blocks.ErrCorrupt) {
				t.Fatalf("ParsePiece(%d bytes of a damaged piece): %v, want ErrCorrupt", len(bad), err)
			}
		}
	}
}

func TestNextComb(t *testing.T) {
	comb, n := []int{0, 1}, 4
	var got []string
	for {
		got = append(got, fmt.Sprint(comb))
		if !nextComb(comb, n) {
			break
		}
	}
	want := "[[0 1] [0 2] [0 3] [1 2] [1 3] [2 3]]"
	if fmt.Sprint(got) != want {
		t.Fatalf("combinations %v, want %v", got, want)
	}
}

func TestScrubReportsLoss(t *testing.T) {
	c := newCluster(t, config{data: 4, parity: 2, holders: 6})
	ctx := t.Context()
	good, err := c.s.Put(ctx, blockstest.Random(1, 5000))
	if err != nil {
		t.Fatal(err)
	}
	lost, err := c.s.Put(ctx, blockstest.Random(2, 5000))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		c.damage(t, lost, i, rot, blocks.Addr{})
	}
	c.damage(t, good, 5, lose, blocks.Addr{})
	got := map[blocks.Addr]error{}
	repaired := map[blocks.Addr]int{}
	err = c.s.Scrub(ctx, func(a blocks.Addr, n int, err error) error {
		got[a], repaired[a] = err, n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[good] != nil || repaired[good] != 1 || !errors.Is(got[lost], blocks.ErrCorrupt) {
		t.Fatalf("Scrub reported %v (repaired %v); want %v repaired once, %v corrupt", got, repaired, good, lost)
	}
	stop := errors.New("stop")
	if err := c.s.Scrub(ctx, func(blocks.Addr, int, error) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("Scrub whose fn fails: %v, want its error", err)
	}
}

// TestRepairSyncs: a read's repair rewrites the piece without syncing its
// holder; Repair syncs the holder it rewrote on, unless its context says
// the caller will (DeferRepairSyncs).
func TestRepairSyncs(t *testing.T) {
	c := newCluster(t, config{replicas: 3, holders: 3})
	ctx := t.Context()
	data := blockstest.Random(7, 5000)
	addr, err := c.s.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	lose := func(i int) (h *flaky, syncs int) {
		h = c.holder(addr, i)
		if err := h.DeletePiece(ctx, blocks.PieceKey(addr, i)); err != nil {
			t.Fatal(err)
		}
		return h, h.Syncs()
	}
	check := func(what string, i int, h *flaky, before, want int) {
		t.Helper()
		if p, err := c.getPiece(t, addr, i); err != nil || len(p) == 0 {
			t.Fatalf("%s: piece %d not repaired: %v", what, i, err)
		}
		if got := h.Syncs() - before; got != want {
			t.Errorf("%s: the holder of piece %d synced %d times, want %d", what, i, got, want)
		}
	}

	h, before := lose(0)
	if got, err := c.s.Get(ctx, addr); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %d bytes, %v", len(got), err)
	}
	check("Get", 0, h, before, 0)

	h, before = lose(1)
	if n, err := c.s.Repair(ctx, addr); err != nil || n != 1 {
		t.Fatalf("Repair = %d, %v; want 1 piece", n, err)
	}
	check("Repair", 1, h, before, 1)

	h, before = lose(2)
	if n, err := c.s.Repair(DeferRepairSyncs(ctx), addr); err != nil || n != 1 {
		t.Fatalf("Repair (deferred syncs) = %d, %v; want 1 piece", n, err)
	}
	check("Repair with DeferRepairSyncs", 2, h, before, 0)
}

// TestRepairMissing: RepairMissing rewrites exactly the pieces named,
// each once, from one read of the block, for replicas and erasure coding,
// and fails (writing nothing) when the block cannot be read.
func TestRepairMissing(t *testing.T) {
	for _, cfg := range []config{{name: "replicas3-on-3", replicas: 3, holders: 3}, {name: "ec4+2-on-6", data: 4, parity: 2, holders: 6}} {
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			data := blockstest.Random(11, 9000)
			addr, err := c.s.Put(ctx, data)
			if err != nil {
				t.Fatal(err)
			}
			orig := c.pieces(t, addr)
			last := cfg.pieces() - 1
			for _, i := range []int{1, last} {
				if err := c.holder(addr, i).DeletePiece(ctx, blocks.PieceKey(addr, i)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.s.RepairMissing(ctx, addr, []Fix{{Holder: 0, Piece: cfg.pieces(), Bad: -1}}); err == nil {
				t.Fatal("RepairMissing of a piece index out of range: no error")
			}
			puts := func() (n int64) {
				for _, m := range c.mems {
					n += m.puts.Load()
				}
				return n
			}
			before := puts()
			n, err := c.s.RepairMissing(DeferRepairSyncs(ctx), addr, []Fix{{1, 1, -1}, {last, last, -1}})
			if err != nil || n != 2 {
				t.Fatalf("RepairMissing = %d, %v; want 2 pieces", n, err)
			}
			// Written once each: its read (which rebuilds the block when a
			// data shard is missing) leaves the repair to it.
			if p := puts() - before; p != 2 {
				t.Fatalf("RepairMissing put %d pieces, want 2", p)
			}
			if got := c.pieces(t, addr); !equalPieces(got, orig) {
				t.Fatal("the rewritten pieces differ from the originals")
			}
			// More lost than the layout tolerates: nothing to read from.
			for i := range cfg.tolerates() + 1 {
				_ = c.holder(addr, i).DeletePiece(ctx, blocks.PieceKey(addr, i))
			}
			if n, err := c.s.RepairMissing(ctx, addr, []Fix{{0, 0, -1}}); err == nil || n != 0 {
				t.Fatalf("RepairMissing of an unreadable block = %d, %v; want an error", n, err)
			}
		})
	}
}
