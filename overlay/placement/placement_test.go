package placement

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"cairn/blocks"
	"cairn/policies"
)

// keyOf returns a content-like key for i.
func keyOf(i int) blocks.Addr {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return blocks.Sum(b[:])
}

// view returns n storage nodes over zones zones (node i in zone i%zones),
// with weights from weight (nil: all 1).
func view(n, zones int, weight func(i int) float64) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{ID: fmt.Sprintf("node-%05d", i), Zone: fmt.Sprintf("z%02d", i%zones), Storage: true}
		if weight != nil {
			nodes[i].Weight = weight(i)
		}
	}
	return nodes
}

func mustPlacer(t testing.TB, nodes []Node) *Placer {
	t.Helper()
	p, err := NewPlacer(nodes)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ids(ns []Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

// reference is a slow, obviously-right Holders: score every node, sort
// everything, then apply the spread.
func reference(key blocks.Addr, n int, spread policies.Spread, nodes []Node) []string {
	type sc struct {
		id, zone string
		h        uint64
		s        float64
	}
	k0, k1 := keyWords(key)
	var all []sc
	for _, nd := range nodes {
		if !nd.Storage {
			continue
		}
		w := nd.Weight
		if w == 0 {
			w = 1
		}
		p := mustPlacerNoT([]Node{nd})
		h := hash(k0, k1, &p.members[0])
		all = append(all, sc{nd.ID, nd.Zone, h, weighted(h, w)})
	}
	slices.SortFunc(all, func(a, b sc) int {
		if a.s != b.s {
			if a.s > b.s {
				return -1
			}
			return 1
		}
		if a.h != b.h {
			if a.h > b.h {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	var out []string
	if spread != policies.SpreadZone {
		for i := range n {
			out = append(out, all[i%len(all)].id)
		}
		return out
	}
	var order []string
	per := map[string][]string{}
	for _, a := range all {
		if per[a.zone] == nil {
			order = append(order, a.zone)
		}
		per[a.zone] = append(per[a.zone], a.id)
	}
	for round := 0; len(out) < n; round++ {
		for _, z := range order {
			if round < len(per[z]) && len(out) < n {
				out = append(out, per[z][round])
			}
		}
	}
	return out
}

func mustPlacerNoT(nodes []Node) *Placer {
	p, err := NewPlacer(nodes)
	if err != nil {
		panic(err)
	}
	return p
}

// TestReference checks the top-n selection against a full sort, on views
// with mixed weights and uneven zones.
func TestReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 40 {
		size := 1 + rng.IntN(40)
		zones := 1 + rng.IntN(6)
		nodes := make([]Node, size)
		for i := range nodes {
			nodes[i] = Node{
				ID:      fmt.Sprintf("n%d-%d", trial, i),
				Zone:    fmt.Sprintf("z%d", rng.IntN(zones)),
				Weight:  []float64{0, 1, 2, 0.5, 3}[rng.IntN(5)],
				Storage: rng.IntN(8) != 0,
			}
		}
		p := mustPlacer(t, nodes)
		for k := range 50 {
			key := keyOf(trial*1000 + k)
			for _, spread := range []policies.Spread{policies.SpreadNone, policies.SpreadNode, policies.SpreadZone} {
				for _, n := range []int{1, 2, 3, 6} {
					got, err := p.Holders(key, n, spread, nil)
					if err != nil {
						if errors.Is(err, ErrUnsatisfiable) && (len(p.StorageNodes()) == 0 || (spread != policies.SpreadNone && n > len(p.StorageNodes()))) {
							continue
						}
						t.Fatalf("trial %d n=%d %s: %v", trial, n, spread, err)
					}
					want := reference(key, n, spread, nodes)
					if !slices.Equal(ids(got), want) {
						t.Fatalf("trial %d key %d n=%d %s: got %v, want %v", trial, k, n, spread, ids(got), want)
					}
				}
			}
		}
	}
}

func TestDeterministicAndOrderIndependent(t *testing.T) {
	nodes := view(60, 4, func(i int) float64 { return float64(1 + i%3) })
	shuffled := slices.Clone(nodes)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	// A frontend-only node changes nothing.
	shuffled = append(shuffled, Node{ID: "frontend", Zone: "z00", Storage: false})
	a, b := mustPlacer(t, nodes), mustPlacer(t, shuffled)
	for k := range 2000 {
		for _, spread := range []policies.Spread{policies.SpreadNone, policies.SpreadNode, policies.SpreadZone} {
			x, err1 := a.Holders(keyOf(k), 5, spread, nil)
			y, err2 := b.Holders(keyOf(k), 5, spread, nil)
			z, err3 := Holders(keyOf(k), 5, spread, nodes)
			if err1 != nil || err2 != nil || err3 != nil {
				t.Fatal(err1, err2, err3)
			}
			if !slices.Equal(ids(x), ids(y)) || !slices.Equal(ids(x), ids(z)) {
				t.Fatalf("key %d %s: %v vs %v vs %v", k, spread, ids(x), ids(y), ids(z))
			}
		}
	}
}

func TestSpreadRules(t *testing.T) {
	for _, tc := range []struct {
		name         string
		nodes        []Node
		n            int
		spread       policies.Spread
		maxPerZone   int
		distinctNode bool
	}{
		{"node", view(10, 1, nil), 6, policies.SpreadNode, 6, true},
		{"zone 3 of 3 zones", view(30, 3, nil), 3, policies.SpreadZone, 1, true},
		{"zone 4+2 over 3 zones", view(30, 3, nil), 6, policies.SpreadZone, 2, true},
		{"zone 4+2 over 4 zones", view(30, 4, nil), 6, policies.SpreadZone, 2, true},
		{"zone 6 over 20 zones", view(200, 20, nil), 6, policies.SpreadZone, 1, true},
		{"zone exactly one node each", view(6, 6, nil), 6, policies.SpreadZone, 1, true},
		{"none with enough nodes", view(5, 1, nil), 3, policies.SpreadNone, 3, true},
		{"none wraps", view(2, 1, nil), 5, policies.SpreadNone, 5, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPlacer(t, tc.nodes)
			for k := range 3000 {
				hs, err := p.Holders(keyOf(k), tc.n, tc.spread, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(hs) != tc.n {
					t.Fatalf("got %d holders, want %d", len(hs), tc.n)
				}
				byNode, byZone := map[string]int{}, map[string]int{}
				for _, h := range hs {
					byNode[h.ID]++
					byZone[h.Zone]++
				}
				if tc.distinctNode && len(byNode) != tc.n {
					t.Fatalf("key %d: holders %v repeat a node", k, ids(hs))
				}
				for z, c := range byZone {
					if c > tc.maxPerZone {
						t.Fatalf("key %d: zone %s holds %d pieces, want <= %d", k, z, c, tc.maxPerZone)
					}
				}
			}
		})
	}
	// Wrap-around order for spread none: the ranking, repeated.
	p := mustPlacer(t, view(2, 1, nil))
	hs, _ := p.Holders(keyOf(1), 5, policies.SpreadNone, nil)
	if hs[0] == hs[1] || hs[0] != hs[2] || hs[1] != hs[3] || hs[0] != hs[4] {
		t.Errorf("spread none over 2 nodes: %v, want a b a b a", ids(hs))
	}
}

func TestUnevenZones(t *testing.T) {
	// Zone a has 1 node, b has 10: 4 pieces must put 3 in b.
	var nodes []Node
	nodes = append(nodes, Node{ID: "a0", Zone: "a", Storage: true})
	for i := range 10 {
		nodes = append(nodes, Node{ID: fmt.Sprintf("b%d", i), Zone: "b", Storage: true})
	}
	p := mustPlacer(t, nodes)
	if got := p.MaxZoneShare(4); got != 3 {
		t.Errorf("MaxZoneShare(4) = %d, want 3", got)
	}
	for k := range 500 {
		hs, err := p.Holders(keyOf(k), 4, policies.SpreadZone, nil)
		if err != nil {
			t.Fatal(err)
		}
		if hs[0].Zone != "a" && hs[1].Zone != "a" {
			t.Fatalf("key %d: zone a unused in %v", k, ids(hs))
		}
	}
	if err := p.Check(4, policies.SpreadZone); !errors.Is(err, ErrUnsatisfiable) {
		t.Errorf("Check(4, zone) = %v, want ErrUnsatisfiable", err)
	}
	if err := p.Check(3, policies.SpreadZone); err != nil {
		t.Errorf("Check(3, zone) = %v, want nil (2 + 1 is as even as 2 zones allow)", err)
	}
}

func TestErrors(t *testing.T) {
	three := view(3, 3, nil)
	for _, tc := range []struct {
		name   string
		nodes  []Node
		n      int
		spread policies.Spread
		want   error
		msg    string
	}{
		{"5 replicas on 3 nodes", three, 5, policies.SpreadNode, ErrUnsatisfiable, "5 pieces with spread \"node\" need 5 distinct storage nodes; the view has 3"},
		{"zone too", three, 4, policies.SpreadZone, ErrUnsatisfiable, "need 4 distinct storage nodes; the view has 3"},
		{"no storage", []Node{{ID: "f", Storage: false}}, 1, policies.SpreadNone, ErrUnsatisfiable, "no storage nodes (1 members, none storing)"},
		{"empty view", nil, 1, policies.SpreadNone, ErrUnsatisfiable, "no storage nodes"},
		{"zero pieces", three, 0, policies.SpreadNode, ErrUnsatisfiable, "0 pieces asked for"},
		{"bad spread", three, 1, "rack", ErrUnsatisfiable, `unknown spread "rack"`},
		{"duplicate", []Node{{ID: "a", Storage: true}, {ID: "a"}}, 1, policies.SpreadNone, ErrInvalidView, `node ID "a" appears twice`},
		{"empty id", []Node{{Storage: true}}, 1, policies.SpreadNone, ErrInvalidView, "empty ID"},
		{"negative weight", []Node{{ID: "a", Weight: -1, Storage: true}}, 1, policies.SpreadNone, ErrInvalidView, "weight -1"},
		{"NaN weight", []Node{{ID: "a", Weight: math.NaN(), Storage: true}}, 1, policies.SpreadNone, ErrInvalidView, "weight NaN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Holders(keyOf(0), tc.n, tc.spread, tc.nodes)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "placement: ") {
				t.Errorf("err = %q, want it to contain %q", err, tc.msg)
			}
		})
	}
	// Check refuses what Holders refuses.
	if err := mustPlacer(t, three).Check(5, policies.SpreadNode); !errors.Is(err, ErrUnsatisfiable) {
		t.Errorf("Check(5 on 3 nodes) = %v", err)
	}
	// Holders leaves dst alone on error.
	dst := []Node{{ID: "keep"}}
	got, err := mustPlacer(t, three).Holders(keyOf(0), 5, policies.SpreadNode, dst)
	if err == nil || len(got) != 1 || got[0].ID != "keep" {
		t.Errorf("Holders on error returned %v, %v", got, err)
	}
	// Facts feed policies.Check.
	f := mustPlacer(t, three).Facts()
	if f != (policies.Facts{StorageNodes: 3, Zones: 3}) {
		t.Errorf("Facts = %+v", f)
	}
}

// diff returns the IDs in a but not in b.
func diff(a, b []Node) []string {
	var out []string
	for _, x := range a {
		if !slices.ContainsFunc(b, func(y Node) bool { return y.ID == x.ID }) {
			out = append(out, x.ID)
		}
	}
	return out
}

// TestMinimalDisruption: when a node leaves, only keys it held change
// holders, by exactly that node; when a node joins, only keys it enters
// change, by exactly one node.
func TestMinimalDisruption(t *testing.T) {
	nodes := view(40, 5, func(i int) float64 { return float64(1 + i%2) })
	// Uneven zones: move some nodes into zone z00.
	for i := 0; i < 10; i++ {
		nodes[i].Zone = "z00"
	}
	before := mustPlacer(t, nodes)
	gone := nodes[7]
	left := mustPlacer(t, slices.Delete(slices.Clone(nodes), 7, 8))
	joined := mustPlacer(t, append(slices.Clone(nodes), Node{ID: "newcomer", Zone: "z03", Weight: 2, Storage: true}))
	for _, tc := range []struct {
		n      int
		spread policies.Spread
	}{{1, policies.SpreadNode}, {3, policies.SpreadNode}, {3, policies.SpreadZone}, {6, policies.SpreadZone}, {3, policies.SpreadNone}} {
		t.Run(fmt.Sprintf("%d-%s", tc.n, tc.spread), func(t *testing.T) {
			changedLeave, changedJoin := 0, 0
			for k := range 5000 {
				old, _ := before.Holders(keyOf(k), tc.n, tc.spread, nil)
				l, _ := left.Holders(keyOf(k), tc.n, tc.spread, nil)
				j, _ := joined.Holders(keyOf(k), tc.n, tc.spread, nil)
				if slices.Contains(ids(old), gone.ID) {
					changedLeave++
					if out, in := diff(old, l), diff(l, old); !slices.Equal(out, []string{gone.ID}) || len(in) != 1 {
						t.Fatalf("leave, key %d: %v -> %v", k, ids(old), ids(l))
					}
				} else if !slices.Equal(ids(old), ids(l)) {
					t.Fatalf("leave, key %d without %s: %v -> %v", k, gone.ID, ids(old), ids(l))
				}
				if slices.Contains(ids(j), "newcomer") {
					changedJoin++
					if out, in := diff(old, j), diff(j, old); len(out) != 1 || !slices.Equal(in, []string{"newcomer"}) {
						t.Fatalf("join, key %d: %v -> %v", k, ids(old), ids(j))
					}
				} else if !slices.Equal(ids(old), ids(j)) {
					t.Fatalf("join, key %d: %v -> %v without the newcomer", k, ids(old), ids(j))
				}
			}
			if changedLeave == 0 || changedJoin == 0 {
				t.Errorf("no key changed (leave %d, join %d): the test proves nothing", changedLeave, changedJoin)
			}
		})
	}
}

// TestWeights: a node of weight 2 holds about twice the keys of a node of
// weight 1.
func TestWeights(t *testing.T) {
	nodes := view(50, 5, func(i int) float64 { return map[bool]float64{true: 2, false: 1}[i%5 == 0] })
	p := mustPlacer(t, nodes)
	keys := 100_000
	if testing.Short() || raceEnabled {
		keys = 30_000
	}
	for _, tc := range []struct {
		n      int
		spread policies.Spread
		tol    float64
	}{{1, policies.SpreadNode, 0.1}, {3, policies.SpreadNode, 0.15}} {
		count := map[float64]float64{}
		var dst []Node
		for k := range keys {
			dst, _ = p.Holders(keyOf(k), tc.n, tc.spread, dst[:0])
			for _, h := range dst {
				count[h.Weight]++
			}
		}
		ratio := (count[2] / 10) / (count[1] / 40)
		t.Logf("n=%d: weight-2 node holds %.3fx a weight-1 node", tc.n, ratio)
		// With n > 1 heavy nodes saturate a little (a node holds a key at
		// most once), so the ratio is somewhat under 2.
		if math.Abs(ratio-2) > 2*tc.tol {
			t.Errorf("n=%d: ratio %.3f, want 2 +- %.2f", tc.n, ratio, 2*tc.tol)
		}
	}
}

func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items at random")
	}
	p := mustPlacer(t, view(1000, 10, nil))
	dst := make([]Node, 0, 8)
	for _, spread := range []policies.Spread{policies.SpreadNode, policies.SpreadZone} {
		allocs := testing.AllocsPerRun(200, func() {
			dst, _ = p.Holders(keyOf(1), 6, spread, dst[:0])
		})
		if allocs > 0 {
			t.Errorf("%s: %.1f allocations per Holders, want ~0", spread, allocs)
		}
	}
}

func BenchmarkHolders(b *testing.B) {
	for _, bc := range []struct {
		nodes, zones int
		n            int
		spread       policies.Spread
		weighted     bool
	}{
		{10_000, 20, 3, policies.SpreadNode, false},
		{10_000, 20, 3, policies.SpreadZone, false},
		{10_000, 20, 6, policies.SpreadZone, false},
		{10_000, 20, 6, policies.SpreadZone, true},
		{100, 3, 3, policies.SpreadZone, false},
	} {
		name := fmt.Sprintf("nodes=%d/zones=%d/n=%d/%s/weighted=%v", bc.nodes, bc.zones, bc.n, bc.spread, bc.weighted)
		b.Run(name, func(b *testing.B) {
			var w func(int) float64
			if bc.weighted {
				w = func(i int) float64 { return float64(1 + i%4) }
			}
			p := mustPlacer(b, view(bc.nodes, bc.zones, w))
			keys := make([]blocks.Addr, 1024)
			for i := range keys {
				keys[i] = keyOf(i)
			}
			dst := make([]Node, 0, bc.n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				dst, _ = p.Holders(keys[i%len(keys)], bc.n, bc.spread, dst[:0])
				i++
			}
		})
	}
}
