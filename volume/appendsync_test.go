package volume

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/policies"
)

// appendSyncJournal is a journal holder with AppendSync: Append then Sync
// of its memory store (whose Crash drops what no Sync covered).
type appendSyncJournal struct {
	*memory.Store
	appendSyncs atomic.Int64
}

func (j *appendSyncJournal) AppendSync(ctx context.Context, log blocks.ID, e blocks.Epoch, seq uint64, rec []byte) error {
	j.appendSyncs.Add(1)
	if err := j.Store.Append(ctx, log, e, seq, rec); err != nil {
		return err
	}
	return j.Store.Sync(ctx)
}

// TestFlushAppendSync: a Flush appends its last record with AppendSync to
// the journal holders that have it, does not sync those again, still
// syncs the store and the other journal holders, and what it flushed
// survives a crash of every holder.
func TestFlushAppendSync(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	js := []*appendSyncJournal{{Store: memory.New(0)}, {Store: memory.New(0)}}
	plain := memory.New(0)
	opts := e.options("node-a")
	opts.Journals = func(blocks.ID, policies.Policy) ([]JournalHolder, error) {
		return []JournalHolder{js[0], plain, js[1]}, nil
	}
	c := e.catalog(opts)
	if _, err := c.Create(ctx, "vol", 1<<20, testPolicy(4096)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	want := make([]byte, 1<<20)
	for round := range 3 {
		off := int64(round) * 12288
		data := bytes.Repeat([]byte{byte(round + 1)}, 5000) // spans two chunks
		copy(want[off:], data)
		if err := v.WriteAt(ctx, data, off); err != nil {
			t.Fatal(err)
		}
		before := []int{js[0].Syncs(), js[1].Syncs(), plain.Syncs(), e.hold.Syncs()}
		asBefore := js[0].appendSyncs.Load()
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if n := js[0].appendSyncs.Load() - asBefore; n != 1 {
			t.Fatalf("round %d: %d AppendSyncs for one flush, want 1", round, n)
		}
		for i, j := range js {
			if n := j.Syncs() - before[i]; n != 1 {
				t.Fatalf("round %d: journal %d synced %d times (AppendSync included), want 1", round, i, n)
			}
		}
		if plain.Syncs() == before[2] || e.hold.Syncs() == before[3] {
			t.Fatalf("round %d: the store or the journal without AppendSync was not synced", round)
		}
	}
	// A power cut of every holder, and a crash of the writer.
	abandon(v)
	for _, j := range js {
		j.Crash()
	}
	plain.Crash()
	e.hold.Crash()
	c = e.catalog(opts)
	r := mustOpen(t, c, "vol", true)
	if got := readAll(t, r); !bytes.Equal(got, want) {
		t.Fatal("flushed data lost after a crash of every holder")
	}
	// The copies with AppendSync alone hold the whole journal.
	for i, j := range js {
		n := 0
		if err := j.Replay(ctx, v.id, 0, func(blocks.Epoch, uint64, []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n < 3 {
			t.Fatalf("journal %d holds %d records after the crash, want at least 3", i, n)
		}
	}
}
