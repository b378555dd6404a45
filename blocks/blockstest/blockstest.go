// Package blockstest holds conformance suites for the interfaces of package
// blocks: RunStore for a blocks.Store, RunHolder for a blocks.Holder,
// RunJournal for a blocks.Journal. An implementation's tests call them with
// a constructor of fresh, empty instances:
//
//	func TestConformance(t *testing.T) {
//		blockstest.RunStore(t, func(t testing.TB) blocks.Store { return newStore(t) })
//	}
//
// Each suite runs subtests that check the contracts written in blocks.go
// through real outcomes (bytes read back, errors returned). The suites use
// sizes up to blocks.MaxBlock, so each takes a few seconds under -race.
package blockstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"cairn/blocks"
)

// Sizes are the block sizes every suite round-trips.
var Sizes = []int{0, 1, 4095, 4096, 1 << 20, blocks.MaxBlock}

// timeout bounds each subtest's context: generous, for a busy machine.
const timeout = 2 * time.Minute

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// Random returns n pseudo-random (incompressible) bytes determined by seed.
func Random(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x636169726e))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Compressible returns n bytes of a repetitive text pattern that includes
// seed, so that different seeds give different blocks.
func Compressible(seed uint64, n int) []byte {
	pattern := fmt.Appendf(nil, "cairn block %d: the quick brown fox jumps over the lazy dog. ", seed)
	return bytes.Repeat(pattern, n/len(pattern)+1)[:n]
}

// StoreOptions adjust RunStoreWith to a store's documented behaviour.
type StoreOptions struct {
	// RandomAddrs: equal data put twice may get different addresses (an
	// encrypting store with random nonces, e.g. sealed without Dedup).
	// Both must then read back the data.
	RandomAddrs bool
}

// RunStore runs the blocks.Store conformance suite with the default
// StoreOptions. newStore returns a fresh, empty store; it may register
// cleanups on t.
func RunStore(t *testing.T, newStore func(t testing.TB) blocks.Store) {
	RunStoreWith(t, newStore, StoreOptions{})
}

// RunStoreWith runs the blocks.Store conformance suite, adjusted by opts.
func RunStoreWith(t *testing.T, newStore func(t testing.TB) blocks.Store, opts StoreOptions) {
	t.Run("RoundTrip", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		for i, n := range Sizes {
			for _, kind := range []string{"random", "text"} {
				data := Random(uint64(i), n)
				if kind == "text" {
					data = Compressible(uint64(i), n)
				}
				addr, err := s.Put(ctx, data)
				if err != nil {
					t.Fatalf("Put(%d %s bytes): %v", n, kind, err)
				}
				got, err := s.Get(ctx, addr)
				if err != nil {
					t.Fatalf("Get(%d %s bytes): %v", n, kind, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("Get(%d %s bytes) returned %d other bytes", n, kind, len(got))
				}
				if ok, err := s.Has(ctx, addr); err != nil || !ok {
					t.Fatalf("Has(%d %s bytes) = %v, %v; want true", n, kind, ok, err)
				}
			}
		}
	})
	t.Run("Idempotent", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		data := Random(1, 10000)
		a1, err := s.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		a2, err := s.Put(ctx, bytes.Clone(data))
		if err != nil {
			t.Fatal(err)
		}
		if a1 != a2 && !opts.RandomAddrs {
			t.Fatalf("second Put of equal data: addr %v, first %v", a2, a1)
		}
		checkGet(t, s, a2, data)
		other, err := s.Put(ctx, Random(2, 10000))
		if err != nil {
			t.Fatal(err)
		}
		if other == a1 {
			t.Fatalf("different data got the same addr %v", a1)
		}
		checkGet(t, s, a1, data)
	})
	t.Run("Ownership", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		data := Random(3, 5000)
		want := bytes.Clone(data)
		addr, err := s.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		clear(data) // Put must not retain data
		got, err := s.Get(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("Get after the caller reused Put's slice returned other bytes")
		}
		clear(got) // the caller owns Get's slice
		checkGet(t, s, addr, want)
	})
	t.Run("Has", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		if ok, err := s.Has(ctx, blocks.Sum([]byte("never put"))); err != nil || ok {
			t.Fatalf("Has(unknown) = %v, %v; want false, nil", ok, err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		data := Random(4, 4096)
		addr, err := s.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, addr); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := s.Get(ctx, addr); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
		}
		if ok, err := s.Has(ctx, addr); err != nil || ok {
			t.Fatalf("Has after Delete = %v, %v; want false, nil", ok, err)
		}
		if err := s.Delete(ctx, addr); err != nil {
			t.Fatalf("second Delete: %v", err)
		}
		if err := s.Delete(ctx, blocks.Sum([]byte("never put"))); err != nil {
			t.Fatalf("Delete(unknown): %v", err)
		}
		// Put again after a delete works.
		addr, err = s.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		checkGet(t, s, addr, data)
	})
	t.Run("GetUnknown", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		for _, a := range []blocks.Addr{{}, blocks.Sum(nil), blocks.Sum([]byte("never put"))} {
			if got, err := s.Get(ctx, a); !errors.Is(err, blocks.ErrNotFound) {
				t.Fatalf("Get(%v) = %d bytes, %v; want ErrNotFound", a, len(got), err)
			}
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		const workers, ops = 8, 16
		var wg sync.WaitGroup
		errc := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range ops {
					// Half the blocks are shared by all workers, half are own.
					seed := uint64(1000 + i)
					if i%2 == 1 {
						seed = uint64(w*ops + i + 2000)
					}
					data := Random(seed, 1000+int(seed%7)*1000)
					addr, err := s.Put(ctx, data)
					if err != nil {
						errc <- fmt.Errorf("worker %d: Put: %w", w, err)
						return
					}
					got, err := s.Get(ctx, addr)
					if err != nil {
						errc <- fmt.Errorf("worker %d: Get: %w", w, err)
						return
					}
					if !bytes.Equal(got, data) {
						errc <- fmt.Errorf("worker %d: Get %v returned other bytes", w, addr)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
	})
	t.Run("Sync", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		if err := s.Sync(ctx); err != nil {
			t.Fatalf("Sync of an empty store: %v", err)
		}
		data := Random(5, 3000)
		addr, err := s.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(ctx); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		checkGet(t, s, addr, data)
	})
	t.Run("TooLarge", func(t *testing.T) {
		s := newStore(t)
		ctx := testContext(t)
		// No store accepts more than a piece can hold; a plaintext store
		// may refuse anything above MaxBlock.
		if _, err := s.Put(ctx, make([]byte, blocks.MaxPiece+1)); !errors.Is(err, blocks.ErrTooLarge) {
			t.Fatalf("Put(MaxPiece+1 bytes): %v, want ErrTooLarge", err)
		}
	})
	t.Run("Canceled", func(t *testing.T) {
		s := newStore(t)
		data := Random(6, 2000)
		addr, err := s.Put(testContext(t), data)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.Put(ctx, Random(7, 2000)); !errors.Is(err, context.Canceled) {
			t.Errorf("Put with a canceled context: %v, want context.Canceled", err)
		}
		if _, err := s.Get(ctx, addr); !errors.Is(err, context.Canceled) {
			t.Errorf("Get with a canceled context: %v, want context.Canceled", err)
		}
		checkGet(t, s, addr, data)
	})
}

func checkGet(t testing.TB, s blocks.Getter, addr blocks.Addr, want []byte) {
	t.Helper()
	got, err := s.Get(testContext(t), addr)
	if err != nil {
		t.Fatalf("Get(%v): %v", addr, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%v) returned %d other bytes, want %d", addr, len(got), len(want))
	}
}

// key returns a distinct holder key for tests.
func key(i int) blocks.Addr { return blocks.Sum(fmt.Appendf(nil, "blockstest key %d", i)) }

// RunHolder runs the blocks.Holder conformance suite (and, when the holder
// implements it, blocks.Walker's). newHolder returns a fresh, empty holder.
// A holder may accept pieces above blocks.MaxPiece or refuse them with
// blocks.ErrTooLarge; it must not accept and corrupt them.
func RunHolder(t *testing.T, newHolder func(t testing.TB) blocks.Holder) {
	t.Run("RoundTrip", func(t *testing.T) {
		h := newHolder(t)
		ctx := testContext(t)
		for i, n := range append(Sizes, blocks.MaxPiece) {
			data := Random(uint64(i), n)
			if err := h.PutPiece(ctx, key(i), data); err != nil {
				t.Fatalf("PutPiece(%d bytes): %v", n, err)
			}
			checkPiece(t, h, key(i), data)
			if ok, err := h.HasPiece(ctx, key(i)); err != nil || !ok {
				t.Fatalf("HasPiece(%d bytes) = %v, %v; want true", n, ok, err)
			}
		}
	})
	t.Run("ReplacesNothing", func(t *testing.T) {
		h := newHolder(t)
		ctx := testContext(t)
		first := Random(1, 100)
		if err := h.PutPiece(ctx, key(1), first); err != nil {
			t.Fatal(err)
		}
		if err := h.PutPiece(ctx, key(1), first); err != nil {
			t.Fatalf("second PutPiece of the same piece: %v", err)
		}
		if err := h.PutPiece(ctx, key(1), Random(2, 100)); err != nil {
			t.Fatalf("PutPiece of other bytes under a held key: %v", err)
		}
		checkPiece(t, h, key(1), first)
	})
	t.Run("Ownership", func(t *testing.T) {
		h := newHolder(t)
		ctx := testContext(t)
		data := Random(3, 5000)
		want := bytes.Clone(data)
		if err := h.PutPiece(ctx, key(3), data); err != nil {
			t.Fatal(err)
		}
		clear(data)
		got, err := h.GetPiece(ctx, key(3))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("GetPiece after the caller reused PutPiece's slice returned other bytes")
		}
		clear(got)
		checkPiece(t, h, key(3), want)
	})
	t.Run("DeleteAndUnknown", func(t *testing.T) {
		h := newHolder(t)
		ctx := testContext(t)
		if _, err := h.GetPiece(ctx, key(9)); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("GetPiece(unknown): %v, want ErrNotFound", err)
		}
		if ok, err := h.HasPiece(ctx, key(9)); err != nil || ok {
			t.Fatalf("HasPiece(unknown) = %v, %v; want false, nil", ok, err)
		}
		if err := h.DeletePiece(ctx, key(9)); err != nil {
			t.Fatalf("DeletePiece(unknown): %v", err)
		}
		data := Random(4, 4096)
		if err := h.PutPiece(ctx, key(4), data); err != nil {
			t.Fatal(err)
		}
		if err := h.DeletePiece(ctx, key(4)); err != nil {
			t.Fatal(err)
		}
		if _, err := h.GetPiece(ctx, key(4)); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("GetPiece after DeletePiece: %v, want ErrNotFound", err)
		}
		if ok, err := h.HasPiece(ctx, key(4)); err != nil || ok {
			t.Fatalf("HasPiece after DeletePiece = %v, %v; want false", ok, err)
		}
		// A deleted key can be put again, with other bytes.
		other := Random(5, 4096)
		if err := h.PutPiece(ctx, key(4), other); err != nil {
			t.Fatal(err)
		}
		checkPiece(t, h, key(4), other)
	})
	t.Run("Concurrent", func(t *testing.T) {
		h := newHolder(t)
		ctx := testContext(t)
		const workers, ops = 8, 32
		var wg sync.WaitGroup
		errc := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range ops {
					k := w*ops + i
					data := Random(uint64(k), 500+k)
					if err := h.PutPiece(ctx, key(k), data); err != nil {
						errc <- err
						return
					}
					got, err := h.GetPiece(ctx, key(k))
					if err != nil {
						errc <- err
						return
					}
					if !bytes.Equal(got, data) {
						errc <- fmt.Errorf("piece %d: other bytes read back", k)
						return
					}
					if i%4 == 0 {
						if err := h.Sync(ctx); err != nil {
							errc <- err
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
	})
	t.Run("Sync", func(t *testing.T) {
		h := newHolder(t)
		ctx := testContext(t)
		if err := h.Sync(ctx); err != nil {
			t.Fatalf("Sync of an empty holder: %v", err)
		}
		data := Random(6, 3000)
		if err := h.PutPiece(ctx, key(6), data); err != nil {
			t.Fatal(err)
		}
		if err := h.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		checkPiece(t, h, key(6), data)
	})
	t.Run("TooLarge", func(t *testing.T) {
		h := newHolder(t)
		ctx := testContext(t)
		data := Random(7, blocks.MaxPiece+1)
		err := h.PutPiece(ctx, key(7), data)
		if errors.Is(err, blocks.ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("PutPiece(MaxPiece+1 bytes): %v, want nil or ErrTooLarge", err)
		}
		checkPiece(t, h, key(7), data)
	})
	t.Run("Canceled", func(t *testing.T) {
		h := newHolder(t)
		data := Random(8, 2000)
		if err := h.PutPiece(testContext(t), key(8), data); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := h.PutPiece(ctx, key(80), data); !errors.Is(err, context.Canceled) {
			t.Errorf("PutPiece with a canceled context: %v, want context.Canceled", err)
		}
		if _, err := h.GetPiece(ctx, key(8)); !errors.Is(err, context.Canceled) {
			t.Errorf("GetPiece with a canceled context: %v, want context.Canceled", err)
		}
		if err := h.Sync(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Sync with a canceled context: %v, want context.Canceled", err)
		}
		checkPiece(t, h, key(8), data)
	})
	t.Run("Walk", func(t *testing.T) {
		h := newHolder(t)
		w, ok := h.(blocks.Walker)
		if !ok {
			t.Skip("holder does not implement blocks.Walker")
		}
		ctx := testContext(t)
		want := map[blocks.Addr]bool{}
		for i := range 20 {
			if err := h.PutPiece(ctx, key(i), Random(uint64(i), 100)); err != nil {
				t.Fatal(err)
			}
			want[key(i)] = true
		}
		if err := h.DeletePiece(ctx, key(0)); err != nil {
			t.Fatal(err)
		}
		delete(want, key(0))
		seen := map[blocks.Addr]int{}
		if err := w.Walk(ctx, func(k blocks.Addr) error { seen[k]++; return nil }); err != nil {
			t.Fatal(err)
		}
		for k := range want {
			if seen[k] != 1 {
				t.Errorf("Walk saw key %v %d times, want once", k, seen[k])
			}
		}
		for k := range seen {
			if !want[k] {
				t.Errorf("Walk saw key %v, which is not held", k)
			}
		}
		stop := errors.New("stop")
		calls := 0
		err := w.Walk(ctx, func(blocks.Addr) error { calls++; return stop })
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("Walk whose fn fails: %v after %d calls, want the fn's error after 1", err, calls)
		}
	})
}

func checkPiece(t testing.TB, h blocks.Holder, k blocks.Addr, want []byte) {
	t.Helper()
	got, err := h.GetPiece(testContext(t), k)
	if err != nil {
		t.Fatalf("GetPiece(%v): %v", k, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("GetPiece(%v) returned %d other bytes, want %d", k, len(got), len(want))
	}
}

// JournalHolder is a holder that keeps journals, as RunJournal needs. (An
// alias, so that a func returning interface{ blocks.Journal; blocks.Holder }
// can be passed to RunJournal as is.)
type JournalHolder = interface {
	blocks.Journal
	blocks.Holder
}

type record struct {
	epoch blocks.Epoch
	seq   uint64
	rec   string
}

func replay(t testing.TB, j blocks.Journal, log blocks.ID, from uint64) []record {
	t.Helper()
	var out []record
	err := j.Replay(testContext(t), log, from, func(e blocks.Epoch, seq uint64, rec []byte) error {
		out = append(out, record{e, seq, string(rec)})
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(from %d): %v", from, err)
	}
	return out
}

func appendAll(t testing.TB, j blocks.Journal, log blocks.ID, epoch blocks.Epoch, from, to uint64) []record {
	t.Helper()
	var out []record
	for seq := from; seq <= to; seq++ {
		rec := fmt.Sprintf("record %d of epoch %d", seq, epoch)
		if err := j.Append(testContext(t), log, epoch, seq, []byte(rec)); err != nil {
			t.Fatalf("Append(epoch %d, seq %d): %v", epoch, seq, err)
		}
		out = append(out, record{epoch, seq, rec})
	}
	return out
}

func sameRecords(t testing.TB, what string, got, want []record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d records %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: record %d = %v, want %v", what, i, got[i], want[i])
		}
	}
}

// RunJournal runs the blocks.Journal conformance suite: ordering, fencing by
// Seal, higher epoch wins, Trim. newJournal returns a fresh, empty holder.
// A journal may accept records above blocks.MaxRecord or refuse them with
// blocks.ErrTooLarge.
func RunJournal(t *testing.T, newJournal func(t testing.TB) JournalHolder) {
	logA, logB := blocks.NameID("blockstest/a"), blocks.NameID("blockstest/b")
	t.Run("AppendReplay", func(t *testing.T) {
		j := newJournal(t)
		want := appendAll(t, j, logA, 1, 1, 10)
		sameRecords(t, "Replay from 1", replay(t, j, logA, 1), want)
		sameRecords(t, "Replay from 0", replay(t, j, logA, 0), want)
		sameRecords(t, "Replay from 5", replay(t, j, logA, 5), want[4:])
		sameRecords(t, "Replay from 11", replay(t, j, logA, 11), nil)
		sameRecords(t, "Replay of another log", replay(t, j, logB, 1), nil)
		if err := j.Sync(testContext(t)); err != nil {
			t.Fatal(err)
		}
		sameRecords(t, "Replay after Sync", replay(t, j, logA, 1), want)
	})
	t.Run("Logs", func(t *testing.T) {
		j := newJournal(t)
		a := appendAll(t, j, logA, 1, 1, 5)
		b := appendAll(t, j, logB, 7, 1, 3)
		sameRecords(t, "log B", replay(t, j, logB, 1), b)
		if err := j.Seal(testContext(t), logB, 9); err != nil {
			t.Fatal(err)
		}
		a = append(a, appendAll(t, j, logA, 1, 6, 6)...) // logA is not sealed
		if err := j.Trim(testContext(t), logB, math.MaxUint64); err != nil {
			t.Fatal(err)
		}
		sameRecords(t, "log A", replay(t, j, logA, 1), a)
		sameRecords(t, "log B after Trim(MaxUint64)", replay(t, j, logB, 1), nil)
	})
	t.Run("EmptyRecord", func(t *testing.T) {
		j := newJournal(t)
		if err := j.Append(testContext(t), logA, 1, 1, nil); err != nil {
			t.Fatal(err)
		}
		sameRecords(t, "Replay", replay(t, j, logA, 1), []record{{1, 1, ""}})
	})
	t.Run("Fencing", func(t *testing.T) {
		j := newJournal(t)
		ctx := testContext(t)
		want := appendAll(t, j, logA, 1, 1, 3)
		if err := j.Seal(ctx, logA, 2); err != nil {
			t.Fatal(err)
		}
		if err := j.Append(ctx, logA, 1, 4, []byte("stale")); !errors.Is(err, blocks.ErrFenced) {
			t.Fatalf("Append from a sealed epoch: %v, want ErrFenced", err)
		}
		want = append(want, appendAll(t, j, logA, 2, 4, 5)...)
		if err := j.Seal(ctx, logA, 1); err != nil { // lower: a no-op
			t.Fatalf("Seal with a lower epoch: %v", err)
		}
		if err := j.Append(ctx, logA, 1, 6, []byte("stale")); !errors.Is(err, blocks.ErrFenced) {
			t.Fatalf("Append from epoch 1 after Seal(2), Seal(1): %v, want ErrFenced", err)
		}
		want = append(want, appendAll(t, j, logA, 3, 6, 6)...) // a higher epoch is not fenced
		if err := j.Seal(ctx, logA, 4); err != nil {
			t.Fatal(err)
		}
		if err := j.Append(ctx, logA, 3, 7, []byte("stale")); !errors.Is(err, blocks.ErrFenced) {
			t.Fatalf("Append from epoch 3 after Seal(4): %v, want ErrFenced", err)
		}
		if err := j.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		sameRecords(t, "Replay", replay(t, j, logA, 1), want)
		if err := j.Append(ctx, logB, 1, 1, []byte("other log")); err != nil {
			t.Fatalf("Append to another log: %v (a seal is per log)", err)
		}
	})
	t.Run("HigherEpochWins", func(t *testing.T) {
		j := newJournal(t)
		ctx := testContext(t)
		want := appendAll(t, j, logA, 1, 1, 5)
		// A new writer (epoch 2) rewrites seq 4 and 5 without sealing first.
		want = append(want[:3], appendAll(t, j, logA, 2, 4, 6)...)
		sameRecords(t, "Replay", replay(t, j, logA, 1), want)
		// A late append from epoch 1 at seq 5 does not replace epoch 2's.
		if err := j.Append(ctx, logA, 1, 5, []byte("late")); err != nil && !errors.Is(err, blocks.ErrFenced) {
			t.Fatalf("late Append: %v, want nil or ErrFenced", err)
		}
		sameRecords(t, "Replay after a late append", replay(t, j, logA, 1), want)
	})
	t.Run("Trim", func(t *testing.T) {
		j := newJournal(t)
		ctx := testContext(t)
		want := appendAll(t, j, logA, 1, 1, 10)
		if err := j.Trim(ctx, logA, 5); err != nil {
			t.Fatal(err)
		}
		sameRecords(t, "Replay after Trim(5)", replay(t, j, logA, 1), want[4:])
		if err := j.Trim(ctx, logA, 3); err != nil { // already trimmed
			t.Fatal(err)
		}
		sameRecords(t, "Replay after Trim(3)", replay(t, j, logA, 0), want[4:])
		want = append(want, appendAll(t, j, logA, 1, 11, 12)...)
		sameRecords(t, "Replay after more appends", replay(t, j, logA, 7), want[6:])
		if err := j.Seal(ctx, logA, 5); err != nil {
			t.Fatal(err)
		}
		if err := j.Trim(ctx, logA, math.MaxUint64); err != nil {
			t.Fatal(err)
		}
		sameRecords(t, "Replay after Trim(MaxUint64)", replay(t, j, logA, 0), nil)
		// The seal went with the log.
		want = appendAll(t, j, logA, 1, 1, 2)
		sameRecords(t, "Replay of the new log", replay(t, j, logA, 1), want)
		if err := j.Trim(ctx, logB, 10); err != nil {
			t.Fatalf("Trim of an unknown log: %v", err)
		}
	})
	t.Run("ReplayError", func(t *testing.T) {
		j := newJournal(t)
		appendAll(t, j, logA, 1, 1, 5)
		stop := errors.New("stop")
		calls := 0
		err := j.Replay(testContext(t), logA, 1, func(blocks.Epoch, uint64, []byte) error {
			calls++
			if calls == 2 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || calls != 2 {
			t.Fatalf("Replay whose fn fails at the 2nd record: %v after %d calls, want stop after 2", err, calls)
		}
	})
	t.Run("Sizes", func(t *testing.T) {
		j := newJournal(t)
		ctx := testContext(t)
		big := Random(1, blocks.MaxRecord)
		if err := j.Append(ctx, logA, 1, 1, big); err != nil {
			t.Fatalf("Append(MaxRecord bytes): %v", err)
		}
		err := j.Append(ctx, logA, 1, 2, Random(2, blocks.MaxRecord+1))
		if err != nil && !errors.Is(err, blocks.ErrTooLarge) {
			t.Fatalf("Append(MaxRecord+1 bytes): %v, want nil or ErrTooLarge", err)
		}
		n := 0
		err = j.Replay(ctx, logA, 1, func(_ blocks.Epoch, seq uint64, rec []byte) error {
			n++
			if seq == 1 && !bytes.Equal(rec, big) {
				t.Errorf("record 1 read back with other bytes")
			}
			return nil
		})
		if err != nil || n == 0 {
			t.Fatalf("Replay: %v, %d records", err, n)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		j := newJournal(t)
		ctx := testContext(t)
		const logs, recs = 6, 40
		var wg sync.WaitGroup
		errc := make(chan error, logs)
		for l := range logs {
			wg.Go(func() {
				id := blocks.NameID(fmt.Sprintf("blockstest/concurrent/%d", l))
				for seq := uint64(1); seq <= recs; seq++ {
					if err := j.Append(ctx, id, 1, seq, fmt.Appendf(nil, "%d/%d", l, seq)); err != nil {
						errc <- err
						return
					}
					if seq%10 == 0 {
						if err := j.Sync(ctx); err != nil {
							errc <- err
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		for l := range logs {
			id := blocks.NameID(fmt.Sprintf("blockstest/concurrent/%d", l))
			got := replay(t, j, id, 1)
			if len(got) != recs {
				t.Fatalf("log %d: %d records, want %d", l, len(got), recs)
			}
			for i, r := range got {
				if r.seq != uint64(i+1) || r.rec != fmt.Sprintf("%d/%d", l, i+1) {
					t.Fatalf("log %d: record %d = %v", l, i, r)
				}
			}
		}
	})
	t.Run("Canceled", func(t *testing.T) {
		j := newJournal(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := j.Append(ctx, logA, 1, 1, []byte("x")); !errors.Is(err, context.Canceled) {
			t.Errorf("Append with a canceled context: %v, want context.Canceled", err)
		}
	})
}
