package peer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// FuzzReadFrame: any bytes decode to frames within the limits, or to an
// error; a frame that decodes re-encodes to the same bytes.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, opGetPiece, 0, 1, make([]byte, 32)))
	f.Add(appendFrame(nil, opReply, codeNotFound, 9, []byte("blocks: not found")))
	f.Add(appendFrame(appendFrame(nil, opSync, 0, 2), opPutPiece, 0, 3, make([]byte, 40)))
	f.Add(appendFrame(nil, opHello, 0, 0, hello{version: 1, nodeID: "n1"}.encode()))
	f.Add(appendFrame(nil, opLoad, 0, 4, make([]byte, 32)))
	f.Add(appendFrame(nil, opCompareAndSet, 0, 5, encodeCompareAndSet(blocks.NameID("r"), 2, []byte("p")), []byte("p")))
	f.Add(appendFrame(nil, opReply, codeConflict, 5, []byte{0, 0, 0, 0, 0, 0, 0, 3}, []byte("conflict")))
	f.Add(appendFrame(nil, opReply, codeNotHosted, 6, []byte("not hosted")))
	f.Add(appendFrame(nil, opAppendSync, 0, 7, append(encodeLogHeader(blocks.NameID("l"), 2, 3), "rec"...)))
	f.Add(appendFrame(nil, opPutAppendSync, 0, 8, encodePutAppendSync(blocks.NameID("l"), 1, 2, []byte("rec"), []Piece{{Key: blocks.Addr{1}, Data: []byte("piece")}})))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, limit := range []func(byte) int{requestLimit, replyLimit} {
			r := bytes.NewReader(b)
			for {
				fr, err := readFrame(r, limit)
				if err != nil {
					break
				}
				if len(fr.payload) > limit(fr.op) {
					t.Fatalf("op %#x: payload of %d bytes over the limit", fr.op, len(fr.payload))
				}
				enc := appendFrame(nil, fr.op, fr.status, fr.id, fr.payload)
				fr2, err := readFrame(bytes.NewReader(enc), limit)
				if err != nil || fr2.op != fr.op || fr2.id != fr.id || !bytes.Equal(fr2.payload, fr.payload) {
					t.Fatalf("re-encoded frame: %+v %v", fr2, err)
				}
			}
		}
	})
}

// FuzzMessages runs every payload decoder on the same bytes: none may
// panic; what decodes re-encodes to the same bytes.
func FuzzMessages(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add(append(encodeLogHeader(blocks.NameID("l"), 3, 4), "record"...))
	f.Add(appendReplayItem(appendReplayItem(nil, 1, 2, []byte("ab")), 2, 3, nil))
	f.Add(hello{version: 1, nodeID: "node"}.encode())
	f.Add(challenge{nodeID: "x"}.encode())
	f.Add([]byte{1})
	f.Add(appendPutEntry(appendPutEntry([]byte{0, 2}, blocks.Addr(blocks.NameID("k")), []byte("piece")), blocks.Addr{}, nil))
	f.Add(encodePutResults([]error{nil, blocks.ErrNoSpace, errors.New("other")}))
	f.Add([]byte{0, 0})
	f.Add(encodeGCSweep(7, []byte("CBF1")))
	f.Add(encodeGCSweep(7, nil))
	f.Add(encodePutAppendSync(blocks.NameID("l"), 1, 2, []byte("rec"), []Piece{{Key: blocks.Addr{1}, Data: []byte("piece")}}))
	f.Add(encodeHasPieces([]blocks.Addr{{1}, {2}}))
	f.Add(encodeGetAnyPiece([]blocks.Addr{{1}, {2}, {3}}))
	f.Fuzz(func(t *testing.T, p []byte) {
		if k, err := decodeKey(p); err == nil && !bytes.Equal(k[:], p) {
			t.Fatal("key")
		}
		if keys, err := decodeHasPieces(p); err == nil && len(keys) > 0 && !bytes.Equal(encodeHasPieces(keys), p) {
			t.Fatal("has-pieces")
		}
		if keys, err := decodeGetAnyPiece(p); err == nil && len(keys) > 0 && !bytes.Equal(encodeGetAnyPiece(keys), p) {
			t.Fatal("get-any-piece")
		}
		if has, err := decodeHasBitmap(p, 8*len(p)-3); err == nil && !bytes.Equal(encodeHasBitmap(has), p) {
			t.Fatal("has-pieces reply")
		}
		if k, d, err := decodePut(p); err == nil && !bytes.Equal(append(k[:], d...), p) {
			t.Fatal("put")
		}
		if log, e, seq, rec, err := decodeAppend(p); err == nil {
			if !bytes.Equal(append(encodeLogHeader(log, uint64(e), seq), rec...), p) {
				t.Fatal("append")
			}
		}
		if log, v, err := decodeLogOp("seal", p); err == nil && !bytes.Equal(encodeLogHeader(log, v), p) {
			t.Fatal("seal")
		}
		var re []byte
		if err := decodeReplayBatch(p, func(e blocks.Epoch, seq uint64, rec []byte) error {
			re = appendReplayItem(re, e, seq, rec)
			return nil
		}); err == nil && !bytes.Equal(re, p) && len(p) > 0 {
			t.Fatal("replay batch")
		}
		n := 0
		if err := decodeWalkBatch(p, func(blocks.Addr) error { n++; return nil }); err == nil && n*32 != len(p) {
			t.Fatal("walk batch")
		}
		_, _ = decodeHas(p)
		if es, err := decodePutPieces(p); err == nil {
			re := binary.BigEndian.AppendUint16(nil, uint16(len(es)))
			for _, e := range es {
				re = appendPutEntry(re, e.key, e.data)
			}
			if !bytes.Equal(re, p) {
				t.Fatal("put-pieces")
			}
		}
		if log, e, seq, rec, es, err := decodePutAppendSync(p); err == nil {
			ps := make([]Piece, len(es))
			for i, e := range es {
				ps[i] = Piece{Key: e.key, Data: e.data}
			}
			if !bytes.Equal(encodePutAppendSync(log, e, seq, rec, ps), p) {
				t.Fatal("put-append-sync")
			}
		}
		if len(p) >= 2 {
			n := int(binary.BigEndian.Uint16(p))
			if errs, err := decodePutResults(p, n); err == nil && len(errs) != n {
				t.Fatalf("put-pieces reply: %d results for %d", len(errs), n)
			}
		}
		if h, err := decodeHello(p); err == nil && !bytes.Equal(h.encode(), p) {
			t.Fatal("hello")
		}
		if c, err := decodeChallenge(p); err == nil && !bytes.Equal(c.encode(), p) {
			t.Fatal("challenge")
		}
		if id, filter, abort, err := decodeGCSweep(p); err == nil {
			if abort && filter != nil || !abort && filter == nil {
				t.Fatal("gc-sweep: abort and filter disagree")
			}
			if !bytes.Equal(encodeGCSweep(id, filter), p) {
				t.Fatal("gc-sweep")
			}
		}
		if r, err := decodeSweepResult(p); err == nil && !bytes.Equal(encodeSweepResult(r), p) {
			t.Fatal("gc-sweep result")
		}
	})
}

// FuzzServer feeds bytes to an authenticated server connection: the server
// must not panic, and must serve a good client afterwards.
func FuzzServer(f *testing.F) {
	f.Add(appendFrame(nil, opGetPiece, 0, 1, make([]byte, 32)))
	f.Add(appendFrame(nil, opWalk, 0, 1))
	f.Add(append(appendFrame(nil, opReplay, 0, 1, encodeLogHeader(blocks.NameID("l"), 0)), appendFrame(nil, opCancel, 0, 1)...))
	f.Add(appendFrame(nil, opAppend, 0, 2, append(encodeLogHeader(blocks.NameID("l"), 1, 1), "rec"...)))
	f.Add(appendFrame(nil, opAppendSync, 0, 2, append(encodeLogHeader(blocks.NameID("l"), 1, 1), "rec"...)))
	f.Add(appendFrame(nil, opAppendSync, 0, 5, make([]byte, 40)))
	f.Add(appendFrame(nil, opAppendSync, 0, 6))
	f.Add(appendFrame(nil, opPutAppendSync, 0, 7, encodePutAppendSync(blocks.NameID("l"), 1, 2, []byte("rec"), []Piece{{Key: blocks.Addr{1}, Data: []byte("piece")}})))
	f.Add(appendFrame(nil, opPutAppendSync, 0, 8))
	f.Add([]byte("garbage"))
	f.Add(appendFrame(nil, opPutPieces, 0, 3, appendPutEntry([]byte{0, 1}, blocks.Addr{1}, []byte("piece"))))
	f.Add(appendFrame(nil, opPutPieces, 0, 4, []byte{0, 0}))
	f.Add(appendFrame(nil, opGCBegin, 0, 5))
	f.Add(appendFrame(nil, opGCSweep, 0, 6, encodeGCSweep(1, nil)))
	f.Add(appendFrame(nil, opHasPieces, 0, 7, encodeHasPieces([]blocks.Addr{{1}})))
	f.Add(appendFrame(nil, opHasPieces, 0, 8))
	f.Add(appendFrame(nil, opGetAnyPiece, 0, 9, encodeGetAnyPiece([]blocks.Addr{{1}, blocks.Sum(nil)})))
	f.Add(appendFrame(nil, opGetAnyPiece, 0, 10))
	store := memory.New(1 << 20)
	_ = store.PutPiece(context.Background(), blocks.Sum(nil), []byte("x"))
	srv, err := NewServer(ServerOptions{Holder: store, Secret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, c := net.Pipe()
		sc := newServerConn(srv, c, context.Background())
		done := make(chan struct{})
		go func() {
			sc.run()
			close(done)
		}()
		a.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := clientHandshake(a, a, testSecret, "fuzz"); err != nil {
			t.Fatal(err)
		}
		go func() { // drain replies
			for {
				if _, err := readFrame(a, replyLimit); err != nil {
					return
				}
			}
		}()
		a.Write(b)
		a.Close()
		<-done
	})
}

func TestFuzzSeedsDecodeErrors(t *testing.T) {
	// Truncations of a valid frame are errors, never frames.
	full := appendFrame(nil, opGetPiece, 0, 1, make([]byte, 32))
	for n := range len(full) {
		if _, err := readFrame(bytes.NewReader(full[:n]), requestLimit); err == nil {
			t.Fatalf("frame truncated to %d bytes decoded", n)
		}
	}
	// Every single-bit flip is caught (CRC, limits or reserved bytes) or
	// changes only what the CRC covers consistently: it never decodes.
	for i := range len(full) * 8 {
		b := bytes.Clone(full)
		b[i/8] ^= 1 << (i % 8)
		if _, err := readFrame(bytes.NewReader(b), requestLimit); err == nil {
			t.Fatalf("bit %d flipped: the frame still decoded", i)
		} else if i/8 >= 4 && !errors.Is(err, ErrProtocol) && i/8 < headerSize {
			t.Fatalf("bit %d flipped: %v, want ErrProtocol", i, err)
		}
	}
}
