package volume

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"cairn/blocks"
)

func sampleRoot() *rootRecord {
	return &rootRecord{
		Name:          "db-1",
		Size:          10 << 30,
		Policy:        testPolicy(4096),
		Created:       time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
		Parent:        "base",
		MapRoot:       blocks.Sum([]byte("map")),
		Chunks:        (10 << 30) / 4096,
		PageEntries:   1024,
		CheckpointSeq: 42,
		Epoch:         7,
		LeaseOwner:    "node-a",
		LeaseExpiry:   time.Date(2026, 1, 2, 3, 4, 20, 0, time.UTC),
		WrappedKey:    bytes.Repeat([]byte{0xab}, 60),
		Kept:          []keptVersion{{MapRoot: blocks.Sum([]byte("old")), Size: 1 << 30, Seq: 5, At: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
		Allocated:     12,
		Stored:        4096 * 10,
		PutLogical:    100,
		PutStored:     80,
	}
}

func TestRootRoundTrip(t *testing.T) {
	r := sampleRoot()
	got, err := decodeRoot(encodeRoot(r))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
}

func TestRootDecodeErrors(t *testing.T) {
	good := encodeRoot(sampleRoot())
	bad := sampleRoot()
	bad.Chunks++
	for _, tc := range []struct {
		name string
		b    []byte
		msg  string
	}{
		{"empty", nil, "not a volume root (bad magic)"},
		{"version", append([]byte("CRNV\x09"), good[5:]...), "format version 9, this build reads 1"},
		{"truncated", good[:len(good)-3], "put stored: truncated"},
		{"trailing", append(bytes.Clone(good), 0), "1 trailing bytes"},
		{"chunks", encodeRoot(bad), "chunk count 2621441 does not match size"},
	} {
		_, err := decodeRoot(tc.b)
		if !errors.Is(err, blocks.ErrCorrupt) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want ErrCorrupt saying %q", tc.name, err, tc.msg)
		}
	}
}

func FuzzDecodeRoot(f *testing.F) {
	f.Add(encodeRoot(sampleRoot()))
	r := sampleRoot()
	r.Kept, r.LeaseOwner, r.LeaseExpiry, r.Parent = nil, "", time.Time{}, ""
	f.Add(encodeRoot(r))
	f.Add([]byte("CRNV\x01"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRoot(b)
		if err != nil {
			if !errors.Is(err, blocks.ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if again := encodeRoot(r); !bytes.Equal(again, b) {
			t.Fatalf("decode accepted a non-canonical root")
		}
	})
}

func FuzzDecodeCatalog(f *testing.F) {
	f.Add(encodeCatalog([]catalogEntry{{Name: "a", ID: blocks.NameID("a")}, {Name: "b.c", ID: blocks.NameID("b")}}))
	f.Add(encodeCatalog(nil))
	f.Add([]byte("CRNC\x01\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := decodeCatalog(b)
		if err != nil {
			if !errors.Is(err, blocks.ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := decodeCatalog(encodeCatalog(es))
		if err != nil || len(again) != len(es) {
			t.Fatalf("re-encoded catalogue does not decode: %v", err)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord([]change{{Chunk: 1, Addr: blocks.Sum([]byte("x"))}, {Chunk: 1 << 40}}))
	f.Add(encodeRecord(nil))
	f.Add([]byte{1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, blocks.ErrCorrupt) {
				t.Fatalf("decode error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if !bytes.Equal(encodeRecord(cs), b) {
			t.Fatal("record does not re-encode to the same bytes")
		}
	})
}
