package silo

import (
	"context"
	"errors"

	"cairn/blocks"
	"cairn/internal/crc32c"
)

// Read relocation: pieces read together in a scattered order are written
// again, once, in the order they were read.
//
// The silo appends; it never places a record by what it holds. A volume
// written at random and flushed often (a database's pages, committed one
// by one; between FLUSHes the volume pushes what it holds in chunk order)
// ends with each stretch of the disk's chunks spread over many segments, and a
// later sequential read of that stretch gathers its records from all over
// the mappings: each record a fresh miss for its header, its payload and
// its page-table entry, where records laid down in order are a stream the
// hardware prefetches. BenchmarkViewPieces1M measures the two layouts: 76
// µs of CPU per MiB in the order the records were written, 192 in a
// scattered order (twenty-first session).
//
// So ViewPieces, which serves large reads, judges each call's layout: when
// a call of at least relocMinRecs records breaks into runs that average
// fewer than relocRun contiguous records, it hands the keys of the records
// not yet moved to the relocator, a goroutine that copies each record, in
// the call's order, to the end of the active segment and points the index
// at the copy, exactly as compaction moves a live record (the same copy,
// the same stamp, the same bookkeeping: a crash leaves one copy or both,
// which open resolves; a delete or a put racing the copy wins, since the
// copy is made only if the index still points where it was read). The old
// record is dead space that compaction reclaims. NetApp's WAFL calls the
// same idea read reallocation; btrfs's autodefrag does it for small random
// writes into files.
//
// What bounds its cost: a piece is moved at most once while the silo is
// open (entry.moved, in the index, not on disk: a reopened silo may move a
// piece once more), so two readers of the same deduplicated pieces in
// different orders cannot make them move back and forth; the queue holds
// at most relocQueue calls' keys and a call that finds it full is not
// queued (its records stay where they are, and a later read of the same
// stretch can try again); copies stop while the disk's reserve is out
// (the disk is full), and a failed copy ends its batch. Records a view
// cannot cover (buffered, marked bad, past the mapping) are not judged or
// moved, and a record that fails its check is left where it is.
//
// The relocator reads a group of records (up to relocGroupRecs, or
// relocGroupBytes) from the mappings, checks each with one CRC pass (whose
// result the copy's checksum reuses), and appends the group under one hold
// of the silo's lock.
//
// Why it is off by default (Options.Relocate, `cairn serve
// --relocate-reads`), measured over NBD in the twenty-first session after
// the fio suite's write history (a 1 GiB region filled, then about a
// million random 4 KiB writes): once the pieces had moved, fio's 1 MiB
// sequential reads ran at 3.6-4.1 GB/s against 2.7-3.4 without (2 s runs,
// one after the other); but moving 1 GiB is a write of 1 GiB into fresh
// page-cache pages (perf: 36% of the server's CPU in the kernel's copy
// into them), which took the first two 2 s runs to 1.6-1.8 and 2.3-3.0
// GB/s, and in benchnbd, whose read row starts right after random writes
// each round, the row fell to 0.40x nbdkit (1.7-1.9 GB/s, p99 41-93 ms)
// and the write row after it from 0.77x to 0.61x. A workload that reads
// the same scattered data sequentially again and again (reports over a
// database written at random) gains; one that reads it once pays a write
// for nothing.
const (
	relocMinRecs = 32 // a view of fewer records is not judged
	relocRun     = 8  // runs averaging fewer records than this are scattered
	relocQueue   = 16 // batches of keys waiting for the relocator
)

// scattered reports whether the records recs (in the order they were asked
// for) break into runs averaging fewer than relocRun contiguous records.
func scattered(recs []viewRec) bool {
	if len(recs) < relocMinRecs {
		return false
	}
	breaks := 1
	for j := 1; j < len(recs); j++ {
		p, r := &recs[j-1], &recs[j]
		if r.seg != p.seg || int64(r.l.off) != int64(p.l.off)+p.l.size() {
			breaks++
		}
	}
	return breaks*relocRun > len(recs)
}

// queueRelocation hands the keys of recs not yet moved to the relocator,
// unless its queue is full. keys are ViewPieces' keys.
func (s *Silo) queueRelocation(recs []viewRec, keys []blocks.Addr) {
	if len(s.relocQ) >= cap(s.relocQ) {
		return
	}
	n := 0
	for i := range recs {
		if !recs[i].moved {
			n++
		}
	}
	if n < relocMinRecs/2 {
		return
	}
	batch := make([]blocks.Addr, 0, n)
	for i := range recs {
		if !recs[i].moved {
			batch = append(batch, keys[recs[i].i])
		}
	}
	select {
	case s.relocQ <- batch:
	default:
	}
}

// relocLoop is the relocator: it moves the batches ViewPieces queues until
// ctx ends (Close).
func (s *Silo) relocLoop(ctx context.Context) {
	defer close(s.relocDone)
	var g relocGroup
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-s.relocQ:
			if err := s.relocateBatch(ctx, batch, &g); err != nil && !errors.Is(err, blocks.ErrClosed) && ctx.Err() == nil {
				s.log.Debug("silo: read relocation stops its batch", "err", err)
			}
			if len(s.relocQ) == 0 {
				// Idle: write the copies out of the buffer, so that the
				// next read of them is a view (a buffered record is not).
				s.mu.Lock()
				if s.checkOpen() == nil && s.failed == nil {
					_ = s.flushLocked() // a failure is sticky in s.failed
				}
				s.mu.Unlock()
			}
			if cap(g.buf) > relocGroupBytes+blocks.MaxPiece/4 {
				g.buf = nil // a group of huge pieces: let it go
			}
		}
	}
}

// relocGroupBytes and relocGroupRecs bound a group of moves: read
// together, then appended under one hold of the silo's lock.
const (
	relocGroupBytes = 1 << 20
	relocGroupRecs  = 64
)

// relocGroup is the relocator's scratch: the records of one group, read
// and checked, waiting to be appended.
type relocGroup struct {
	buf  []byte // the payloads, back to back
	hb   [hdrSize]byte
	recs []relocRec
}

type relocRec struct {
	key  blocks.Addr
	l    loc
	h    header
	pcrc uint32 // the payload's CRC-32C
	from int    // the payload is buf[from : from+l.n]
}

// relocateBatch moves the pieces under keys, group by group. It returns an
// error only when the batch should stop (a closed silo, a full disk, a
// failed append).
func (s *Silo) relocateBatch(ctx context.Context, keys []blocks.Addr, g *relocGroup) error {
	for len(keys) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		g.recs, g.buf = g.recs[:0], g.buf[:0]
		for len(keys) > 0 && len(g.recs) < relocGroupRecs && len(g.buf) < relocGroupBytes {
			if err := s.readForMove(keys[0], g); err != nil {
				return err
			}
			keys = keys[1:]
		}
		if err := s.moveGroup(g); err != nil {
			return err
		}
	}
	return nil
}

// readForMove reads piece key's record into g, checked, if the piece is
// one to move (live, not bad, not moved before, in a mapping or a buffer).
// A record that fails its check is left where it is, for the readers to
// report and repair.
func (s *Silo) readForMove(key blocks.Addr, g *relocGroup) error {
	s.mu.RLock()
	if err := s.checkOpen(); err != nil {
		s.mu.RUnlock()
		return err
	}
	e, ok := s.index.get(key)
	seg := s.segs[e.seg]
	if !ok || e.bad || e.moved || seg == nil {
		s.mu.RUnlock()
		return nil
	}
	from := len(g.buf)
	g.buf = append(g.buf, make([]byte, e.n)...)
	payload := g.buf[from:]
	if err := s.fetchSplit(seg, e.loc, nil, g.hb[:], payload, nil); err != nil { // releases s.mu
		g.buf = g.buf[:from]
		return nil
	}
	r := relocRec{key: key, l: e.loc, from: from}
	r.pcrc = crc32c.Checksum(payload)
	if decodeHeader(g.hb[:], &r.h) != nil || r.h.n != e.n || r.h.typ != recPiece || r.h.key != key ||
		crc32c.Update(r.pcrc, g.hb[:76]) != r.h.crc {
		g.buf = g.buf[:from]
		return nil
	}
	if s.relocHook != nil {
		s.relocHook(key)
	}
	g.recs = append(g.recs, r)
	return nil
}

// moveGroup appends g's records to the active segment under one hold of
// the silo's lock and points the index at the copies, each only if its
// piece is still where it was read and has not been moved meanwhile (a
// delete, a put after a delete, a compaction or a mark won the race).
func (s *Silo) moveGroup(g *relocGroup) error {
	if len(g.recs) == 0 {
		return nil
	}
	s.waitFlightRoom()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	for i := range g.recs {
		r := &g.recs[i]
		cur, ok := s.index.get(r.key)
		if !ok || cur.loc != r.l || cur.bad || cur.moved {
			continue
		}
		if s.resv.out {
			return errors.New("the disk is full")
		}
		payload := g.buf[r.from : r.from+int(r.l.n)]
		nseg, noff, err := s.appendLocked(&r.h, r.pcrc, payload, nil)
		if err != nil {
			return err
		}
		s.relocateLocked(r.l.seg, r.l.off, &r.h, loc{seg: nseg.id, off: noff, n: r.l.n})
		cur, _ = s.index.get(r.key)
		cur.moved = true
		s.index.set(r.key, cur)
		if old := s.segs[r.l.seg]; old != nil {
			s.kickIfDeadLocked(old)
		}
		s.relocated.Add(1)
	}
	return nil
}
