package redundant

import (
	"slices"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/blocks/memory"
)

// TestPlan: which holder gets which piece, for replicas and shards: a
// holder keeps what it has under any index, only holders left with
// nothing usable get a piece, shards stay distinct (every index kept
// once), and bad pieces are replaced or deleted only where that is safe.
func TestPlan(t *testing.T) {
	has := func(js ...int) Holding { return Holding{Has: js, Bad: -1} }
	none := Holding{Bad: -1}
	bad := func(j int) Holding { return Holding{Bad: j} }
	pending := func(j int) Holding { return Holding{Pending: []int{j}, Bad: -1} }
	unknown := Holding{Unknown: true, Bad: -1}
	for _, tc := range []struct {
		name     string
		replicas int
		held     []Holding
		want     []Fix
	}{
		{"replicas whole", 3, []Holding{has(0), has(1), has(2)}, nil},
		{"replicas moved up a rank", 3, []Holding{has(1), has(2), none}, []Fix{{2, 2, -1}}},
		{"replicas: two keep the same index", 3, []Holding{has(1), has(1), none}, []Fix{{2, 2, -1}}},
		{"replicas: a bad copy under another key", 3, []Holding{bad(2), has(1), has(0)}, []Fix{{0, 0, 2}}},
		{"replicas: waiting on a fallback", 3, []Holding{has(0), pending(1), none}, []Fix{{2, 2, -1}}},
		{"replicas: unreachable", 3, []Holding{unknown, none, has(2)}, []Fix{{1, 1, -1}}},
		{"shards whole", 0, []Holding{has(0), has(1), has(2)}, nil},
		{"shards moved up a rank", 0, []Holding{has(0), has(2), none}, []Fix{{2, 1, -1}}},
		{"shards: a newcomer first", 0, []Holding{none, has(0), has(2)}, []Fix{{0, 1, -1}}},
		{"shards: their own rank first", 0, []Holding{has(1, 0), has(1), none}, []Fix{{2, 2, -1}}},
		{"shards: a duplicate gets a free index", 0, []Holding{has(0), has(0), has(2)}, []Fix{{1, 1, -1}}},
		{"shards: a bad piece replaced in place", 0, []Holding{has(0), bad(1), has(2)}, []Fix{{1, 1, 1}}},
		{"shards: a bad duplicate deleted", 0, []Holding{has(0), bad(0), has(2)}, []Fix{{1, 1, 0}}},
		{"shards: a bad piece whose index only an unreachable holder is taken to keep", 0, []Holding{unknown, bad(0), has(2)}, []Fix{{1, 1, -1}}},
		{"shards: a fallback's copy counts when no holder keeps it", 0, []Holding{has(0), pending(1), has(2)}, nil},
		{"shards: not when a holder keeps it", 0, []Holding{has(0), has(2), pending(2)}, []Fix{{2, 1, -1}}},
		{"shards: unreachable holders get nothing", 0, []Holding{unknown, none, none}, []Fix{{1, 1, -1}, {2, 2, -1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{Replicas: tc.replicas}
			if tc.replicas == 0 {
				opts = Options{Data: 2, Parity: 1}
			}
			s := storeOver(t, opts, new([]blocks.Holder), nil)
			got := s.Plan(tc.held)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Plan(%+v) = %v, want %v", tc.held, got, tc.want)
			}
		})
	}
}

// storeOver is New(opts) placing every block on the holders *placed
// names when it is asked (a test may move them), with all as
// Options.All.
func storeOver(t *testing.T, opts Options, placed *[]blocks.Holder, all []blocks.Holder) *Store {
	t.Helper()
	opts.Holders = func(blocks.Addr, int) []blocks.Holder { return *placed }
	opts.All = func() []blocks.Holder { return all }
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// putRandom puts size random bytes (from seed) through s and returns
// them and their address.
func putRandom(t *testing.T, s *Store, seed uint64, size int) ([]byte, blocks.Addr) {
	t.Helper()
	data := blockstest.Random(seed, size)
	addr, err := s.Put(t.Context(), data)
	if err != nil {
		t.Fatal(err)
	}
	return data, addr
}

// TestTagInEveryPiece: the tag a store is given lands in the header of
// every piece it writes (PieceLayout gives it back), and a store with
// another tag reads those pieces all the same.
func TestTagInEveryPiece(t *testing.T) {
	ctx := t.Context()
	for _, opts := range []Options{{Replicas: 3}, {Data: 2, Parity: 1}} {
		hs := []blocks.Holder{&flaky{Store: memory.New(0)}, &flaky{Store: memory.New(0)}, &flaky{Store: memory.New(0)}}
		opts.Tag = 1
		data, addr := putRandom(t, storeOver(t, opts, &hs, hs), 9, 3000)
		for i, h := range hs {
			p, err := h.GetPiece(ctx, blocks.PieceKey(addr, i))
			if err != nil {
				t.Fatal(err)
			}
			if l, err := PieceLayout(p); err != nil || l.Tag != 1 || l.Index != i {
				t.Fatalf("%+v: piece %d's layout %+v (%v), want tag 1", opts, i, l, err)
			}
		}
		opts.Tag = 0
		if got, err := storeOver(t, opts, &hs, hs).Get(ctx, addr); err != nil || string(got) != string(data) {
			t.Fatalf("a store with another tag reads %v", err)
		}
	}
}
