package silo

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"cairn/blocks"
)

var _ blocks.PiecesGetter = (*Silo)(nil)

// Batched reads. A large read of a volume asks for the pieces of many
// neighbouring chunks; they were written together, so their records lie
// close together in one segment (in the order the parallel push wrote
// them, not the chunks' order). GetPieces sorts the records by place and
// reads each run of records lying within readGap bytes of each other with
// one pread, instead of one pread per record (a 1 MiB read of 4 KiB chunks
// was 256 preads, half of its CPU).

// readGap is the largest gap between two records read with one pread (the
// gap's bytes are read and dropped); readSpan bounds one pread.
const (
	readGap  = 32 << 10
	readSpan = 8 << 20
)

// GetPieces implements blocks.PiecesGetter. Every record is verified as
// GetPiece verifies it; a key whose record is still buffered, missing,
// known bad or fails its check is read by GetPieceInto, so its error (or
// bytes) are exactly GetPiece's.
func (s *Silo) GetPieces(ctx context.Context, keys []blocks.Addr, buf *[]byte) ([][]byte, []error) {
	out := make([][]byte, len(keys))
	errs := make([]error, len(keys))
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return out, errs
	}
	sc := manyScratches.Get().(*manyScratch)
	defer sc.release()
	ws := sc.ws[:0]
	var slow []int
	s.mu.RLock()
	if err := s.checkOpen(); err != nil {
		s.mu.RUnlock()
		sc.ws = ws
		for i := range errs {
			errs[i] = err
		}
		return out, errs
	}
	for i, k := range keys {
		e, ok := s.index.get(k)
		var seg *segment
		if ok {
			seg = s.segs[e.seg]
		}
		if !ok || e.bad || seg == nil || s.copyBufferedLocked(seg, e.loc, nil) {
			slow = append(slow, i)
			continue
		}
		ws = append(ws, want{place: uint64(seg.id)<<32 | uint64(e.off), seg: seg, l: e.loc, i: int32(i)})
	}
	ws = sc.sortByPlace(ws)
	// Runs of records close together in one segment: [from, to) of ws,
	// read from the file at [start, end) into *buf at at.
	type run struct {
		from, to   int
		start, end int64
		at         int64
	}
	runs := make([]run, 0, 8)
	var total int64
	for j := range ws {
		w := &ws[j]
		off, end := int64(w.l.off), int64(w.l.off)+w.l.size()
		if n := len(runs); n > 0 {
			r := &runs[n-1]
			if ws[r.from].seg == w.seg && off >= r.end && off-r.end <= readGap && end-r.start <= readSpan {
				total += end - r.end
				r.end, r.to = end, j+1
				w.at = r.at + off - r.start
				continue
			}
		}
		runs = append(runs, run{from: j, to: j + 1, start: off, end: end, at: total})
		w.at = total
		total += end - off
	}
	if int64(cap(*buf)) < total {
		*buf = make([]byte, total)
	}
	b := (*buf)[:total]
	// Each segment read stays open until its reads are done. Its lock is
	// taken once (a second RLock could wait behind a Close that waits for
	// the first); ws is sorted by segment, so its runs are consecutive.
	var held []*segment
	for _, r := range runs {
		if seg := ws[r.from].seg; len(held) == 0 || held[len(held)-1] != seg {
			seg.mu.RLock()
			held = append(held, seg)
		}
	}
	s.mu.RUnlock()
	for k, r := range runs {
		seg := ws[r.from].seg
		_, err := seg.f.ReadAt(b[r.at:r.at+r.end-r.start], r.start)
		if k == len(runs)-1 || ws[runs[k+1].from].seg != seg {
			seg.mu.RUnlock()
		}
		if err != nil {
			for _, w := range ws[r.from:r.to] {
				slow = append(slow, int(w.i)) // GetPieceInto reports the error
			}
			continue
		}
		for _, w := range ws[r.from:r.to] {
			rec := b[w.at : w.at+w.l.size()]
			var h header
			if checkFetched(w.seg, w.l, rec, &h) != nil || h.typ != recPiece || h.key != keys[w.i] {
				slow = append(slow, int(w.i)) // GetPieceInto marks it bad and reports it
				continue
			}
			out[w.i] = rec[hdrSize:]
		}
	}
	for _, i := range slow {
		out[i], errs[i] = s.GetPieceInto(ctx, keys[i], nil)
	}
	return out, errs
}

// want is a record GetPieces reads.
type want struct {
	place uint64   // segment id, then offset in it: the sort key
	seg   *segment // the segment holding the record
	at    int64    // where the record lands in the caller's buffer
	l     loc
	i     int32 // the key's index
}

// manyScratch is the scratch space of one GetPieces, pooled.
type manyScratch struct {
	ws, sorted []want
	order      []uint64
}

var manyScratches = sync.Pool{New: func() any { return new(manyScratch) }}

// release drops the scratch's references to segments and pools it.
func (sc *manyScratch) release() {
	clear(sc.ws[:cap(sc.ws)])
	clear(sc.sorted[:cap(sc.sorted)])
	sc.ws, sc.sorted = sc.ws[:0], sc.sorted[:0]
	if cap(sc.ws) > maxKeptWants {
		sc.ws, sc.sorted, sc.order = nil, nil, nil
	}
	manyScratches.Put(sc)
}

// maxKeptWants bounds the wants a pooled manyScratch keeps room for.
const maxKeptWants = 1 << 14

// sortByPlace returns ws sorted by place: ws itself or sc's other slice.
// The records of chunks pushed together lie together, in the order the
// parallel push wrote them: often sorted already, else nearly, within a
// small span of one segment. Then each record's place relative to the
// first and its index pack into one integer, and sorting integers costs a
// fraction of sorting the records by a comparison function.
func (sc *manyScratch) sortByPlace(ws []want) []want {
	byPlace := func(a, b want) int { return cmp.Compare(a.place, b.place) }
	if slices.IsSortedFunc(ws, byPlace) {
		sc.ws = ws
		return ws
	}
	lo, hi := ws[0].place, ws[0].place
	for _, w := range ws {
		lo, hi = min(lo, w.place), max(hi, w.place)
	}
	const idxBits = 16
	if len(ws) > 1<<idxBits || hi-lo >= 1<<(64-idxBits) {
		slices.SortFunc(ws, byPlace)
		sc.ws = ws
		return ws
	}
	order := sc.order[:0]
	for j, w := range ws {
		order = append(order, (w.place-lo)<<idxBits|uint64(j))
	}
	slices.Sort(order)
	sorted := sc.sorted[:0]
	for _, o := range order {
		sorted = append(sorted, ws[o&(1<<idxBits-1)])
	}
	sc.order = order
	// Keep both slices for the next call; sorted is the one in use.
	sc.ws, sc.sorted = sorted, ws
	return sorted
}
