package silo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"cairn/blocks"
)

// scanSegment walks the records of a segment file of the given size and
// calls visit for each intact record, in file order.
//
// Header-only scans (full false: sealed segments) read the headers and
// skip the payloads; a rotten payload is found when it is read. Bytes that
// do not hold an intact header are passed to bad, and the scan resumes at
// the next offset that holds an intact header whose record fits in the
// file. The result is size.
//
// Full scans (the active segment) read every byte and verify every record
// checksum. They keep the longest valid prefix: visit sees the records
// before the first bad byte, and the result is where that prefix ends, for
// the caller to cut what follows (a torn tail). So the active segment, and
// with it each journal, always recovers to a prefix of what was written,
// never with a hole. after counts the intact records past the cut: a torn
// write leaves few or none; many suggest rot in synced data.
//
// A segment may end in zero bytes (the preallocated tail, see active.go):
// in both kinds of scan, a header of zero bytes followed by nothing but
// zeros to the end of the file ends the records, and zeroTail reports that
// [end, size) holds only zeros. A zero header followed by other bytes is a
// bad header like any other.
//
// scanSegment never panics on any file content; it fails only on I/O
// errors.
func scanSegment(f File, size int64, full bool, visit func(off int64, h *header), bad func(off, n int64, why error)) (end int64, after int, zeroTail bool, err error) {
	if full {
		return scanActive(f, size, visit, bad)
	}
	var (
		hbuf [hdrSize]byte
		pbuf []byte
		h    header // outside the loop: it escapes to visit
		off  int64
	)
	end = -1 // full scans: the end of the valid prefix, once known
	for off < size {
		h = header{}
		err := readHeaderAt(f, off, size, hbuf[:], &h)
		if err != nil {
			if !errors.Is(err, errBadHeader) {
				return 0, 0, false, err
			}
			if isZero(hbuf[:min(hdrSize, size-off)]) {
				z, zerr := allZero(f, off, size)
				if zerr != nil {
					return 0, 0, false, zerr
				}
				if z {
					if end < 0 || !full {
						return off, after, true, nil
					}
					return end, after, false, nil
				}
			}
			next, rerr := resync(f, off+1, size)
			if rerr != nil {
				return 0, 0, false, rerr
			}
			if full {
				if end < 0 {
					end = off
				}
			} else {
				bad(off, next-off, err)
			}
			off = next
			continue
		}
		recEnd := off + hdrSize + int64(h.n)
		if full {
			ok := true
			if h.n > 0 {
				if cap(pbuf) < int(hdrSize+h.n) {
					pbuf = make([]byte, hdrSize+h.n)
				}
				rec := pbuf[:hdrSize+h.n]
				if _, err := f.ReadAt(rec, off); err != nil {
					return 0, 0, false, err
				}
				ok = checkRecord(rec, &h)
			}
			switch {
			case !ok && end < 0:
				end = off
			case ok && end >= 0:
				after++
			case ok:
				visit(off, &h)
			}
		} else {
			visit(off, &h)
		}
		off = recEnd
	}
	if !full || end < 0 {
		return size, after, true, nil
	}
	return end, after, false, nil
}

// readHeaderAt reads and decodes the header at off, checking that its
// record fits in the file.
func readHeaderAt(f File, off, size int64, buf []byte, h *header) error {
	if size-off < hdrSize {
		clear(buf)
		if _, err := f.ReadAt(buf[:size-off], off); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return fmt.Errorf("%w: %d trailing bytes", errBadHeader, size-off)
	}
	if _, err := f.ReadAt(buf[:hdrSize], off); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: short read", errBadHeader)
		}
		return err
	}
	if err := decodeHeader(buf, h); err != nil {
		return err
	}
	if off+hdrSize+int64(h.n) > size {
		return fmt.Errorf("%w: record of %d bytes runs past the end", errBadHeader, h.n)
	}
	return nil
}

// resync finds the first offset at or after from that holds an intact
// header (see readHeaderAt), or returns size.
func resync(f File, from, size int64) (int64, error) {
	var magic [4]byte
	binary.LittleEndian.PutUint32(magic[:], hdrMagic)
	buf := make([]byte, 64<<10)
	var hbuf [hdrSize]byte
	for pos := from; pos < size; {
		n := min(int64(len(buf)), size-pos)
		if _, err := f.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		chunk := buf[:n]
		for i := 0; i < len(chunk); {
			j := bytes.Index(chunk[i:], magic[:])
			if j < 0 {
				break
			}
			cand := pos + int64(i+j)
			var h header
			if err := readHeaderAt(f, cand, size, hbuf[:], &h); err == nil {
				return cand, nil
			} else if !errors.Is(err, errBadHeader) {
				return 0, err
			}
			i += j + 1
		}
		if n <= 3 {
			break
		}
		pos += n - 3 // a magic may straddle chunks
	}
	return size, nil
}

// scanState rebuilds the in-memory state from the records of all segments,
// visited in segment order. Every record carries a stamp (a silo-wide
// write counter that compaction preserves), so the outcome does not depend
// on where compaction moved a record: the higher stamp wins.
type scanState struct {
	s     *Silo
	seals map[blocks.ID][]marker2
	trims map[blocks.ID][]marker2
}

type marker2 struct {
	marker
	v uint64 // epoch (seal) or before (trim)
}

func newScanState(s *Silo) *scanState {
	return &scanState{s: s, seals: map[blocks.ID][]marker2{}, trims: map[blocks.ID][]marker2{}}
}

func (st *scanState) logState(id blocks.ID) *logState {
	lg := st.s.logs[id]
	if lg == nil {
		lg = &logState{recs: map[uint64]jrec{}}
		st.s.logs[id] = lg
	}
	return lg
}

func (st *scanState) apply(seg, off uint32, h *header) {
	s := st.s
	if h.stamp > s.stamp {
		s.stamp = h.stamp
	}
	l := loc{seg: seg, off: off, n: h.n}
	switch h.typ {
	case recPiece:
		key := blocks.Addr(h.key)
		if t, has := s.tombs[key]; has && t.tombStamp != 0 {
			if t.tombStamp > h.stamp {
				s.noteHistoryLocked(key, seg) // deleted later
				return
			}
			t.tombSeg, t.tombOff, t.tombStamp = 0, 0, 0 // put again later
			s.tombs[key] = t
		}
		if e, has := s.index.get(key); has {
			if h.stamp < e.stamp {
				s.noteHistoryLocked(key, seg)
				return
			}
			if e.seg != seg {
				s.noteHistoryLocked(key, e.seg)
			}
		}
		s.index.set(key, entry{loc: l, stamp: h.stamp})
	case recTomb:
		key := blocks.Addr(h.key)
		t, has := s.tombs[key]
		if e, live := s.index.get(key); live {
			if e.stamp > h.stamp {
				return // a stale tombstone: the key was put again later
			}
			s.index.del(key)
			s.noteHistoryLocked(key, e.seg)
			t = s.tombs[key]
			has = true
		}
		if h.stamp >= t.tombStamp { // >=: the newest copy of one tombstone
			if !has {
				t.minSeg = seg // no older put known: an empty range
			}
			t.tombSeg, t.tombOff, t.tombStamp = seg, off, h.stamp
			s.tombs[key] = t
		}
	case recJournal:
		lg := st.logState(blocks.ID(h.key))
		old, has := lg.recs[h.b]
		ep := blocks.Epoch(h.a)
		if has && (ep < old.epoch || ep == old.epoch && h.stamp < old.stamp) {
			return
		}
		lg.recs[h.b] = jrec{loc: l, epoch: ep, stamp: h.stamp}
	case recSeal:
		id := blocks.ID(h.key)
		st.logState(id)
		st.seals[id] = append(st.seals[id], marker2{marker{l, h.stamp}, h.a})
	case recTrim:
		id := blocks.ID(h.key)
		if h.isDrop() {
			if d := s.drops[id]; h.stamp >= d.stamp {
				s.drops[id] = marker{l, h.stamp}
			}
			return
		}
		st.logState(id)
		st.trims[id] = append(st.trims[id], marker2{marker{l, h.stamp}, h.b})
	}
}

// resolve applies drops, trims and seals to the journal state (they may
// have been scanned before or after the records they cover) and computes
// the live bytes of every segment.
func (st *scanState) resolve() {
	s := st.s
	for id, lg := range s.logs {
		drop := s.drops[id].stamp
		for _, m := range st.seals[id] {
			if m.stamp > drop && (blocks.Epoch(m.v) > lg.sealed || blocks.Epoch(m.v) == lg.sealed && m.stamp >= lg.seal.stamp) {
				lg.sealed, lg.seal = blocks.Epoch(m.v), m.marker
			}
		}
		for _, m := range st.trims[id] {
			if m.stamp > drop && m.stamp >= lg.trim.stamp {
				lg.trimBefore, lg.trim = m.v, m.marker
			}
		}
		for seq, r := range lg.recs {
			if r.stamp < drop || r.stamp < lg.trim.stamp && seq < lg.trimBefore {
				delete(lg.recs, seq)
			}
		}
		if len(lg.recs) == 0 && lg.seal.stamp == 0 && lg.trim.stamp == 0 {
			delete(s.logs, id)
		}
	}
	for _, e := range s.index.all() {
		s.liveLocked(e.loc)
	}
	for _, t := range s.tombs {
		if t.tombStamp != 0 {
			s.markerLocked(loc{seg: t.tombSeg, off: t.tombOff}, +1)
		}
	}
	for _, d := range s.drops {
		s.markerLocked(d.loc, +1)
	}
	for _, lg := range s.logs {
		for _, r := range lg.recs {
			s.liveLocked(r.loc)
		}
		if lg.seal.stamp != 0 {
			s.markerLocked(lg.seal.loc, +1)
		}
		if lg.trim.stamp != 0 {
			s.markerLocked(lg.trim.loc, +1)
		}
	}
}

// scanActive is scanSegment's full scan of the active segment: scanFull,
// then emit.
func scanActive(f File, size int64, visit func(off int64, h *header), bad func(off, n int64, why error)) (end int64, after int, zeroTail bool, err error) {
	fs, err := scanFull(f, size)
	if err != nil {
		return 0, 0, false, err
	}
	end, after, zeroTail = fs.emit(visit, bad)
	return end, after, zeroTail, nil
}

// fullScan is a segment read whole, every record checksum verified, its
// records not yet visited (see emit).
type fullScan struct {
	recs  []scannedRec
	bads  []badRegion
	size  int64 // the segment file's size
	stop  int64 // where the records end: size, or where a zero tail begins
	zeros bool  // [stop, size) is a zero tail
	// vouches: an intact record carries a durable mark, so a sync completed
	// while this segment was active: every segment before it is durable.
	vouches bool
}

type scannedRec struct {
	off, end int64
	h        header
	ok       bool // the record checksum holds
}

type badRegion struct {
	off, end int64
	why      error
}

// scanFull reads every record of a segment of the given size and verifies
// its checksum; it fails only on I/O errors.
func scanFull(f File, size int64) (*fullScan, error) {
	var (
		hbuf [hdrSize]byte
		pbuf []byte
		off  int64
	)
	fs := &fullScan{size: size, stop: size}
	for off < size {
		var h header
		err := readHeaderAt(f, off, size, hbuf[:], &h)
		if err != nil {
			if !errors.Is(err, errBadHeader) {
				return nil, err
			}
			if isZero(hbuf[:min(hdrSize, size-off)]) {
				z, zerr := allZero(f, off, size)
				if zerr != nil {
					return nil, zerr
				}
				if z {
					fs.stop, fs.zeros = off, true
					break
				}
			}
			next, rerr := resync(f, off+1, size)
			if rerr != nil {
				return nil, rerr
			}
			fs.bads = append(fs.bads, badRegion{off, next, err})
			off = next
			continue
		}
		recEnd := off + hdrSize + int64(h.n)
		ok := true
		if h.n > 0 {
			if cap(pbuf) < int(hdrSize+h.n) {
				pbuf = make([]byte, hdrSize+h.n)
			}
			r := pbuf[:hdrSize+h.n]
			if _, err := f.ReadAt(r, off); err != nil {
				return nil, err
			}
			ok = checkRecord(r, &h)
		}
		if !ok {
			fs.bads = append(fs.bads, badRegion{off, recEnd, fmt.Errorf("%w: record checksum mismatch", blocks.ErrCorrupt)})
		}
		if ok && h.durable > 0 {
			fs.vouches = true
		}
		fs.recs = append(fs.recs, scannedRec{off, recEnd, h, ok})
		off = recEnd
	}
	return fs, nil
}

// emit decides where the records of a full scan end and visits those
// before that point. A bad record followed only by records that do not
// vouch for it is a torn tail, written but never synced: the records end
// before it (end), and after counts the intact records past it. A bad
// record below the durable mark of a later intact record was synced, so it
// is rot: it is reported to bad (and, when its header is intact, visited,
// so that a read of it finds it corrupt rather than absent), and the
// records go on past it. zeroTail reports that [end, size) holds only
// zeros (or nothing).
func (fs *fullScan) emit(visit func(off int64, h *header), bad func(off, n int64, why error)) (end int64, after int, zeroTail bool) {
	recs, bads := fs.recs, fs.bads
	// vouched[i]: the highest durable mark of intact records from i on.
	vouched := make([]int64, len(recs)+1)
	for i := len(recs) - 1; i >= 0; i-- {
		vouched[i] = vouched[i+1]
		if recs[i].ok {
			vouched[i] = max(vouched[i], int64(recs[i].h.durable))
		}
	}
	cut := int64(-1)
	ri := 0
	for _, b := range bads {
		for ri < len(recs) && recs[ri].off <= b.off {
			ri++
		}
		if vouched[ri] <= b.off {
			cut = b.off // nothing later vouches for it: a torn tail
			break
		}
	}
	for i := range recs {
		r := &recs[i]
		if cut >= 0 && r.off >= cut {
			if r.ok {
				after++
			}
			continue
		}
		if r.ok {
			visit(r.off, &r.h)
		}
	}
	for _, b := range bads {
		if cut >= 0 && b.off >= cut {
			break
		}
		if bad != nil {
			bad(b.off, b.end-b.off, b.why)
		}
		for i := range recs {
			if r := &recs[i]; r.off == b.off && !r.ok {
				visit(r.off, &r.h) // an intact header: reads find it corrupt
			}
		}
	}
	if cut >= 0 {
		return cut, after, false
	}
	return fs.stop, 0, fs.zeros || fs.stop == fs.size
}

// intact counts the intact records of a full scan (nil: none).
func (fs *fullScan) intact() int {
	if fs == nil {
		return 0
	}
	n := 0
	for _, r := range fs.recs {
		if r.ok {
			n++
		}
	}
	return n
}

// sealedBefore returns the size of the segment before this one as its
// first record, a roll's sync mark, recorded it (see rollLocked); ok is
// false when that record is missing, damaged, or from a silo that did not
// record it.
func (fs *fullScan) sealedBefore() (size int64, ok bool) {
	if fs == nil || len(fs.recs) == 0 {
		return 0, false
	}
	r := fs.recs[0]
	if r.off != 0 || !r.ok || r.h.typ != recMark || r.h.b == 0 || r.h.b > math.MaxUint32 {
		return 0, false
	}
	return int64(r.h.b), true
}
