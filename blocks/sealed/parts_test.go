package sealed

import (
	"bytes"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/policies"
)

// TestPartsSameAddress checks that a block put through the inner store's
// PutParts (no cipher: header and body handed over separately) gets the
// address of the whole sealed block, the same as through a plain Put, and
// reads back.
func TestPartsSameAddress(t *testing.T) {
	for _, z := range []policies.Compression{policies.CompressionNone, policies.CompressionLZ4} {
		o := Options{Compression: z}
		st := newStack(t, o, false)
		raw, err := New(newRaw(), o)
		if err != nil {
			t.Fatal(err)
		}
		for i, data := range [][]byte{
			blockstest.Random(1, 4096),
			make([]byte, 4096), // compresses
			{7},
			{},
		} {
			want, err := raw.Put(t.Context(), data)
			if err != nil {
				t.Fatal(err)
			}
			c, err := st.s.seal(data)
			if err != nil {
				t.Fatal(err)
			}
			if want != blocks.Sum(c) {
				t.Fatalf("%s block %d: raw address is not the hash of the sealed block", z, i)
			}
			got, n, err := st.s.PutSized(t.Context(), data)
			if err != nil || got != want || n != len(c) {
				t.Fatalf("%s block %d: PutSized = %v, %d, %v; want %v, %d", z, i, got, n, err, want, len(c))
			}
			back, err := st.s.Get(t.Context(), got)
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("%s block %d: Get = %d bytes, %v", z, i, len(back), err)
			}
		}
	}
}

// TestSyncHolders checks that the store reports its inner store's holders,
// and nil ("call Sync") when the inner store cannot tell.
func TestSyncHolders(t *testing.T) {
	st := newStack(t, Options{}, false)
	if got := st.s.SyncHolders(); len(got) != len(st.mems) {
		t.Errorf("SyncHolders over 3 holders = %d holders", len(got))
	}
	raw, err := New(newRaw(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := raw.SyncHolders(); got != nil {
		t.Errorf("SyncHolders over a plain store = %v, want nil", got)
	}
}

// TestGetInto checks that GetInto returns what Get does, for every
// combination, over the redundancy layer and over a store without the
// capability, with buffers too small and large enough.
func TestGetInto(t *testing.T) {
	for _, o := range combos() {
		t.Run(name(o), func(t *testing.T) {
			st := newStack(t, o, false)
			raw, err := New(newRaw(), o)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range []*Store{st.s, raw} {
				for i, data := range [][]byte{blockstest.Random(3, 4096), make([]byte, 4096), {1}} {
					addr, err := s.Put(t.Context(), data)
					if err != nil {
						t.Fatal(err)
					}
					for _, room := range []int{0, 16 << 10} {
						got, err := s.GetInto(t.Context(), addr, make([]byte, 0, room))
						if err != nil || !bytes.Equal(got, data) {
							t.Fatalf("block %d, room %d: GetInto = %d bytes, %v", i, room, len(got), err)
						}
					}
				}
			}
		})
	}
}
