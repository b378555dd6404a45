package chunkmap

import (
	"bytes"
	"errors"
	"testing"

	"cairn/blocks"
)

func TestPageRoundTrip(t *testing.T) {
	for _, e := range []int{2, 3, 7, 8, 9, 1024} {
		ent := make([]blocks.Addr, e)
		if _, ok := encodePage(nil, 0, ent); ok {
			t.Fatalf("E=%d: an all-zero page encoded", e)
		}
		for i := 0; i < e; i += 3 {
			ent[i] = addr(uint64(i), 1)
		}
		data, ok := encodePage([]byte("prefix"), 5, ent)
		if !ok || string(data[:6]) != "prefix" {
			t.Fatalf("E=%d: encode did not append", e)
		}
		level, got, err := decodePage(data[6:])
		if err != nil || level != 5 || len(got) != e {
			t.Fatalf("E=%d: decode = level %d, %d entries, %v", e, level, len(got), err)
		}
		for i := range ent {
			if got[i] != ent[i] {
				t.Fatalf("E=%d: entry %d = %x, want %x", e, i, got[i][:16], ent[i][:16])
			}
		}
	}
}

func TestPageMalformed(t *testing.T) {
	ent := make([]blocks.Addr, 4)
	ent[1] = addr(1, 1)
	good, _ := encodePage(nil, 0, ent) // 10 + 1 + 32 bytes
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"short header", good[:9]},
		{"bad magic", mod(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"unknown version", mod(func(b []byte) []byte { b[4] = 2; return b })},
		{"level too high", mod(func(b []byte) []byte { b[5] = maxLevel + 1; return b })},
		{"one entry", mod(func(b []byte) []byte { b[9] = 1; return b })},
		{"too many entries", mod(func(b []byte) []byte { b[7] = 0xff; return b })},
		{"no bitmap", good[:10]},
		{"bitmap beyond E", mod(func(b []byte) []byte { b[10] |= 0x10; return b })},
		{"no entries", mod(func(b []byte) []byte { b[10] = 0; return b[:11] })},
		{"truncated body", good[:len(good)-1]},
		{"trailing bytes", append(bytes.Clone(good), 0)},
		{"more bits than entries", mod(func(b []byte) []byte { b[10] |= 1; return b })},
		{"zero entry", mod(func(b []byte) []byte { clear(b[11:]); return b })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := decodePage(tt.data); !errors.Is(err, blocks.ErrCorrupt) {
				t.Fatalf("decodePage = %v, want ErrCorrupt", err)
			}
		})
	}
}

// FuzzDecodePage checks that the page decoder never panics, accepts only
// canonical encodings (decode then encode gives the input back) and
// rejects everything else with ErrCorrupt.
func FuzzDecodePage(f *testing.F) {
	for _, e := range []int{2, 4, 9, 16} {
		ent := make([]blocks.Addr, e)
		for i := 0; i < e; i += 2 {
			ent[i] = addr(uint64(i), 7)
			data, _ := encodePage(nil, i%3, ent)
			f.Add(data)
		}
	}
	f.Add([]byte("CMPG\x01\x00\x00\x00\x00\x02\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		level, ent, err := decodePage(data)
		if err != nil {
			if !errors.Is(err, blocks.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, ok := encodePage(nil, level, ent)
		if !ok || !bytes.Equal(again, data) {
			t.Fatalf("decoded page re-encodes differently:\n in  %x\n out %x", data, again)
		}
	})
}
