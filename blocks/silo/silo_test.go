package silo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"cairn/blocks"
)

// testLogger logs to the test when -v, else discards.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openT(t testing.TB, dir string, opts Options) *Silo {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := Open(context.Background(), dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// pieceData returns deterministic bytes for piece i of size n.
func pieceData(i, n int) []byte {
	b := make([]byte, n)
	var seed [8]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i)*0x9e3779b97f4a7c15+1)
	for j := 0; j < n; j += 8 {
		copy(b[j:], seed[:])
		seed[j/8%8] ^= byte(j) + 1
	}
	return b
}

func keyOf(i int) blocks.Addr { return blocks.Sum([]byte(fmt.Sprintf("piece %d", i))) }

func logOf(i int) blocks.ID { return blocks.NameID(fmt.Sprintf("log %d", i)) }

func mustGet(t testing.TB, s *Silo, key blocks.Addr, want []byte) {
	t.Helper()
	got, err := s.GetPiece(context.Background(), key)
	if err != nil {
		t.Fatalf("GetPiece %s: %v", key, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("GetPiece %s: wrong bytes (%d, want %d)", key, len(got), len(want))
	}
}

func TestHolderContract(t *testing.T) {
	ctx := context.Background()
	for _, fsName := range []string{"os", "mem"} {
		t.Run(fsName, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{SegmentSize: 64 << 10}
			if fsName == "mem" {
				opts.FS = newMemFS()
			}
			s := openT(t, dir, opts)
			k := keyOf(1)
			if _, err := s.GetPiece(ctx, k); !errors.Is(err, blocks.ErrNotFound) {
				t.Fatalf("GetPiece absent: %v, want ErrNotFound", err)
			}
			if ok, err := s.HasPiece(ctx, k); ok || err != nil {
				t.Fatalf("HasPiece absent = %v, %v", ok, err)
			}
			data := pieceData(1, 5000)
			if err := s.PutPiece(ctx, k, data); err != nil {
				t.Fatal(err)
			}
			data[0] ^= 0xff // the silo must not retain data
			data[0] ^= 0xff
			mustGet(t, s, k, data)
			got, _ := s.GetPiece(ctx, k)
			got[0] ^= 0xff // the caller owns the returned slice
			mustGet(t, s, k, data)
			// A second put of the same key is a no-op.
			if err := s.PutPiece(ctx, k, []byte("other")); err != nil {
				t.Fatal(err)
			}
			mustGet(t, s, k, data)
			if ok, err := s.HasPiece(ctx, k); !ok || err != nil {
				t.Fatalf("HasPiece = %v, %v", ok, err)
			}
			// Empty and maximal pieces.
			if err := s.PutPiece(ctx, keyOf(2), nil); err != nil {
				t.Fatal(err)
			}
			mustGet(t, s, keyOf(2), []byte{})
			big := pieceData(3, blocks.MaxPiece)
			if err := s.PutPiece(ctx, keyOf(3), big); err != nil {
				t.Fatal(err)
			}
			if err := s.PutPiece(ctx, keyOf(4), make([]byte, blocks.MaxPiece+1)); !errors.Is(err, blocks.ErrTooLarge) {
				t.Fatalf("oversized PutPiece: %v, want ErrTooLarge", err)
			}
			// Delete, twice, and of an absent key.
			for range 2 {
				if err := s.DeletePiece(ctx, k); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.DeletePiece(ctx, keyOf(99)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetPiece(ctx, k); !errors.Is(err, blocks.ErrNotFound) {
				t.Fatalf("GetPiece deleted: %v", err)
			}
			// Put after delete stores the new bytes.
			if err := s.PutPiece(ctx, k, []byte("again")); err != nil {
				t.Fatal(err)
			}
			mustGet(t, s, k, []byte("again"))
			var walked []blocks.Addr
			if err := s.Walk(ctx, func(a blocks.Addr) error { walked = append(walked, a); return nil }); err != nil {
				t.Fatal(err)
			}
			if len(walked) != 3 {
				t.Fatalf("Walk saw %d keys, want 3", len(walked))
			}
			stop := errors.New("stop")
			if err := s.Walk(ctx, func(blocks.Addr) error { return stop }); err != stop {
				t.Fatalf("Walk error = %v", err)
			}
			st := s.Stats()
			if st.Pieces != 3 || st.LiveBytes != int64(len(big)+5) || st.DiskBytes <= st.LiveBytes {
				t.Fatalf("Stats = %+v", st)
			}
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetPiece(ctx, k); !errors.Is(err, blocks.ErrClosed) {
				t.Fatalf("GetPiece after Close: %v", err)
			}
			if err := s.PutPiece(ctx, keyOf(5), nil); !errors.Is(err, blocks.ErrClosed) {
				t.Fatalf("PutPiece after Close: %v", err)
			}
			if err := s.Sync(ctx); !errors.Is(err, blocks.ErrClosed) {
				t.Fatalf("Sync after Close: %v", err)
			}
			// Reopen: same contents.
			s2 := openT(t, dir, opts)
			mustGet(t, s2, k, []byte("again"))
			mustGet(t, s2, keyOf(3), big)
			mustGet(t, s2, keyOf(2), []byte{})
			if st2 := s2.Stats(); st2.Pieces != st.Pieces || st2.LiveBytes != st.LiveBytes {
				t.Fatalf("Stats after reopen = %+v, want %+v", st2, st)
			}
		})
	}
}

type replayed struct {
	epoch blocks.Epoch
	seq   uint64
	rec   string
}

func replayAll(t testing.TB, s *Silo, log blocks.ID, from uint64) []replayed {
	t.Helper()
	var out []replayed
	err := s.Replay(context.Background(), log, from, func(e blocks.Epoch, seq uint64, rec []byte) error {
		out = append(out, replayed{e, seq, string(rec)})
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	return out
}

func TestJournalContract(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{SegmentSize: 8 << 10}
	s := openT(t, dir, opts)
	l1, l2 := logOf(1), logOf(2)
	for seq := uint64(1); seq <= 5; seq++ {
		if err := s.Append(ctx, l1, 1, seq, []byte(fmt.Sprintf("a%d", seq))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(ctx, l2, 7, 1, []byte("other log")); err != nil {
		t.Fatal(err)
	}
	// Epoch 2 rewrites seq 4 and 5; higher epoch wins; a later lower-epoch
	// append of the same seq is ignored.
	if err := s.Append(ctx, l1, 2, 4, []byte("b4")); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, l1, 1, 4, []byte("stale")); err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(ctx, l1, 2); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, l1, 1, 6, []byte("fenced")); !errors.Is(err, blocks.ErrFenced) {
		t.Fatalf("Append below seal: %v, want ErrFenced", err)
	}
	if err := s.Seal(ctx, l1, 1); err != nil { // lower: no-op
		t.Fatal(err)
	}
	if err := s.Append(ctx, l1, 2, 6, []byte("b6")); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, l1, 2, 7, make([]byte, blocks.MaxRecord+1)); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("oversized Append: %v", err)
	}
	want := []replayed{{1, 1, "a1"}, {1, 2, "a2"}, {1, 3, "a3"}, {2, 4, "b4"}, {1, 5, "a5"}, {2, 6, "b6"}}
	check := func(s *Silo, from uint64, want []replayed) {
		t.Helper()
		got := replayAll(t, s, l1, from)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("Replay(from %d) = %v, want %v", from, got, want)
		}
	}
	check(s, 0, want)
	check(s, 4, want[3:])
	if err := s.Trim(ctx, l1, 3); err != nil {
		t.Fatal(err)
	}
	check(s, 0, want[2:])
	if err := s.Trim(ctx, l1, 2); err != nil { // backwards: no-op
		t.Fatal(err)
	}
	check(s, 0, want[2:])
	stop := errors.New("stop")
	if err := s.Replay(ctx, l1, 0, func(blocks.Epoch, uint64, []byte) error { return stop }); err != stop {
		t.Fatalf("Replay error = %v", err)
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = openT(t, dir, opts)
	check(s, 0, want[2:])
	if err := s.Append(ctx, l1, 1, 7, []byte("fenced")); !errors.Is(err, blocks.ErrFenced) {
		t.Fatalf("Append below seal after reopen: %v", err)
	}
	if got := replayAll(t, s, l2, 0); len(got) != 1 || got[0].rec != "other log" {
		t.Fatalf("log 2 = %v", got)
	}
	// Drop the whole log, seal included: a new writer starts afresh.
	if err := s.Trim(ctx, l1, math.MaxUint64); err != nil {
		t.Fatal(err)
	}
	check(s, 0, nil)
	if err := s.Append(ctx, l1, 1, 1, []byte("new")); err != nil {
		t.Fatalf("Append after drop: %v", err)
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	check(s, 0, []replayed{{1, 1, "new"}})
	s.Close()
	s = openT(t, dir, opts)
	check(s, 0, []replayed{{1, 1, "new"}})
	if got := replayAll(t, s, l2, 0); len(got) != 1 || got[0].rec != "other log" {
		t.Fatalf("log 2 after compaction = %v", got)
	}
}

func TestSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	_, err := Open(context.Background(), dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open of one directory: %v, want a lock error", err)
	}
	s.Close()
	s2 := openT(t, dir, Options{})
	s2.Close()
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{SegmentSize: 100}, {SegmentSize: 2 << 30}, {CompactRatio: 1.5}, {CompactRatio: -1}} {
		if _, err := Open(context.Background(), t.TempDir(), o); err == nil {
			t.Errorf("Open(%+v) succeeded", o)
		}
	}
}

func TestConcurrentPutGetSync(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, Options{SegmentSize: 256 << 10, CompactRatio: 0.3})
	const workers, per = 8, 60
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				n := w*per + i
				d := pieceData(n, 4096+n%3000)
				if err := s.PutPiece(ctx, keyOf(n), d); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					if err := s.Sync(ctx); err != nil {
						t.Error(err)
						return
					}
				}
				mustGetE(t, s, keyOf(n), d)
				if i%2 == 1 {
					if err := s.DeletePiece(ctx, keyOf(n-1)); err != nil {
						t.Error(err)
					}
				}
				if w == 0 && i%20 == 0 {
					if err := s.Compact(ctx); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check := func(s *Silo) {
		for n := range workers * per {
			_, err := s.GetPiece(ctx, keyOf(n))
			if n%2 == 0 {
				if !errors.Is(err, blocks.ErrNotFound) {
					t.Fatalf("deleted piece %d: %v", n, err)
				}
			} else {
				mustGet(t, s, keyOf(n), pieceData(n, 4096+n%3000))
			}
		}
	}
	check(s)
	s.Close()
	check(openT(t, dir, Options{SegmentSize: 256 << 10}))
}

func mustGetE(t testing.TB, s *Silo, key blocks.Addr, want []byte) {
	got, err := s.GetPiece(context.Background(), key)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("GetPiece %s: %v, equal %v", key, err, bytes.Equal(got, want))
	}
}

func TestCompactionFreesSpace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	opts := Options{SegmentSize: 128 << 10, CompactRatio: 1} // background compaction only when a segment is all dead
	s := openT(t, dir, opts)
	const n = 300
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	for i := range n {
		if i%10 != 0 {
			if err := s.DeletePiece(ctx, keyOf(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	t.Logf("before %+v after %+v", before, after)
	if after.DiskBytes-after.Prealloc > (before.DiskBytes-before.Prealloc)/5 {
		t.Fatalf("DiskBytes %d after compaction, before %d", after.DiskBytes, before.DiskBytes)
	}
	if after.Pieces != n/10 || after.LiveBytes != n/10*4096 {
		t.Fatalf("Stats after compaction = %+v", after)
	}
	check := func(s *Silo) {
		for i := range n {
			if i%10 == 0 {
				mustGet(t, s, keyOf(i), pieceData(i, 4096))
			} else if _, err := s.GetPiece(ctx, keyOf(i)); !errors.Is(err, blocks.ErrNotFound) {
				t.Fatalf("deleted piece %d after compaction: %v", i, err)
			}
		}
	}
	check(s)
	s.Close()
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	t.Logf("segments after: %v", len(names))
	s = openT(t, dir, opts)
	check(s)
	if st := s.Stats(); st.Pieces != after.Pieces || st.LiveBytes != after.LiveBytes {
		t.Fatalf("Stats after reopen = %+v, want %+v", st, after)
	}
}
