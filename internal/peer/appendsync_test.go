package peer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// replayAll returns the records of log on j, by seq.
func replayAll(t *testing.T, ctx context.Context, j blocks.Journal, log blocks.ID) map[uint64][]byte {
	t.Helper()
	got := map[uint64][]byte{}
	if err := j.Replay(ctx, log, 0, func(_ blocks.Epoch, seq uint64, rec []byte) error {
		got[seq] = bytes.Clone(rec)
		return nil
	}); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return got
}

// TestAppendSyncDurable: a record appended with AppendSync survives a
// power cut of the holder (memory.Store.Crash drops what no Sync
// covered), and so does a piece put before it; a plain Append does not.
func TestAppendSyncDurable(t *testing.T) {
	ctx := testCtx(t)
	store := memory.New(0)
	ts := startServer(t, store, "")
	c := newClient(t, ts.addr)
	log := blocks.NameID("vol")
	piece := []byte("piece put before the record")
	key := blocks.Sum(piece)
	if err := c.PutPiece(ctx, key, piece); err != nil {
		t.Fatal(err)
	}
	if err := c.Append(ctx, log, 1, 1, []byte("rec1")); err != nil {
		t.Fatal(err)
	}
	syncs := store.Syncs()
	if err := c.AppendSync(ctx, log, 1, 2, []byte("rec2")); err != nil {
		t.Fatal(err)
	}
	if store.Syncs() != syncs+1 {
		t.Fatalf("the holder synced %d times for one AppendSync, want 1", store.Syncs()-syncs)
	}
	if err := c.Append(ctx, log, 1, 3, []byte("rec3: never synced")); err != nil {
		t.Fatal(err)
	}
	store.Crash()
	got := replayAll(t, ctx, c, log)
	if string(got[1]) != "rec1" || string(got[2]) != "rec2" {
		t.Fatalf("after the crash the log holds %d records (1: %q, 2: %q), want records 1 and 2", len(got), got[1], got[2])
	}
	if _, ok := got[3]; ok {
		t.Fatal("record 3 survived the crash without a sync: the test's crash drops nothing")
	}
	if p, err := c.GetPiece(ctx, key); err != nil || !bytes.Equal(p, piece) {
		t.Fatalf("the piece put before AppendSync: %q, %v", p, err)
	}
}

// TestAppendSyncErrors: AppendSync carries Append's errors, and a sync
// error too, with their sentinels; a record over MaxRecord is refused
// before it is sent.
func TestAppendSyncErrors(t *testing.T) {
	ctx := testCtx(t)
	store := memory.New(0)
	ts := startServer(t, store, "")
	c := newClient(t, ts.addr)
	log := blocks.NameID("vol")
	if err := store.Seal(ctx, log, 5); err != nil {
		t.Fatal(err)
	}
	if err := c.AppendSync(ctx, log, 4, 1, []byte("r")); !errors.Is(err, blocks.ErrFenced) {
		t.Fatalf("AppendSync below the seal: %v, want ErrFenced", err)
	}
	if err := c.AppendSync(ctx, log, 5, 1, make([]byte, blocks.MaxRecord+1)); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("AppendSync of an over-long record: %v, want ErrTooLarge", err)
	}
	failing := startServer(t, &syncFailing{Store: memory.New(0)}, "")
	fc := newClient(t, failing.addr)
	if err := fc.AppendSync(ctx, log, 1, 1, []byte("r")); !errors.Is(err, blocks.ErrNoSpace) {
		t.Fatalf("AppendSync where Sync fails: %v, want ErrNoSpace", err)
	}
}

// syncFailing is a holder whose Sync fails.
type syncFailing struct{ *memory.Store }

func (s *syncFailing) Sync(context.Context) error {
	return fmt.Errorf("fault: %w", blocks.ErrNoSpace)
}

// olderServer answers its first Append as a server that predates
// AppendSync answers op 14 (status 8, bad request), and counts Syncs.
type olderServer struct {
	*memory.Store
	refused atomic.Bool
	syncs   atomic.Int64
}

func (o *olderServer) Append(ctx context.Context, log blocks.ID, e blocks.Epoch, seq uint64, rec []byte) error {
	if o.refused.CompareAndSwap(false, true) {
		return fmt.Errorf("unknown op: %w", ErrProtocol)
	}
	return o.Store.Append(ctx, log, e, seq, rec)
}

func (o *olderServer) Sync(ctx context.Context) error {
	o.syncs.Add(1)
	return o.Store.Sync(ctx)
}

// TestAppendSyncFallback: a server that answers AppendSync with status 8
// gets Append and Sync instead, and the record is durable all the same;
// the client does not probe again.
func TestAppendSyncFallback(t *testing.T) {
	ctx := testCtx(t)
	old := &olderServer{Store: memory.New(0)}
	ts := startServer(t, old, "")
	c := newClient(t, ts.addr)
	log := blocks.NameID("vol")
	for seq := uint64(1); seq <= 3; seq++ {
		if err := c.AppendSync(ctx, log, 1, seq, []byte{byte(seq)}); err != nil {
			t.Fatalf("AppendSync %d: %v", seq, err)
		}
	}
	if !c.noAppendSync.Load() {
		t.Fatal("the client did not note that the server lacks AppendSync")
	}
	if n := old.syncs.Load(); n != 3 {
		t.Fatalf("%d syncs for 3 AppendSyncs after the fallback, want 3", n)
	}
	old.Crash()
	if got := replayAll(t, ctx, c, log); len(got) != 3 {
		t.Fatalf("after the crash the log holds %d records, want 3", len(got))
	}
}

// TestAppendSyncWire: an AppendSync frame carries Append's payload, which
// decodes to what was encoded, and the server's limit for it is Append's.
func TestAppendSyncWire(t *testing.T) {
	log := blocks.NameID("l")
	rec := []byte("record")
	p := append(encodeLogHeader(log, 7, 9), rec...)
	gl, e, seq, r, err := decodeAppend(p)
	if err != nil || gl != log || e != 7 || seq != 9 || !bytes.Equal(r, rec) {
		t.Fatalf("decodeAppend: %v %d %d %q %v", gl, e, seq, r, err)
	}
	if requestLimit(opAppendSync) != maxAppend {
		t.Fatalf("limit %d, want %d", requestLimit(opAppendSync), maxAppend)
	}
	fr, err := readFrame(bytes.NewReader(appendFrame(nil, opAppendSync, 0, 3, p)), requestLimit)
	if err != nil || fr.op != opAppendSync || !bytes.Equal(fr.payload, p) {
		t.Fatalf("frame: %+v %v", fr, err)
	}
}

// startOldServer serves a memory store as a server that predates
// AppendSync would: ops 13 (PutPieces), 14, 15 and 21 (HasPieces) are
// unknown, so a frame of one over maxSmall bytes closes the connection and
// a smaller one is answered with status 8; it serves PutPiece, HasPiece,
// Append and Sync. It returns
// the address and the count of frames it refused, by op.
func startOldServer(t *testing.T, store *memory.Store) (string, *[256]atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var refused [256]atomic.Int64
	limit := func(op byte) int {
		switch op {
		case opPutPieces, opAppendSync, opPutAppendSync, opHasPieces, opGetAnyPiece:
			return maxSmall
		}
		return requestLimit(op)
	}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				if _, err := serverHandshake(conn, r, testSecret, "old"); err != nil {
					return
				}
				for {
					f, err := readFrame(r, limit)
					if err != nil {
						return
					}
					var rerr error
					switch f.op {
					case opAppend:
						log, e, seq, rec, derr := decodeAppend(f.payload)
						if derr != nil {
							return
						}
						rerr = store.Append(context.Background(), log, e, seq, rec)
					case opSync:
						rerr = store.Sync(context.Background())
					case opPutPiece:
						key, data, derr := decodePut(f.payload)
						if derr != nil {
							return
						}
						rerr = store.PutPiece(context.Background(), key, data)
					case opHasPiece:
						key, derr := decodeKey(f.payload)
						if derr != nil {
							return
						}
						ok, herr := store.HasPiece(context.Background(), key)
						if herr != nil {
							rerr = herr
							break
						}
						if _, err := conn.Write(appendFrame(nil, opReply, codeOK, f.id, []byte{map[bool]byte{false: 0, true: 1}[ok]})); err != nil {
							return
						}
						continue
					case opGetPiece:
						key, derr := decodeKey(f.payload)
						if derr != nil {
							return
						}
						data, gerr := store.GetPiece(context.Background(), key)
						if gerr != nil {
							rerr = gerr
							break
						}
						if _, err := conn.Write(appendFrame(nil, opReply, codeOK, f.id, data)); err != nil {
							return
						}
						continue
					case opPutPieces, opAppendSync, opPutAppendSync, opHasPieces, opGetAnyPiece:
						refused[f.op].Add(1)
						rerr = fmt.Errorf("unknown op: %w", ErrProtocol)
					default:
						return
					}
					code, msg := codeOK, ""
					if rerr != nil {
						code, msg = errorCode(rerr), rerr.Error()
					}
					if _, err := conn.Write(appendFrame(nil, opReply, code, f.id, []byte(msg))); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), &refused
}

// TestAppendSyncOlderServer: against a server that predates op 14, the
// client's probe gets status 8 (a real AppendSync frame would have closed
// the connection), and AppendSync sends Append and Sync: the records are
// durable, and the server sees one refused probe only.
func TestAppendSyncOlderServer(t *testing.T) {
	ctx := testCtx(t)
	store := memory.New(0)
	addr, refused := startOldServer(t, store)
	c := newClient(t, addr)
	log := blocks.NameID("vol")
	for seq := uint64(1); seq <= 3; seq++ {
		if err := c.AppendSync(ctx, log, 1, seq, bytes.Repeat([]byte{byte(seq)}, 100)); err != nil {
			t.Fatalf("AppendSync %d against an older server: %v", seq, err)
		}
	}
	if n := refused[opAppendSync].Load(); n != 1 {
		t.Fatalf("the older server refused %d AppendSync frames, want 1 (the probe)", n)
	}
	if store.Syncs() != 3 {
		t.Fatalf("%d syncs for 3 AppendSyncs, want 3", store.Syncs())
	}
	store.Crash()
	n := 0
	if err := store.Replay(ctx, log, 0, func(blocks.Epoch, uint64, []byte) error { n++; return nil }); err != nil || n != 3 {
		t.Fatalf("after a crash the older server holds %d records (%v), want 3", n, err)
	}
}
