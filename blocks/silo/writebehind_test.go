package silo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"testing"

	"cairn/blocks"
)

// startLog is an FS whose segment files record each StartWrite, with the
// file's bytes over that range at the time (what the disk was asked to
// write).
type startLog struct {
	segFS
	mu     sync.Mutex
	starts []startCall
}

func newStartLog(fsys FS) *startLog {
	l := &startLog{}
	l.segFS = segFS{fsys, func(f File) File { return startFile{f, l} }}
	return l
}

type startCall struct {
	off, n int64
	data   []byte
}

type startFile struct {
	File
	l *startLog
}

func (f startFile) StartWrite(off, n int64) error {
	b := make([]byte, n)
	if _, err := f.File.ReadAt(b, off); err != nil {
		return err
	}
	f.l.mu.Lock()
	f.l.starts = append(f.l.starts, startCall{off, n, b})
	f.l.mu.Unlock()
	if ws, ok := f.File.(writeStarter); ok {
		return ws.StartWrite(off, n)
	}
	return nil
}

func (l *startLog) calls() []startCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]startCall(nil), l.starts...)
}

// TestWriteBehind: WriteBehind writes the buffered records to the segment
// file and asks the disk to write exactly what no sync has covered yet,
// the new records included; a Sync after it leaves nothing behind (the
// pieces and the journal record read back after a reopen); after Close it
// reports ErrClosed.
func TestWriteBehind(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := newStartLog(osFS{})
	s, err := Open(ctx, dir, Options{FS: l, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	segFile := func() []byte { // the active segment's bytes, read past the silo
		t.Helper()
		s.mu.RLock()
		name := s.active.name
		s.mu.RUnlock()
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if err := s.WriteBehind(); err != nil { // nothing written yet
		t.Fatalf("WriteBehind on an empty silo: %v", err)
	}
	if len(l.calls()) != 0 {
		t.Fatalf("WriteBehind with nothing written started %d writes", len(l.calls()))
	}
	rec := []byte("journal record: chunk 7 -> some address")
	for round := range 3 {
		p := pieceData(round, 4096)
		if err := s.PutPiece(ctx, keyOf(round), p); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctx, logOf(0), 1, uint64(round+1), rec); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(segFile(), p) {
			t.Fatalf("round %d: the piece is in the file before WriteBehind: the test needs it buffered", round)
		}
		before := len(l.calls())
		if err := s.WriteBehind(); err != nil {
			t.Fatalf("round %d: WriteBehind: %v", round, err)
		}
		if !bytes.Contains(segFile(), p) {
			t.Fatalf("round %d: WriteBehind left the piece out of the file", round)
		}
		calls := l.calls()
		if len(calls) != before+1 {
			t.Fatalf("round %d: %d StartWrite calls, want 1", round, len(calls)-before)
		}
		c := calls[len(calls)-1]
		s.mu.RLock()
		synced, size := s.active.synced, s.active.size
		s.mu.RUnlock()
		if c.off != synced || c.off+c.n != size {
			t.Fatalf("round %d: StartWrite [%d, %d), want the unsynced tail [%d, %d)", round, c.off, c.off+c.n, synced, size)
		}
		if !bytes.Contains(c.data, p) || !bytes.Contains(c.data, rec) {
			t.Fatalf("round %d: the range the disk was asked to write lacks the piece or the record", round)
		}
		if round < 2 {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBehind(); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("WriteBehind after Close: %v, want ErrClosed", err)
	}
	s = openT(t, dir, Options{})
	for round := range 3 {
		mustGet(t, s, keyOf(round), pieceData(round, 4096))
	}
	if got := replayAll(t, s, logOf(0), 1); len(got) != 3 {
		t.Fatalf("replayed %d journal records, want 3", len(got))
	}
}
