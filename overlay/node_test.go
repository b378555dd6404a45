package overlay

import (
	"errors"
	"strings"
	"testing"
)

func sampleNode() Node {
	return Node{
		ID:            "node-a.1",
		Zone:          "rack-7",
		RaftAddr:      "127.0.0.1:7001",
		DataAddr:      "127.0.0.1:7002",
		NBDAddr:       "127.0.0.1:10809",
		Capacity:      4 << 40,
		Storage:       true,
		RaftReplicaID: 17,
	}
}

func TestMetaRoundTrip(t *testing.T) {
	for _, n := range []Node{
		sampleNode(),
		{ID: "x"},
		{ID: "frontend-1", Zone: "z", DataAddr: "[::1]:9", Storage: false},
		{ID: strings.Repeat("i", MaxIDLen), Zone: "zöne", Capacity: 1<<63 - 1, RaftReplicaID: 1<<64 - 1, Storage: true},
	} {
		b, err := EncodeMeta(n)
		if err != nil {
			t.Fatalf("EncodeMeta(%+v): %v", n, err)
		}
		if len(b) > MaxMetaSize {
			t.Fatalf("EncodeMeta(%+v): %d bytes", n, len(b))
		}
		got, err := DecodeMeta(b)
		if err != nil {
			t.Fatalf("DecodeMeta(EncodeMeta(%+v)): %v", n, err)
		}
		if got != n {
			t.Fatalf("round trip: got %+v, want %+v", got, n)
		}
	}
	// The leaving flag survives and does not leak into Node.
	b, err := encodeMeta(meta{Node: sampleNode(), leaving: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeMeta(b)
	if err != nil || !m.leaving || m.Node != sampleNode() {
		t.Fatalf("leaving flag: %+v, %v", m, err)
	}
}

func TestMetaCompact(t *testing.T) {
	b, err := EncodeMeta(sampleNode())
	if err != nil {
		t.Fatal(err)
	}
	// 2 header bytes, 1+7 varint bytes (17, 2^42), 5 length bytes and the strings.
	n := sampleNode()
	want := 2 + 1 + 7 + 5 + len(n.ID) + len(n.Zone) + len(n.RaftAddr) + len(n.DataAddr) + len(n.NBDAddr)
	if len(b) != want {
		t.Fatalf("encoded %d bytes, want %d", len(b), want)
	}
}

func TestMetaTooLarge(t *testing.T) {
	long := strings.Repeat("a", MaxFieldLen)
	n := Node{ID: "big", Zone: long, RaftAddr: long, DataAddr: long}
	_, err := EncodeMeta(n)
	if !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("EncodeMeta of a %d-byte node: %v, want ErrMetaTooLarge", 3*MaxFieldLen, err)
	}
	if !strings.Contains(err.Error(), "512") {
		t.Fatalf("error does not name the limit: %v", err)
	}
}

func TestNodeValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Node)
	}{
		{"empty id", func(n *Node) { n.ID = "" }},
		{"long id", func(n *Node) { n.ID = strings.Repeat("x", MaxIDLen+1) }},
		{"space in id", func(n *Node) { n.ID = "a b" }},
		{"slash in id", func(n *Node) { n.ID = "a/b" }},
		{"negative capacity", func(n *Node) { n.Capacity = -1 }},
		{"control in zone", func(n *Node) { n.Zone = "z\n" }},
		{"bad utf8 in addr", func(n *Node) { n.DataAddr = "\xff" }},
		{"long nbd addr", func(n *Node) { n.NBDAddr = strings.Repeat("1", MaxFieldLen+1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := sampleNode()
			tc.edit(&n)
			if err := n.Validate(); !errors.Is(err, ErrInvalidNode) {
				t.Fatalf("Validate: %v, want ErrInvalidNode", err)
			}
			if _, err := EncodeMeta(n); !errors.Is(err, ErrInvalidNode) {
				t.Fatalf("EncodeMeta: %v, want ErrInvalidNode", err)
			}
		})
	}
}

func TestDecodeMetaErrors(t *testing.T) {
	good, err := EncodeMeta(sampleNode())
	if err != nil {
		t.Fatal(err)
	}
	bigCap := []byte{1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"one byte", []byte{1}},
		{"version 0", append([]byte{0}, good[1:]...)},
		{"version 2", append([]byte{2}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"truncated varint", []byte{1, 0, 0x80}},
		{"capacity overflows int64", bigCap},
		{"length past end", []byte{1, 0, 0, 0, 200, 'a'}},
		{"empty id", []byte{1, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"too long", make([]byte, MaxMetaSize+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeMeta(tc.b); !errors.Is(err, ErrBadMeta) {
				t.Fatalf("DecodeMeta(%x): %v, want ErrBadMeta", tc.b, err)
			}
		})
	}
	// Trailing bytes (later fields) and unknown flags are ignored.
	ext := append(append([]byte(nil), good...), 9, 9, 9)
	ext[1] |= 0x80
	n, err := DecodeMeta(ext)
	if err != nil || n != sampleNode() {
		t.Fatalf("extended meta: %+v, %v", n, err)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	good, _ := EncodeMeta(sampleNode())
	leaving, _ := encodeMeta(meta{Node: Node{ID: "f", Zone: "z"}, leaving: true})
	f.Add(good)
	f.Add(leaving)
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 1, 'x', 0, 0, 0, 0})
	f.Add([]byte{1, 0xff, 0x80, 0x80, 0x80})
	f.Add(append(good, 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrBadMeta) {
				t.Fatalf("error does not wrap ErrBadMeta: %v", err)
			}
			return
		}
		if err := m.Node.Validate(); err != nil {
			t.Fatalf("decoded an invalid node %+v: %v", m.Node, err)
		}
		enc, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		m2, err := decodeMeta(enc)
		if err != nil || m2 != m {
			t.Fatalf("re-decode: %+v, %v; want %+v", m2, err, m)
		}
	})
}
