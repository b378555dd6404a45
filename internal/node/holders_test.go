package node

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/internal/peer"
	"cairn/overlay"
	"cairn/overlay/placement"
	"cairn/policies"
)

// viewOf builds a view of the given storage nodes, all alive, with a
// holder-set cache when cached is true (as rebuild makes it) and without
// one otherwise.
func viewOf(t testing.TB, cached bool, ids ...string) *view {
	t.Helper()
	return viewIn(t, cached, nil, ids...)
}

// viewIn is viewOf with each node in the zone zones names for it ("" for
// one it does not name).
func viewIn(t testing.TB, cached bool, zones map[string]string, ids ...string) *view {
	t.Helper()
	v := &view{nodes: map[string]overlay.Node{}, alive: map[string]bool{}}
	if cached {
		v = newView()
	}
	var pn []placement.Node
	for _, id := range ids {
		v.nodes[id] = overlay.Node{ID: id, Zone: zones[id], Storage: true}
		v.alive[id] = true
		pn = append(pn, placement.Node{ID: id, Zone: zones[id], Weight: 1, Storage: true})
	}
	p, err := placement.NewPlacer(pn)
	if err != nil {
		t.Fatal(err)
	}
	v.placer = p
	return v
}

func clusterWithView(v *view) *cluster {
	return &cluster{
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		self:    overlay.Node{ID: "a"},
		clients: map[string]*peer.Client{},
		suspect: map[string]time.Time{},
		hints:   map[hint]struct{}{},
		v:       v,
	}
}

func slotOf(h blocks.Holder) *slot {
	if l, ok := h.(*localSlot); ok {
		return l.slot
	}
	return h.(*slot)
}

// describe renders a holder set: each piece's slot (primary, then every
// candidate) and whether it is the local kind.
func describe(t testing.TB, hs []blocks.Holder) string {
	t.Helper()
	var out []string
	for _, h := range hs {
		switch s := h.(type) {
		case *localSlot:
			out = append(out, fmt.Sprintf("local:%d:%s:%v:%d:%d", s.idx, s.primary, s.cands, s.nprim, s.need))
		case *slot:
			out = append(out, fmt.Sprintf("remote:%d:%s:%v:%d:%d", s.idx, s.primary, s.cands, s.nprim, s.need))
		default:
			t.Fatalf("holder of type %T", h)
		}
	}
	return fmt.Sprint(out)
}

// TestHolderSetsMatchFreshOnes: the holder sets cluster.holders returns
// from a view's cache are, for every block, exactly the sets it builds
// without a cache (same primaries, candidates, local slot, quorum), on
// a 3-node and a 6-node view, for 1 to 4 pieces and both spreads; sets
// of one ranking are shared, and a new view starts a new cache.
func TestHolderSetsMatchFreshOnes(t *testing.T) {
	for _, ids := range [][]string{{"a", "b", "c"}, {"a", "b", "c", "d", "e", "f"}} {
		cached := clusterWithView(viewOf(t, true, ids...))
		fresh := clusterWithView(viewOf(t, false, ids...))
		for _, spread := range []policies.Spread{policies.SpreadNode, policies.SpreadNone} {
			hc, hf := cached.holders(spread), fresh.holders(spread)
			for n := 1; n <= min(4, len(ids)); n++ {
				for i := 0; i < 300; i++ {
					addr := blocks.Sum(fmt.Appendf(nil, "block %d", i))
					// Twice: the second call of a ranking comes from the cache.
					for range 2 {
						if got, want := describe(t, hc(addr, n)), describe(t, hf(addr, n)); got != want {
							t.Fatalf("%d nodes, %d pieces, spread %s, block %d: cached %s, fresh %s", len(ids), n, spread, i, got, want)
						}
					}
				}
			}
		}
		sets := cached.v.sets
		if len(sets.m) == 0 {
			t.Fatalf("%d nodes: nothing cached", len(ids))
		}
		// On 3 nodes a ranking of 3 pieces is one of the 6 orders.
		if len(ids) == 3 {
			seen := map[string]bool{}
			for i := 0; i < 300; i++ {
				hs := cached.holders(policies.SpreadNode)(blocks.Sum(fmt.Appendf(nil, "block %d", i)), 3)
				seen[fmt.Sprintf("%p", &hs[0])] = true
			}
			if len(seen) > 6 {
				t.Errorf("3 nodes, 3 pieces: %d distinct holder slices for 300 blocks, want at most 6 (not shared)", len(seen))
			}
		}
		// A new view (membership changed) does not see the old one's sets.
		old := cached.holders(policies.SpreadNode)(blocks.Sum([]byte("block 0")), 2)
		cached.v = viewOf(t, true, ids...)
		now := cached.holders(policies.SpreadNode)(blocks.Sum([]byte("block 0")), 2)
		if &old[0] == &now[0] || slotOf(now[0]).v != cached.v || slotOf(old[0]).v == cached.v {
			t.Fatalf("%d nodes: a new view returned the old view's holder set", len(ids))
		}
	}
}

// TestHolderSetsAllocateNothing: once a ranking's set is cached, finding
// a block's holders allocates nothing of its own (it allocated four
// objects per call, the largest CPU cost of a local 4K read in a cluster
// after the copy itself). Under the race detector sync.Pool drops some
// of what it is given, so the bound is relative: at least 3 fewer
// allocations per call than without the cache.
func TestHolderSetsAllocateNothing(t *testing.T) {
	c := clusterWithView(viewOf(t, true, "a", "b", "c"))
	h := c.holders(policies.SpreadNode)
	addrs := make([]blocks.Addr, 64)
	for i := range addrs {
		addrs[i] = blocks.Sum(fmt.Appendf(nil, "block %d", i))
		h(addrs[i], 3) // warm the cache
	}
	i := 0
	cached := testing.AllocsPerRun(1000, func() {
		h(addrs[i%len(addrs)], 3)
		i++
	})
	// Without the cache (a view not built by newView) sets are built per
	// call, as before.
	c.v = viewOf(t, false, "a", "b", "c")
	fresh := testing.AllocsPerRun(1000, func() {
		h(addrs[i%len(addrs)], 3)
		i++
	})
	t.Logf("allocations per call: %.2f with a warm cache, %.2f without", cached, fresh)
	if cached > fresh-3 {
		t.Fatalf("holders allocated %.2f objects per call with a warm cache, %.2f without: the cache saves nothing", cached, fresh)
	}
	if got := h(addrs[0], 3); !slices.ContainsFunc(got, func(x blocks.Holder) bool { _, ok := x.(*localSlot); return ok }) {
		t.Fatalf("3 pieces on 3 nodes and no local slot: %s", describe(t, got))
	}
}

// TestHolderSetsBounded: a view caches at most maxHolderSets sets; past
// that, sets are built per call and still correct.
func TestHolderSetsBounded(t *testing.T) {
	ids := make([]string, 12)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%02d", i)
	}
	ids[0] = "a"
	c := clusterWithView(viewOf(t, true, ids...))
	fresh := clusterWithView(viewOf(t, false, ids...))
	h, hf := c.holders(policies.SpreadNone), fresh.holders(policies.SpreadNone)
	for i := 0; i < 3*maxHolderSets; i++ {
		addr := blocks.Sum(fmt.Appendf(nil, "block %d", i))
		if got, want := describe(t, h(addr, 3)), describe(t, hf(addr, 3)); got != want {
			t.Fatalf("block %d: cached %s, fresh %s", i, got, want)
		}
	}
	if n := len(c.v.sets.m); n > maxHolderSets {
		t.Fatalf("%d sets cached, bound %d", n, maxHolderSets)
	}
}
