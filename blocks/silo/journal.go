package silo

import (
	"context"
	"fmt"
	"math"
	"slices"

	"cairn/blocks"
	"cairn/internal/crc32c"
)

// Append implements blocks.Journal: it writes record seq of log to the
// active segment, beside the pieces, so that one Sync makes both durable.
// A record already held at seq from a higher epoch is kept and Append
// returns nil. rec is not retained. Errors: blocks.ErrFenced (epoch below
// the log's seal), blocks.ErrTooLarge (over blocks.MaxRecord),
// blocks.ErrNoSpace, blocks.ErrClosed; seq 0 is refused.
func (s *Silo) Append(ctx context.Context, log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(rec) > blocks.MaxRecord {
		return fmt.Errorf("silo: journal record of %d bytes: %w", len(rec), blocks.ErrTooLarge)
	}
	if seq == 0 {
		return fmt.Errorf("silo: journal record with seq 0 (seqs start at 1)")
	}
	pcrc := crc32c.Checksum(rec)
	h := header{typ: recJournal, n: uint32(len(rec)), key: log, a: uint64(epoch), b: seq}

	s.waitFlightRoom()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	lg := s.logs[log]
	var old jrec
	var had bool
	if lg != nil {
		if epoch < lg.sealed {
			return fmt.Errorf("silo: append to log %s at epoch %d, sealed at %d: %w", log, epoch, lg.sealed, blocks.ErrFenced)
		}
		old, had = lg.recs[seq]
		if had && old.epoch > epoch {
			return nil
		}
	}
	s.stamp++
	h.stamp = s.stamp
	seg, off, err := s.appendReserveLocked(&h, pcrc, rec, nil)
	if err != nil {
		return err
	}
	if lg == nil {
		lg = &logState{recs: map[uint64]jrec{}}
		s.logs[log] = lg
	}
	if had {
		s.killLocked(old.loc)
	}
	l := loc{seg: seg.id, off: off, n: h.n}
	lg.recs[seq] = jrec{loc: l, epoch: epoch, stamp: h.stamp}
	s.liveLocked(l)
	return nil
}

// Seal implements blocks.Journal: it writes a seal record and syncs, so
// the seal is durable when Seal returns. Appends below epoch fail from the
// moment the seal record is written. Sealing at or below the current seal
// writes nothing (but still waits for a Sync, so that a concurrent Seal of
// the same epoch is durable too).
func (s *Silo) Seal(ctx context.Context, log blocks.ID, epoch blocks.Epoch) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.writeSeal(log, epoch); err != nil {
		return err
	}
	return s.Sync(ctx)
}

func (s *Silo) writeSeal(log blocks.ID, epoch blocks.Epoch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	lg := s.logs[log]
	if lg != nil && epoch <= lg.sealed || lg == nil && epoch == 0 {
		return nil
	}
	s.stamp++
	h := header{typ: recSeal, key: log, a: uint64(epoch), stamp: s.stamp}
	seg, off, err := s.appendReserveLocked(&h, 0, nil, nil)
	if err != nil {
		return err
	}
	if lg == nil {
		lg = &logState{recs: map[uint64]jrec{}}
		s.logs[log] = lg
	}
	if lg.seal.stamp != 0 {
		s.markerLocked(lg.seal.loc, -1)
	}
	lg.sealed = epoch
	lg.seal = marker{loc{seg: seg.id, off: off}, h.stamp}
	s.markerLocked(lg.seal.loc, +1)
	return nil
}

// Replay implements blocks.Journal. Each record is read from disk and
// checksum-verified before fn sees it; a record that fails its checksum
// ends the replay there (nil error). rec is valid only during fn. Records
// appended or trimmed during Replay may or may not be seen.
func (s *Silo) Replay(ctx context.Context, log blocks.ID, from uint64, fn func(epoch blocks.Epoch, seq uint64, rec []byte) error) error {
	s.mu.RLock()
	if err := s.checkOpen(); err != nil {
		s.mu.RUnlock()
		return err
	}
	var seqs []uint64
	if lg := s.logs[log]; lg != nil {
		seqs = make([]uint64, 0, len(lg.recs))
		for seq := range lg.recs {
			if seq >= from {
				seqs = append(seqs, seq)
			}
		}
	}
	s.mu.RUnlock()
	slices.Sort(seqs)
	var buf []byte
	for _, seq := range seqs {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.mu.RLock()
		if err := s.checkOpen(); err != nil {
			s.mu.RUnlock()
			return err
		}
		lg := s.logs[log]
		if lg == nil {
			s.mu.RUnlock()
			return nil // dropped meanwhile
		}
		r, ok := lg.recs[seq]
		if !ok {
			s.mu.RUnlock()
			continue // trimmed meanwhile
		}
		seg := s.segs[r.seg]
		var h header
		var err error
		buf, err = s.readRecord(seg, r.loc, buf, &h)
		if err == nil && (h.typ != recJournal || h.key != log || h.b != seq || blocks.Epoch(h.a) != r.epoch) {
			err = fmt.Errorf("silo: record is not log %s seq %d: %w", log, seq, blocks.ErrCorrupt)
		}
		if err != nil {
			s.log.Warn("silo: journal replay ends at a bad record", "log", log.String(), "seq", seq, "err", err)
			return nil
		}
		if err := fn(r.epoch, seq, buf[hdrSize:]); err != nil {
			return err
		}
	}
	return nil
}

// Trim implements blocks.Journal: it writes a trim record (durable at the
// next Sync) and forgets the records below before, whose space comes back
// at compaction. Trimming at or below an earlier trim point is a no-op.
// Trim(log, math.MaxUint64) drops the whole log, seal included.
func (s *Silo) Trim(ctx context.Context, log blocks.ID, before uint64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	lg := s.logs[log]
	if lg == nil || before == 0 || before != math.MaxUint64 && before <= lg.trimBefore {
		return nil
	}
	s.stamp++
	h := header{typ: recTrim, key: log, b: before, stamp: s.stamp}
	seg, off, err := s.appendReserveLocked(&h, 0, nil, nil)
	if err != nil {
		return err
	}
	m := marker{loc{seg: seg.id, off: off}, h.stamp}
	for seq, r := range lg.recs {
		if seq < before {
			s.killLocked(r.loc)
			delete(lg.recs, seq)
		}
	}
	if lg.trim.stamp != 0 {
		s.markerLocked(lg.trim.loc, -1)
	}
	s.markerLocked(m.loc, +1)
	if before == math.MaxUint64 {
		if lg.seal.stamp != 0 {
			s.markerLocked(lg.seal.loc, -1)
		}
		if d, ok := s.drops[log]; ok {
			s.markerLocked(d.loc, -1)
		}
		delete(s.logs, log)
		s.drops[log] = m
		return nil
	}
	lg.trimBefore, lg.trim = before, m
	return nil
}
