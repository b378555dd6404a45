package volume

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/policies"
)

// testCarry is a FLUSH's carry in the tests: the pieces Put under it.
type testCarry struct {
	mu   sync.Mutex
	held map[blocks.Addr][]byte
}

type testCarryKey struct{}

// carryStore is casStore whose Put, under a carry, holds the block back
// (as the cluster's slots hold pieces for the journal's nodes).
type carryStore struct{ casStore }

func (s carryStore) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	if cr, ok := ctx.Value(testCarryKey{}).(*testCarry); ok {
		a := blocks.Sum(data)
		cr.mu.Lock()
		cr.held[a] = bytes.Clone(data)
		cr.mu.Unlock()
		return a, nil
	}
	return s.casStore.Put(ctx, data)
}

// carryJournal is the memory holder as a journal with a FlushCarrier:
// finish stores the held blocks, unless fail is set: then it loses them
// and fails.
type carryJournal struct {
	*memory.Store
	mu       sync.Mutex
	fail     bool
	carries  int
	finished int // blocks stored by finish
}

var errCarry = errors.New("test: carried pieces lost")

func (j *carryJournal) CarryFlush(ctx context.Context) (context.Context, func(context.Context) error) {
	cr := &testCarry{held: map[blocks.Addr][]byte{}}
	j.mu.Lock()
	j.carries++
	j.mu.Unlock()
	return context.WithValue(ctx, testCarryKey{}, cr), func(ctx context.Context) error {
		j.mu.Lock()
		defer j.mu.Unlock()
		if j.fail {
			return errCarry
		}
		for a, d := range cr.held {
			if err := j.Store.PutPiece(ctx, a, d); err != nil {
				return err
			}
			j.finished++
		}
		return nil
	}
}

// TestFlushCarried: a small Flush runs under the journal's carry: its
// blocks go through finish, and the Flush succeeds only if finish did. A
// Flush whose finish failed leaves its chunks dirty (they read back, and
// the next Flush puts them again), so that after a crash every byte of
// the last successful Flush reads back.
func TestFlushCarried(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	j := &carryJournal{Store: e.hold}
	opts := e.options("node-a")
	opts.StoreFor = func(policies.Policy, []byte) (blocks.Store, error) { return carryStore{casStore{e.hold}}, nil }
	opts.Journals = func(blocks.ID, policies.Policy) ([]JournalHolder, error) { return []JournalHolder{j}, nil }
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	want := make([]byte, 1<<20)
	write := func(off int64, b byte) {
		data := bytes.Repeat([]byte{b}, 6000) // two chunks
		copy(want[off:], data)
		if err := v.WriteAt(ctx, data, off); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 1)
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if j.carries != 1 || j.finished != 2 {
		t.Fatalf("one Flush of two chunks: %d carries, %d blocks stored by finish; want 1 and 2", j.carries, j.finished)
	}
	write(65536, 2)
	j.fail = true
	if err := v.Flush(ctx); !errors.Is(err, errCarry) {
		t.Fatalf("Flush whose carry failed: %v, want its error", err)
	}
	if got := readAll(t, v); !bytes.Equal(got, want) {
		t.Fatal("the chunks of a failed Flush do not read back")
	}
	j.fail = false
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if j.finished != 4 {
		t.Fatalf("the Flush after a failed one stored %d blocks through finish, want 2 more (4)", j.finished)
	}
	abandon(v)
	e.hold.Crash()
	r := mustOpen(t, e.catalog(opts), "vol", true)
	if got := readAll(t, r); !bytes.Equal(got, want) {
		t.Fatal("flushed data lost after a crash")
	}
}
