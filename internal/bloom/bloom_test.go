package bloom

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"cairn/blocks"
)

func addr(i int) blocks.Addr {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	return blocks.Sum(b[:])
}

// TestNoFalseNegatives: every address added is found, after a round trip
// through the wire format too, and the false-positive rate is near what
// the size promises (16 bits per address: about 0.05%).
func TestNoFalseNegatives(t *testing.T) {
	const n = 100_000
	f := New(n, 16, 42)
	for i := range n {
		f.Add(addr(i))
	}
	g, err := Decode(f.Encode())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Filter{f, g} {
		for i := range n {
			if !h.Has(addr(i)) {
				t.Fatalf("address %d added but not found", i)
			}
		}
	}
	fp := 0
	for i := n; i < 2*n; i++ {
		if g.Has(addr(i)) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.002 {
		t.Errorf("false-positive rate %.4f%%, want about 0.05%%", 100*rate)
	}
	t.Logf("%d false positives in %d (%d bits)", fp, n, g.Bits())
	// Another seed, other false positives.
	h := New(n, 16, 43)
	for i := range n {
		h.Add(addr(i))
	}
	same := 0
	for i := n; i < 2*n; i++ {
		if g.Has(addr(i)) && h.Has(addr(i)) {
			same++
		}
	}
	if same > fp/4+2 {
		t.Errorf("%d of %d false positives shared by two seeds", same, fp)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := New(10, 16, 1).Encode()
	cases := map[string][]byte{
		"empty":      nil,
		"short":      good[:headerSize-1],
		"magic":      append([]byte("XBF1"), good[4:]...),
		"k zero":     func() []byte { b := bytes.Clone(good); b[4] = 0; return b }(),
		"k 33":       func() []byte { b := bytes.Clone(good); b[4] = 33; return b }(),
		"bits 0":     func() []byte { b := bytes.Clone(good); binary.BigEndian.PutUint64(b[13:], 0); return b }(),
		"bits odd":   func() []byte { b := bytes.Clone(good); binary.BigEndian.PutUint64(b[13:], 65); return b }(),
		"bits huge":  func() []byte { b := bytes.Clone(good); binary.BigEndian.PutUint64(b[13:], MaxBits+64); return b }(),
		"truncated":  good[:len(good)-1],
		"extra byte": append(bytes.Clone(good), 0),
	}
	for name, b := range cases {
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(New(10, 16, 1).Encode())
	f.Add([]byte("CBF1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := Decode(b)
		if err != nil {
			return
		}
		if !bytes.Equal(g.Encode(), b) {
			t.Fatal("decode/encode does not round-trip")
		}
		g.Has(addr(1))
		g.Add(addr(2))
		if !g.Has(addr(2)) {
			t.Fatal("added address not found")
		}
	})
}
