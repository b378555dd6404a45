package volume

import (
	"maps"
	"math/rand/v2"
	"testing"
)

// TestDirtySet: random puts, gets and dels over a few blocks' worth of
// chunks and some far apart agree with a map; len and all match it.
func TestDirtySet(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var s dirtySet
	model := map[uint64]*dirtyChunk{}
	chunk := func() uint64 {
		if rng.IntN(4) == 0 {
			return rng.Uint64() // far apart, the top of the range included
		}
		return uint64(rng.IntN(5 * dirtyBlockLen))
	}
	var far []uint64
	for i := range 20000 {
		c := chunk()
		if c >= 5*dirtyBlockLen {
			far = append(far, c)
		}
		if len(far) > 0 && rng.IntN(3) == 0 {
			c = far[rng.IntN(len(far))]
		}
		switch rng.IntN(3) {
		case 0:
			d := &dirtyChunk{gen: uint64(i)}
			s.put(c, d)
			model[c] = d
		case 1:
			s.del(c)
			delete(model, c)
		}
		d, ok := s.get(c)
		if want, wok := model[c]; ok != wok || d != want {
			t.Fatalf("op %d: get(%d) = %v, %v; want %v, %v", i, c, d, ok, want, wok)
		}
		if s.len() != len(model) {
			t.Fatalf("op %d: len %d, want %d", i, s.len(), len(model))
		}
		if i%1000 == 0 {
			got := maps.Collect(s.all())
			if !maps.Equal(got, model) {
				t.Fatalf("op %d: all() gives %d chunks, the model %d, or different ones", i, len(got), len(model))
			}
		}
	}
	for c := range model {
		s.del(c)
	}
	if s.len() != 0 || s.blocks != nil || s.last != nil {
		t.Fatal("an emptied set kept its blocks")
	}
	// all stops when asked to.
	for c := range uint64(3 * dirtyBlockLen) {
		s.put(c, &dirtyChunk{})
	}
	n := 0
	for range s.all() {
		if n++; n == 5 {
			break
		}
	}
	if n != 5 {
		t.Fatalf("all went on after a break: %d", n)
	}
}
