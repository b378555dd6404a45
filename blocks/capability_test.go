package blocks_test

import (
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
)

type localFlag bool

func (l localFlag) IsLocal() bool { return bool(l) }

type unhashable struct{ s []int }

func TestSameHolder(t *testing.T) {
	a, b := memory.New(0), memory.New(0)
	for _, tc := range []struct {
		name string
		x, y any
		want bool
	}{
		{"same pointer", a, a, true},
		{"other pointer", a, b, false},
		{"nil", a, nil, false},
		{"both nil", nil, nil, false},
		{"values are never the same", localFlag(true), localFlag(true), false},
		{"non-comparable values do not panic", unhashable{}, unhashable{}, false},
	} {
		if got := blocks.SameHolder(tc.x, tc.y); got != tc.want {
			t.Errorf("%s: SameHolder = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHolderIsLocal(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    any
		want bool
	}{
		{"local", localFlag(true), true},
		{"says not local", localFlag(false), false},
		{"no capability", memory.New(0), false},
		{"nil", nil, false},
	} {
		if got := blocks.HolderIsLocal(tc.h); got != tc.want {
			t.Errorf("%s: HolderIsLocal = %v, want %v", tc.name, got, tc.want)
		}
	}
}
