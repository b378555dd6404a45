package silo

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// writeLog is an FS over the real one that records the writes to segment
// files (offset and length, per file, in order). Its files keep the real
// ones' optional capabilities (fallocate, split reads).
type writeLog struct {
	osFS
	mu     sync.Mutex
	writes map[string][][2]int64
}

type loggedFile struct {
	*osFile
	log *writeLog
}

func (w *writeLog) wrap(f File, err error) (File, error) {
	if err != nil {
		return nil, err
	}
	return loggedFile{f.(*osFile), w}, nil
}

func (w *writeLog) Open(name string) (File, error)   { return w.wrap(w.osFS.Open(name)) }
func (w *writeLog) Create(name string) (File, error) { return w.wrap(w.osFS.Create(name)) }

func (f loggedFile) WriteAt(p []byte, off int64) (int, error) {
	if strings.HasSuffix(f.Name(), ".seg") {
		f.log.mu.Lock()
		f.log.writes[f.Name()] = append(f.log.writes[f.Name()], [2]int64{off, int64(len(p))})
		f.log.mu.Unlock()
	}
	return f.osFile.WriteAt(p, off)
}

// TestFlightsEndOnBoundaries: buffered records go to the segment files in
// writes that end on writeBufSize boundaries (so that the page cache holds
// them in large folios, see launchLocked), while reads during the writes,
// from the buffer, from flights and from the file, return every piece
// exactly.
func TestFlightsEndOnBoundaries(t *testing.T) {
	ctx := context.Background()
	fsys := &writeLog{writes: map[string][][2]int64{}}
	const segSize = 8 << 20
	s := openT(t, t.TempDir(), Options{FS: fsys, SegmentSize: segSize})
	rnd := rand.New(rand.NewPCG(5, 5))
	const n = 6000 // ~24 MiB: three segments
	sizes := make([]int, n)
	for i := range n {
		sizes[i] = 3000 + rnd.IntN(3000)
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, sizes[i])); err != nil {
			t.Fatal(err)
		}
		if j := rnd.IntN(i + 1); i%7 == 0 {
			got, err := s.GetPieceInto(ctx, keyOf(j), make([]byte, 0, 8192))
			if err != nil || !bytes.Equal(got, pieceData(j, sizes[j])) {
				t.Fatalf("piece %d read while writing piece %d: %v", j, i, err)
			}
		}
	}
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		mustGet(t, s, keyOf(i), pieceData(i, sizes[i]))
	}
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	big := 0
	for name, ws := range fsys.writes {
		var last int64 // the end of the file's last write (a Sync's, or the seal's)
		for _, w := range ws {
			last = max(last, w[0]+w[1])
		}
		for k, w := range ws {
			if w[1] < writeBufSize/4 || w[0]+w[1] == last || w[0]+w[1] > segSize-writeBufSize {
				continue // preallocation, marks, the last writes (sync, seal)
			}
			big++
			if end := w[0] + w[1]; end%writeBufSize != 0 {
				t.Fatalf("%s: write %d of [%d, +%d) ends off a %d boundary (all: %v)", name, k, w[0], w[1], writeBufSize, ws)
			}
		}
	}
	if big < 50 {
		t.Fatalf("only %d buffer-sized writes recorded", big)
	}
}
