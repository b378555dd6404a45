package sealed

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
)

// FuzzOpen hands arbitrary bytes, as an inner store could return them, to
// every configuration's decoder: it must never panic, and it fails only
// with ErrCorrupt.
func FuzzOpen(f *testing.F) {
	var stores []*Store
	for _, o := range combos() {
		s, err := New(newRaw(), o)
		if err != nil {
			f.Fatal(err)
		}
		stores = append(stores, s)
		for _, data := range [][]byte{nil, []byte("x"), blockstest.Compressible(1, 3000), blockstest.Random(1, 300)} {
			c, err := s.seal(data)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(c)
		}
	}
	f.Add([]byte{formatVersion<<4 | flagCompressed, 0xff, 0xff, 0xff, 0xff, 0})
	f.Add([]byte{formatVersion<<4 | flagCompressed, 0, 0, 0x10, 0, 0x1f, 0})
	f.Fuzz(func(t *testing.T, c []byte) {
		for _, s := range stores {
			p, err := s.open(bytes.Clone(c)) // open decrypts in place
			if err != nil {
				if !errors.Is(err, blocks.ErrCorrupt) {
					t.Fatalf("open: %v does not wrap ErrCorrupt", err)
				}
				continue
			}
			if len(p) > blocks.MaxBlock {
				t.Fatalf("open returned %d bytes", len(p))
			}
		}
	})
}

// FuzzRoundTrip seals arbitrary plaintext under every configuration and
// opens it again.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
	f.Add(blockstest.Random(2, 100))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, o := range combos() {
			s, err := New(newRaw(), o)
			if err != nil {
				t.Fatal(err)
			}
			a, err := s.Put(context.Background(), data)
			if err != nil {
				t.Fatal(err)
			}
			checkGet(t, s, a, data)
		}
	})
}
