package silo

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"cairn/blocks"
)

func (s *Silo) kickCompactor() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// compactLoop is the background compactor: woken when a segment is sealed
// or records die, it rewrites the sealed segments whose dead share has
// reached Options.CompactRatio. Close stops it.
func (s *Silo) compactLoop(ctx context.Context) {
	defer close(s.bgDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.compactMu.Lock()
		err := s.compactLocked(ctx, false)
		s.compactMu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("silo: background compaction failed", "err", err)
		}
	}
}

// Compact rewrites now every sealed segment that holds dead bytes (first
// sealing the active segment if it holds any): the live records are copied
// to the active segment, synced, and the old segment files removed (and
// the removal synced). Reads and writes go on meanwhile; each copied record
// holds the silo's lock only for its own append. A crash at any point
// loses nothing acknowledged and resurrects nothing deleted.
func (s *Silo) Compact(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.mu.Lock()
	err := s.checkOpen()
	if err == nil && s.active.size > s.active.live {
		err = s.rollLocked()
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return s.compactLocked(ctx, true)
}

// compactLocked compacts the candidate segments; compactMu is held.
func (s *Silo) compactLocked(ctx context.Context, all bool) error {
	s.mu.RLock()
	if err := s.checkOpen(); err != nil {
		s.mu.RUnlock()
		return err
	}
	var cands []*segment
	for _, id := range s.order {
		seg := s.segs[id]
		if seg == s.active {
			continue
		}
		dead := seg.size - seg.live
		if seg.size == 0 || all && dead > 0 || float64(dead) >= s.opts.CompactRatio*float64(seg.size) {
			cands = append(cands, seg)
		}
	}
	// The least live first: each segment's removal gives back its size for
	// the copy of its live bytes, so on a full disk, where the copies
	// take the reserve (reserve.go), the segments that cost least free
	// the room the others need. (In id order, a full disk's compaction
	// spent the reserve on copying a half-live segment and stopped short
	// of a dead one.) The order does not matter otherwise: a tombstone
	// stays while any older segment may hold its piece (isLiveLocked).
	slices.SortStableFunc(cands, func(a, b *segment) int { return cmp.Compare(a.live, b.live) })
	s.mu.RUnlock()
	for _, seg := range cands {
		if err := s.compactSegment(ctx, seg); err != nil {
			return err
		}
	}
	return nil
}

type scanned struct {
	off uint32
	h   header
}

func (s *Silo) compactSegment(ctx context.Context, seg *segment) error {
	if err := s.waitFlights(); err != nil { // the segment's last buffers may still be in the air
		return err
	}
	s.mu.RLock()
	size := seg.size
	s.mu.RUnlock()
	var recs []scanned
	_, _, _, err := scanSegment(seg.f, size, false, func(off int64, h *header) {
		recs = append(recs, scanned{uint32(off), *h})
	}, func(off, n int64, why error) {
		s.log.Warn("silo: compaction skips corrupt bytes", "segment", seg.name, "offset", off, "length", n, "err", why)
	})
	if err != nil {
		return fmt.Errorf("silo: compact %s: %w", seg.name, err)
	}
	var copied, dropped int
	rotten := false // a live record failed its checksum: the segment stays
	bp := getBuf(0)
	defer putBuf(bp)
	for i := range recs {
		r := &recs[i]
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.closing.Load() {
			return fmt.Errorf("silo: %w", blocks.ErrClosed)
		}
		s.mu.RLock()
		live := s.isLiveLocked(seg.id, r.off, &r.h)
		s.mu.RUnlock()
		if !live {
			dropped++
			continue
		}
		bp = getBufInto(bp, hdrSize+int(r.h.n))
		if _, err := seg.f.ReadAt(*bp, int64(r.off)); err != nil {
			return fmt.Errorf("silo: compact %s: %w", seg.name, mapErr("read", err))
		}
		s.mu.Lock()
		if err := s.checkOpen(); err != nil {
			s.mu.Unlock()
			return err
		}
		if !s.isLiveLocked(seg.id, r.off, &r.h) {
			s.mu.Unlock()
			continue
		}
		if !checkRecord(*bp, &r.h) {
			// A live record that rotted. The copy would carry a checksum
			// of the rotten bytes (it is re-encoded with the new segment's
			// durable mark) and serve them as good: keep the segment
			// instead, until the record is replaced (a PutPiece of the
			// piece, which its reader's repair makes; the marked piece is
			// reported corrupt meanwhile) or dropped (a journal trim).
			if r.h.typ == recPiece {
				key := blocks.Addr(r.h.key)
				e, _ := s.index.get(key)
				e.bad = true
				s.index.set(key, e)
			}
			s.mu.Unlock()
			s.log.Warn("silo: compaction keeps a segment holding a corrupt live record", "segment", seg.name, "offset", r.off, "type", r.h.typ)
			rotten = true
			break
		}
		// The record is copied whole (its checksum checked above), its
		// stamp kept, so that the scan at open resolves the two copies a
		// crash may leave.
		nseg, noff, err := s.appendReserveLocked(nil, 0, nil, *bp)
		if err == nil {
			s.relocateLocked(seg.id, r.off, &r.h, loc{seg: nseg.id, off: noff, n: r.h.n})
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
		copied++
	}
	if err := s.Sync(ctx); err != nil {
		return err
	}
	if rotten {
		return nil
	}
	s.mu.Lock()
	if err := s.checkOpen(); err != nil {
		s.mu.Unlock()
		return err
	}
	delete(s.segs, seg.id)
	s.unsynced = slices.DeleteFunc(s.unsynced, func(o *segment) bool { return o == seg })
	if i, ok := slices.BinarySearch(s.order, seg.id); ok {
		s.order = slices.Delete(s.order, i, i+1)
	}
	s.ghosts = append(s.ghosts, seg.id) // until its removal is durable
	s.mu.Unlock()

	seg.mu.Lock() // wait for readers that found it before
	s.unmap(seg)
	seg.f.Close()
	seg.mu.Unlock()
	if err := s.fs.Remove(seg.name); err != nil {
		return fmt.Errorf("silo: compact: %w", mapErr("remove segment", err))
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("silo: compact: %w", mapErr("sync directory", err))
	}
	s.mu.Lock()
	if i := slices.Index(s.ghosts, seg.id); i >= 0 {
		s.ghosts = slices.Delete(s.ghosts, i, i+1)
	}
	if s.resv.out {
		s.takeReserveLocked() // the removal may have made room for it
	}
	s.cleanupLocked()
	s.mu.Unlock()
	s.log.Debug("silo: compacted segment", "segment", seg.name, "bytes", size, "copied", copied, "dropped", dropped)
	return nil
}

func getBufInto(bp *[]byte, n int) *[]byte {
	if cap(*bp) < n {
		b := make([]byte, n)
		*bp = b
	}
	*bp = (*bp)[:n]
	return bp
}

// segExists reports whether segment id exists, or may still exist on disk.
func (s *Silo) segExistsLocked(id uint32) bool {
	return s.segs[id] != nil || slices.Contains(s.ghosts, id)
}

// anySegInLocked reports whether a segment with id in [lo, hi) exists or
// may still exist on disk.
func (s *Silo) anySegInLocked(lo, hi uint32) bool {
	if s.anySegIn(lo, hi) {
		return true
	}
	for _, g := range s.ghosts {
		if g >= lo && g < hi {
			return true
		}
	}
	return false
}

// isLiveLocked reports whether the record at (seg, off) with header h must
// be kept: a piece or journal record the index points at, the latest
// tombstone of a deleted key while an older segment may hold a put of it,
// a log's current seal or trim, or a log's drop while an older segment may
// hold its records.
func (s *Silo) isLiveLocked(seg, off uint32, h *header) bool {
	at := func(l loc) bool { return l.seg == seg && l.off == off }
	switch h.typ {
	case recPiece:
		e, ok := s.index.get(blocks.Addr(h.key))
		return ok && at(e.loc)
	case recTomb:
		key := blocks.Addr(h.key)
		if _, ok := s.index.get(key); ok {
			return false
		}
		t, ok := s.tombs[key]
		return ok && t.tombStamp == h.stamp && t.tombSeg == seg && t.tombOff == off && s.anySegInLocked(t.minSeg, seg)
	case recJournal:
		lg := s.logs[blocks.ID(h.key)]
		if lg == nil {
			return false
		}
		r, ok := lg.recs[h.b]
		return ok && at(r.loc)
	case recSeal:
		lg := s.logs[blocks.ID(h.key)]
		return lg != nil && lg.seal.stamp != 0 && at(lg.seal.loc)
	case recTrim:
		if h.isDrop() {
			d, ok := s.drops[blocks.ID(h.key)]
			return ok && at(d.loc) && s.anySegInLocked(1, seg)
		}
		lg := s.logs[blocks.ID(h.key)]
		return lg != nil && lg.trim.stamp != 0 && at(lg.trim.loc)
	}
	return false
}

// relocateLocked points the state at the copy nl of the live record at
// (seg, off).
func (s *Silo) relocateLocked(seg, off uint32, h *header, nl loc) {
	old := loc{seg: seg, off: off, n: h.n}
	move := func() {
		if sg := s.segs[old.seg]; sg != nil {
			sg.live -= old.size()
		}
		if sg := s.segs[nl.seg]; sg != nil {
			sg.live += nl.size()
		}
	}
	switch h.typ {
	case recPiece:
		key := blocks.Addr(h.key)
		e, _ := s.index.get(key)
		e.loc = nl
		s.index.set(key, e)
		// Until the old segment's removal is durable, it holds a put of key.
		s.noteHistoryLocked(key, seg)
	case recTomb:
		key := blocks.Addr(h.key)
		t := s.tombs[key]
		t.tombSeg, t.tombOff = nl.seg, nl.off
		s.tombs[key] = t
	case recJournal:
		lg := s.logs[blocks.ID(h.key)]
		r := lg.recs[h.b]
		r.loc = nl
		lg.recs[h.b] = r
	case recSeal:
		s.logs[blocks.ID(h.key)].seal.loc = nl
	case recTrim:
		id := blocks.ID(h.key)
		if h.isDrop() {
			d := s.drops[id]
			d.loc = nl
			s.drops[id] = d
		} else {
			s.logs[id].trim.loc = nl
		}
	}
	move()
}

// markerLocked accounts a tombstone, seal, trim or drop record at l as
// live (+1) or dead (-1) in its segment.
func (s *Silo) markerLocked(l loc, sign int64) {
	if sg := s.segs[l.seg]; sg != nil {
		sg.live += sign * hdrSize
		if sign < 0 {
			s.kickIfDeadLocked(sg)
		}
	}
}

// cleanupLocked forgets tombstones and drops that no longer cover any
// record (the segments that could hold one are gone), so that compaction
// drops them, and tightens the history of live keys.
func (s *Silo) cleanupLocked() {
	for key, t := range s.tombs {
		if e, live := s.index.get(key); live {
			if !s.anySegInLocked(t.minSeg, e.seg) {
				delete(s.tombs, key)
			}
			continue
		}
		if t.tombStamp == 0 || !s.anySegInLocked(t.minSeg, t.tombSeg) {
			if t.tombStamp != 0 {
				s.markerLocked(loc{seg: t.tombSeg, off: t.tombOff}, -1)
			}
			delete(s.tombs, key)
		}
	}
	for id, d := range s.drops {
		if !s.anySegInLocked(1, d.seg) {
			s.markerLocked(d.loc, -1)
			delete(s.drops, id)
		}
	}
}
