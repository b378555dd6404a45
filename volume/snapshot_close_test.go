package volume

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestSnapshotWhileClosing snapshots a volume caught between the start and
// the end of its Close (its last user let go as the snapshot began): the
// snapshot waits for the Close and then holds every flushed write, instead
// of failing with ErrClosed.
func TestSnapshotWhileClosing(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c := e.catalog(e.options("node-a"))
	if _, err := c.Create(ctx, "vol", 64<<10, testPolicy(4<<10)); err != nil {
		t.Fatal(err)
	}
	v := mustOpen(t, c, "vol", false)
	want := bytes.Repeat([]byte{0x5c}, 8<<10)
	if err := v.WriteAt(ctx, want, 4<<10); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The first half of Close: the volume refuses calls but is still open.
	v.life.Lock()
	v.closed.Store(true)
	v.life.Unlock()
	done := make(chan error, 1)
	go func() { done <- c.Snapshot(ctx, "vol", "snap") }()
	select {
	case err := <-done:
		t.Fatalf("Snapshot returned %v before the Close finished", err)
	case <-time.After(50 * time.Millisecond):
	}
	// The second half, as Close does it.
	close(v.stop)
	<-v.done
	v.flushMu.Lock()
	err := v.checkpointLocked(ctx, true)
	v.flushMu.Unlock()
	c.forget(v.id, v)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Snapshot still waiting a minute after the Close")
	}
	s := mustOpen(t, c, "snap", true)
	got := make([]byte, len(want))
	if err := s.ReadAt(ctx, got, 4<<10); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("snapshot read: %v, equal %v; want the flushed data", err, bytes.Equal(got, want))
	}
}
