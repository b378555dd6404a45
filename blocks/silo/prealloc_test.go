package silo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"cairn/blocks"
)

// TestPreallocatedSegments: the active segment is SegmentSize bytes from
// the start (records then zeros), a spare is made ahead, sealing truncates
// the zero tail, and reopening reuses the spare and keeps everything.
func TestPreallocatedSegments(t *testing.T) {
	ctx := context.Background()
	fsys := newMemFS()
	const segSize = 64 << 10
	opts := Options{SegmentSize: segSize, FS: fsys, Logger: testLogger(t)}
	s, err := Open(ctx, "/silo", opts)
	if err != nil {
		t.Fatal(err)
	}
	waitSpare(t, s)
	size := func(name string) int {
		fsys.mu.Lock() // the spare maker may be creating a file
		ino := fsys.names["/silo/"+name]
		fsys.mu.Unlock()
		if ino == nil {
			return -1
		}
		ino.mu.Lock()
		defer ino.mu.Unlock()
		return len(ino.data)
	}
	if got := size("0000000000000001.seg"); got != segSize {
		t.Fatalf("active segment is %d bytes, want %d preallocated", got, segSize)
	}
	if got := size("0000000000000002.seg"); got != segSize {
		t.Fatalf("spare segment is %d bytes, want %d", got, segSize)
	}
	const n = 40 // about 2.5 segments
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
		if i == 5 {
			mustGet(t, s, keyOf(i), pieceData(i, 4096)) // from the write buffer
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := size("0000000000000001.seg"), 16*(hdrSize+4096); got != want {
		t.Fatalf("sealed segment is %d bytes, want %d (its records only)", got, want)
	}
	waitSpare(t, s)
	st := s.Stats()
	// Segments 2 and 3 start with a sync mark (see rollLocked).
	if st.DiskBytes-st.Prealloc != n*(hdrSize+4096)+2*hdrSize || st.Prealloc < segSize {
		t.Fatalf("Stats = %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	spareName := "0000000000000004.seg"
	if size(spareName) != segSize {
		t.Fatalf("no spare %s at close", spareName)
	}
	s, err = Open(ctx, "/silo", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.spareMu.Lock()
	reused := s.spare != nil && s.spare.id == 4
	s.spareMu.Unlock()
	if !reused {
		t.Fatal("the spare was not reused at open")
	}
	for i := range n {
		mustGet(t, s, keyOf(i), pieceData(i, 4096))
	}
	if st2 := s.Stats(); st2.Pieces != n || st2.LiveBytes != st.LiveBytes {
		t.Fatalf("Stats after reopen = %+v, before %+v", st2, st)
	}
}

// TestPreallocatedTailDamage: bytes found in the zero tail of the active
// segment at open are cut and zeroed again, so that no stale record can
// follow later appends; a sealed segment left with a zero tail (a crash
// between sealing and truncating) opens cleanly and is truncated.
func TestPreallocatedTailDamage(t *testing.T) {
	ctx := context.Background()
	fsys := newMemFS()
	const segSize = 64 << 10
	opts := Options{SegmentSize: segSize, FS: fsys, Logger: testLogger(t)}
	s, err := Open(ctx, "/silo", opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 { // segment 1 sealed, segment 2 active
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, files := fsys.files()
	sealed, active := files["/silo/0000000000000001.seg"], files["/silo/0000000000000002.seg"]
	used := hdrSize + 4*(hdrSize+4096) + hdrSize // the roll's mark, 4 pieces and the sync mark Close wrote
	stale := encodeRecord(header{typ: recPiece, stamp: 1 << 40, key: keyOf(1000)}, pieceData(1000, 100))
	active.mu.Lock()
	copy(active.data[used+5000:], stale) // not where the next record goes
	active.mu.Unlock()
	sealed.mu.Lock()
	sealedLen := len(sealed.data)
	sealed.data = append(sealed.data, make([]byte, 3000)...)
	sealed.mu.Unlock()

	s, err = Open(ctx, "/silo", opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPiece(ctx, keyOf(1000)); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("a record past the zero end was indexed: %v", err)
	}
	for i := range 20 {
		mustGet(t, s, keyOf(i), pieceData(i, 4096))
	}
	sealed.mu.Lock()
	gotSealed := len(sealed.data)
	sealed.mu.Unlock()
	if gotSealed != sealedLen {
		t.Fatalf("sealed segment is %d bytes, want %d", gotSealed, sealedLen)
	}
	active.mu.Lock()
	tailZero := len(active.data) == segSize && isZero(active.data[used:])
	active.mu.Unlock()
	if !tailZero {
		t.Fatal("the active segment's tail was not zeroed again")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, "/silo", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 20 {
		mustGet(t, s, keyOf(i), pieceData(i, 4096))
	}
	if got := s.Stats().Pieces; got != 20 {
		t.Fatalf("%d pieces", got)
	}
}

// TestSyncCoalescing: a Sync with nothing new to make durable runs no
// fdatasync, and a Sync after a write runs exactly one.
func TestSyncCoalescing(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{SegmentSize: 1 << 20})
	if err := s.PutPiece(ctx, keyOf(1), []byte("one")); err != nil {
		t.Fatal(err)
	}
	before := s.syncs.Load()
	for range 3 {
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.syncs.Load() - before; got != 1 {
		t.Fatalf("%d fdatasyncs for a write and 3 Syncs, want 1", got)
	}
}

// TestGetPieceInto: the piece is read into dst's array when it has room,
// into a new slice when not, and served from the write buffer alike.
func TestGetPieceInto(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{})
	data := pieceData(7, 5000)
	if err := s.PutPiece(ctx, keyOf(7), data); err != nil {
		t.Fatal(err)
	}
	for _, synced := range []bool{false, true} {
		if synced {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []int{0, len(data), len(data) + ReadSlack, 3 * len(data)} {
			dst := make([]byte, 3, c+3)[3:]
			got, err := s.GetPieceInto(ctx, keyOf(7), dst)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("cap %d: %v, equal %v", c, err, bytes.Equal(got, data))
			}
			inPlace := cap(dst) > 0 && &got[0] == &dst[:1][0]
			if want := c >= len(data)+ReadSlack; inPlace != want {
				t.Fatalf("cap %d: read in place %v, want %v", c, inPlace, want)
			}
		}
	}
	if _, err := s.GetPieceInto(ctx, keyOf(8), make([]byte, 0, 8192)); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("absent piece: %v", err)
	}
}

// TestRotInSyncedActiveSegment: a flipped byte in a synced record of the
// active segment is rot, not a torn write: that piece reads as corrupt and
// every other synced piece, before and after it, survives the reopen (the
// records written after the sync vouch for it, and so does Close's mark).
func TestRotInSyncedActiveSegment(t *testing.T) {
	ctx := context.Background()
	fsys := newMemFS()
	opts := Options{SegmentSize: 4 << 20, FS: fsys, Logger: testLogger(t)}
	s, err := Open(ctx, "/silo", opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 4096)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			if err := s.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, files := fsys.files()
	active := files["/silo/0000000000000001.seg"]
	rotted := 37
	active.mu.Lock()
	active.data[rotted*(hdrSize+4096)+hdrSize+100] ^= 0x10
	active.mu.Unlock()

	s, err = Open(ctx, "/silo", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 100 {
		if i == rotted {
			if _, err := s.GetPiece(ctx, keyOf(i)); !errors.Is(err, blocks.ErrCorrupt) {
				t.Fatalf("the rotten piece: %v, want ErrCorrupt", err)
			}
			continue
		}
		mustGet(t, s, keyOf(i), pieceData(i, 4096))
	}
}

// TestSparesFollowTheSyncRate: on a file system with fallocate, segments
// written without frequent syncs are reserved, not zero-filled; once syncs
// turn frequent, a zero-filled spare is made and the writer rolls over to
// it early; once they stop, spares are reserved again; everything reads
// back, before and after reopening.
func TestSparesFollowTheSyncRate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if !canFallocate(t, dir) {
		// Segments are then always zero-filled; the rest of the silo's
		// tests cover that.
		t.Logf("%s cannot fallocate: only zero-filled segments to see here", dir)
	}
	const segSize = 1 << 20
	opts := Options{SegmentSize: segSize, Logger: testLogger(t)}
	s, err := Open(ctx, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	activeZeroed := func() (uint32, bool) {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.active.id, s.active.zeroed
	}
	reserve := canFallocate(t, dir)
	if id, z := activeZeroed(); id != 1 || z == reserve {
		t.Fatalf("fresh silo: active segment %d zeroed=%v, want 1 reserved (fallocate: %v)", id, z, reserve)
	}
	n := 0
	put := func() {
		t.Helper()
		if err := s.PutPiece(ctx, keyOf(n), pieceData(n, 4096)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	for range 3 * segSize / 4096 { // bulk: three segments, no syncs
		put()
	}
	if id, z := activeZeroed(); id < 3 || z == reserve {
		t.Fatalf("after bulk writes: active segment %d zeroed=%v, want >= 3 reserved (fallocate: %v)", id, z, reserve)
	}
	before, _ := activeZeroed()
	for range syncWindow + 8 { // sync-heavy: a sync per piece
		put()
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		if _, z := activeZeroed(); z || s.zeroSpare.Load() {
			break // rolled already, or about to
		}
		if time.Now().After(deadline) {
			t.Fatal("no zero-filled spare a minute after syncs turned frequent")
		}
	}
	put()
	id, z := activeZeroed()
	if !reserve {
		before = id - 1 // every segment is zero-filled: no early roll to see
	}
	if id != before+1 || !z {
		t.Fatalf("after frequent syncs: active segment %d zeroed=%v, want %d zero-filled (an early roll)", id, z, before+1)
	}
	// Bulk again, with no sync at all: after a window's worth of bytes the
	// spares are reserved again (segments of a bulk load are not
	// zero-filled first because syncs were frequent before it).
	for range (syncWindow*heavySyncBytes + 3*segSize) / 4096 {
		put()
	}
	if id, z := activeZeroed(); z == reserve {
		t.Fatalf("bulk writes after frequent syncs: active segment %d zeroed=%v, want reserved (fallocate: %v)", id, z, reserve)
	}
	for i := range n {
		mustGet(t, s, keyOf(i), pieceData(i, 4096))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(ctx, dir, opts); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range n {
		mustGet(t, s, keyOf(i), pieceData(i, 4096))
	}
}

// canFallocate reports whether the file system of dir reserves space with
// fallocate (else segments are zero-filled).
func canFallocate(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	return syscall.Fallocate(int(f.Fd()), 0, 0, 4096) == nil
}
