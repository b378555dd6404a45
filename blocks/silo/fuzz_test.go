package silo

import (
	"bytes"
	"context"
	"math"
	"testing"

	"cairn/blocks"
	"cairn/internal/crc32c"
)

func encodeRecord(h header, payload []byte) []byte {
	b := make([]byte, hdrSize+len(payload))
	copy(b[hdrSize:], payload)
	h.n = uint32(len(payload))
	putHeader(b, &h, crc32c.Checksum(payload))
	return b
}

func FuzzDecodeHeader(f *testing.F) {
	f.Add(encodeRecord(header{typ: recPiece, stamp: 1, key: keyOf(1)}, []byte("hello")))
	f.Add(encodeRecord(header{typ: recTomb, stamp: 2, key: keyOf(1)}, nil))
	f.Add(encodeRecord(header{typ: recJournal, stamp: 3, key: logOf(1), a: 4, b: 5}, []byte("rec")))
	f.Add(encodeRecord(header{typ: recSeal, stamp: 4, key: logOf(1), a: 9}, nil))
	f.Add(encodeRecord(header{typ: recTrim, stamp: 5, key: logOf(1), b: math.MaxUint64}, nil))
	f.Add([]byte("CRN1"))
	f.Add(make([]byte, hdrSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h header
		if err := decodeHeader(b, &h); err != nil {
			return
		}
		if h.n > payloadMax(h.typ) {
			t.Fatalf("decoded length %d over the bound of type %d", h.n, h.typ)
		}
		if len(b) >= hdrSize+int(h.n) && checkRecord(b[:hdrSize+int(h.n)], &h) {
			// An intact record re-encodes to the same bytes.
			re := encodeRecord(h, b[hdrSize:hdrSize+int(h.n)])
			if !bytes.Equal(re, b[:hdrSize+int(h.n)]) {
				t.Fatalf("re-encoding differs")
			}
		}
	})
}

// seedSegment returns the bytes of a segment written by a silo.
func seedSegment(f *testing.F) []byte {
	fsys := newMemFS()
	ctx := context.Background()
	s, err := Open(ctx, "/silo", Options{FS: fsys, SegmentSize: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	s.PutPiece(ctx, keyOf(1), []byte("one"))
	s.PutPiece(ctx, keyOf(2), pieceData(2, 300))
	s.DeletePiece(ctx, keyOf(1))
	s.Append(ctx, logOf(1), 1, 1, []byte("r1"))
	s.Append(ctx, logOf(1), 2, 1, []byte("r1 again"))
	s.Seal(ctx, logOf(1), 2)
	s.Trim(ctx, logOf(1), 1)
	s.Append(ctx, logOf(2), 1, 1, []byte("r2"))
	s.Trim(ctx, logOf(2), math.MaxUint64)
	s.Close()
	_, files := fsys.files()
	ino := files["/silo/0000000000000001.seg"]
	if ino == nil {
		f.Fatal("no segment")
	}
	// Without its zero tail (the cut seed below is then a torn record).
	return bytes.TrimRight(append([]byte(nil), ino.data...), "\x00")
}

// FuzzOpen opens a silo whose segment holds arbitrary bytes (as the sealed
// segment or as the active one), then reads everything it indexed,
// compacts and reopens: nothing may panic, and nothing served may fail its
// checksum.
func FuzzOpen(f *testing.F) {
	seg := seedSegment(f)
	f.Add(seg, false)
	f.Add(seg, true)
	f.Add(seg[:len(seg)-7], true)
	flipped := bytes.Clone(seg)
	flipped[100] ^= 1
	f.Add(flipped, false)
	f.Add(append(bytes.Clone(seg), seg...), false)
	f.Add([]byte{}, true)
	f.Add(append(bytes.Clone(seg), make([]byte, 4096)...), true)  // a preallocated tail
	f.Add(append(bytes.Clone(seg), make([]byte, 4096)...), false) // one left by a crash at sealing
	f.Add(append(append(bytes.Clone(seg), make([]byte, 300)...), seg...), true)
	f.Add(append(make([]byte, 100), seg...), true)
	f.Add(bytes.Repeat([]byte("CRN1"), 100), false)
	f.Fuzz(func(t *testing.T, data []byte, active bool) {
		ctx := context.Background()
		fsys := newMemFS()
		fsys.names["/silo/0000000000000001.seg"] = &inode{data: bytes.Clone(data)}
		if !active {
			// A later segment with a record makes segment 1 a sealed one.
			fsys.names["/silo/0000000000000002.seg"] = &inode{data: encodeRecord(header{typ: recTomb, stamp: 1 << 40, key: keyOf(99)}, nil)}
		}
		opts := Options{FS: fsys, SegmentSize: MinSegmentSize}
		for range 2 {
			s, err := Open(ctx, "/silo", opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			s.Walk(ctx, func(k blocks.Addr) error {
				s.GetPiece(ctx, k)
				return nil
			})
			var logs []blocks.ID
			s.mu.RLock()
			for id := range s.logs {
				logs = append(logs, id)
			}
			s.mu.RUnlock()
			for _, id := range logs {
				s.Replay(ctx, id, 0, func(blocks.Epoch, uint64, []byte) error { return nil })
			}
			if err := s.Compact(ctx); err != nil {
				t.Fatalf("Compact: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
	})
}
