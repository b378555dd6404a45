package silo

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// segFS is an FS that hands out its segment files (".seg") wrapped by
// wrap, so that a test can watch or hold what is done to them.
type segFS struct {
	FS
	wrap func(File) File
}

func (w segFS) Create(name string) (File, error) {
	f, err := w.FS.Create(name)
	return w.wrapSeg(name, f, err)
}

func (w segFS) Open(name string) (File, error) {
	f, err := w.FS.Open(name)
	return w.wrapSeg(name, f, err)
}

func (w segFS) wrapSeg(name string, f File, err error) (File, error) {
	if err != nil || !strings.HasSuffix(name, ".seg") {
		return f, err
	}
	return w.wrap(f), nil
}

// writeLog is an FS that records the writes to segment files.
type writeLog struct {
	segFS
	mu     sync.Mutex
	writes [][2]int64 // offset, length
}

// newWriteLog returns a writeLog over fsys.
func newWriteLog(fsys FS) *writeLog {
	l := &writeLog{}
	l.segFS = segFS{fsys, func(f File) File { return loggedFile{f, l} }}
	return l
}

type loggedFile struct {
	File
	l *writeLog
}

func (f loggedFile) WriteAt(p []byte, off int64) (int, error) {
	f.l.mu.Lock()
	f.l.writes = append(f.l.writes, [2]int64{off, int64(len(p))})
	f.l.mu.Unlock()
	return f.File.WriteAt(p, off)
}

// TestWritesEndOnBoundaries puts pieces that cross several writeAlign
// boundaries of the active segment: the buffers go out in writes that end
// exactly on the boundaries (a record crossing one is split between two
// writes), and every piece reads back at every stage: while buffered or in
// a flight, after Sync, after reopen.
func TestWritesEndOnBoundaries(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := newWriteLog(osFS{})
	s, err := Open(ctx, dir, Options{FS: l})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2500 // about 10 MiB: five boundaries
	size := func(i int) int { return 3000 + (i*7919)%2000 }
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, size(i))); err != nil {
			t.Fatal(err)
		}
		// Read back a piece put a little earlier: it may sit in the
		// buffer, in a flight, or in the file.
		if j := i - i%7; j >= 0 {
			got, err := s.GetPiece(ctx, keyOf(j))
			if err != nil || !bytes.Equal(got, pieceData(j, size(j))) {
				t.Fatalf("piece %d read after put %d: %v", j, i, err)
			}
		}
	}
	check := func(stage string) {
		t.Helper()
		for i := range n {
			got, err := s.GetPiece(ctx, keyOf(i))
			if err != nil || !bytes.Equal(got, pieceData(i, size(i))) {
				t.Fatalf("%s: piece %d: %v", stage, i, err)
			}
		}
	}
	check("before sync")
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	check("after sync")

	l.mu.Lock()
	ends := map[int64]bool{}
	covered := map[int64]bool{} // boundaries k whose [k, k+writeAlign) one write covers, skip included
	for _, w := range l.writes {
		ends[w[0]+w[1]] = true
		if w[1] >= writeAlign/2 && (w[0]+w[1])%writeAlign == 0 {
			covered[(w[0]+w[1])/writeAlign] = true
		}
	}
	l.mu.Unlock()
	for k := int64(1); k <= 4; k++ {
		if !ends[k*writeAlign] {
			t.Errorf("no write ends at boundary %d (%d)", k, k*writeAlign)
		}
	}
	if len(covered) < 4 {
		t.Errorf("%d large writes end on a boundary, want at least 4", len(covered))
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("after reopen")
}

// gatedLog is a writeLog whose first write ending on a writeAlign
// boundary (a full flight) waits until gate is closed; hit is closed when
// that write starts.
type gatedLog struct {
	writeLog
	once      sync.Once
	hit, gate chan struct{}
}

type gatedFile struct {
	File
	g *gatedLog
}

func (f gatedFile) WriteAt(p []byte, off int64) (int, error) {
	if (off+int64(len(p)))%writeAlign == 0 && len(p) >= writeAlign/2 && !isZero(p) {
		first := false
		f.g.once.Do(func() { first = true })
		if first {
			close(f.g.hit)
			<-f.g.gate
		}
	}
	f.g.mu.Lock()
	f.g.writes = append(f.g.writes, [2]int64{off, int64(len(p))})
	f.g.mu.Unlock()
	return f.File.WriteAt(p, off)
}

// openGated opens a silo in a fresh directory over a gatedLog; the silo
// is closed when the test ends.
func openGated(t *testing.T) (*Silo, *gatedLog) {
	t.Helper()
	g := &gatedLog{hit: make(chan struct{}), gate: make(chan struct{})}
	g.segFS = segFS{osFS{}, func(f File) File { return gatedFile{f, g} }}
	s, err := Open(context.Background(), t.TempDir(), Options{FS: g})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, g
}

// TestSyncWhileAFlightIsInTheAir: a Sync that writes the buffer out while
// the flight before it is still being written (it holds the head of the
// record that crosses the boundary) leaves that record readable: a reader
// must never find half of it in the file.
func TestSyncWhileAFlightIsInTheAir(t *testing.T) {
	ctx := context.Background()
	s, g := openGated(t)
	size := func(i int) int { return 3000 + (i*7919)%2000 }
	n := 0
	for {
		if err := s.PutPiece(ctx, keyOf(n), pieceData(n, size(n))); err != nil {
			t.Fatal(err)
		}
		n++
		select {
		case <-g.hit:
		default:
			continue
		}
		break
	}
	// The flight to the first boundary is stuck; a few more pieces, then a
	// Sync writes the buffer (the crossing record whole) and waits for the
	// flight.
	for range 5 {
		if err := s.PutPiece(ctx, keyOf(n), pieceData(n, size(n))); err != nil {
			t.Fatal(err)
		}
		n++
	}
	g.mu.Lock()
	before := len(g.writes)
	g.mu.Unlock()
	synced := make(chan error, 1)
	go func() { synced <- s.Sync(ctx) }()
	for {
		g.mu.Lock()
		wrote := len(g.writes) > before
		g.mu.Unlock()
		if wrote {
			break
		}
		select {
		case err := <-synced:
			t.Fatalf("Sync returned (%v) while a flight was stuck", err)
		default:
		}
		runtime.Gosched()
	}
	for i := range n {
		got, err := s.GetPiece(ctx, keyOf(i))
		if err != nil || !bytes.Equal(got, pieceData(i, size(i))) {
			close(g.gate)
			t.Fatalf("piece %d of %d, read while the flight is stuck: %v", i, n, err)
		}
	}
	close(g.gate)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
}

// TestReadersPassAFullFlightQueue: while the flight writer is stuck and
// the queue is full, a writer of pieces waits, but not with the silo's
// lock held: a read goes on.
func TestReadersPassAFullFlightQueue(t *testing.T) {
	ctx := context.Background()
	s, g := openGated(t)
	open := true
	defer func() {
		if open {
			close(g.gate)
		}
	}()
	data := pieceData(1, 4000)
	var puts atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := s.PutPiece(ctx, keyOf(i), data); err != nil {
				done <- err
				return
			}
			puts.Add(1)
		}
	}()
	<-g.hit
	// Wait until the writer stops making progress: the queue is full.
	for last := int64(-1); ; {
		time.Sleep(100 * time.Millisecond)
		n := puts.Load()
		if n == last {
			break
		}
		last = n
	}
	read := make(chan error, 1)
	go func() {
		_, err := s.GetPiece(ctx, keyOf(0))
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil {
			t.Fatalf("read while the flight queue is full: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read waited 5s behind a writer stuck on the flight queue")
	}
	close(stop)
	close(g.gate)
	open = false
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
