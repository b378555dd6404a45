package silo

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"cairn/blocks"
)

// The reserve: room kept back for the writes that give space back.
//
// A silo on a full disk must still be able to delete: a deletion writes a
// tombstone, compaction copies the live records of a segment before
// removing it, and a volume's trims and checkpoints append journal
// records. Without room for those, a full disk stayed full: a garbage
// collection failed at its first tombstone (measured: 300 MiB ext4 file
// system filled through NBD; `cairn gc` then failed with ENOSPC, and
// nothing the user could do through Cairn gave space back).
//
// So the silo keeps a file, "reserve" in its directory, of Options.Reserve
// bytes (reserved with fallocate). When a tombstone, a journal record, a
// seal, a trim or a compaction's copy finds the disk full, the silo cuts
// the reserve to nothing and tries again, and logs it. While the reserve
// is out, new pieces are refused with blocks.ErrNoSpace (the data of
// clients must not eat the room the deletions need); the silo takes the
// reserve back, and takes pieces again, once it fits again: it tries
// after each segment compaction removes, and at most once a second when a
// piece is put. The reserve is not counted in Stats' bytes.
//
// The default (Options.Reserve 0) is defaultReserve where the file system
// can fallocate, and none where it cannot (a reserve of written zeros is
// made only when asked for); a negative Reserve means none.

// defaultReserve is the reserve's size when Options.Reserve is 0: room
// for the live records of a segment compaction takes (at most half of it
// with the default CompactRatio), so that on a full disk the compaction
// of one segment always fits, and gives back more than it took; plus
// 8 MiB for about 100,000 tombstones and journal records. A reserve of
// 16 MiB with 64 MiB segments was measured short: after a disk filled
// with overwritten data, every segment was about half dead, and each
// compaction ran out of room halfway.
func defaultReserve(segmentSize int64) int64 { return segmentSize/2 + 8<<20 }

// reserveRetry is how often a piece put while the reserve is out tries to
// take it back.
const reserveRetry = time.Second

const reserveName = "reserve"

// reserve is the state of the reserve file; guarded by Silo.mu.
type reserve struct {
	f     File  // nil: no reserve
	size  int64 // its size when held
	out   bool  // cut to nothing (the disk filled), not yet taken back
	tried time.Time
}

// openReserve opens or creates the reserve file at open and takes the
// reserve (see above). A disk too full for it leaves it out.
func (s *Silo) openReserve() error {
	size := s.opts.Reserve
	if size < 0 {
		return nil
	}
	explicit := size > 0
	if !explicit {
		size = defaultReserve(s.opts.SegmentSize)
	}
	name := filepath.Join(s.dir, reserveName)
	f, err := s.fs.Open(name)
	if err != nil {
		if f, err = s.fs.Create(name); err != nil {
			return mapErr("create the reserve", err)
		}
		if err := s.fs.SyncDir(s.dir); err != nil {
			f.Close()
			return mapErr("sync directory", err)
		}
	}
	if _, ok := f.(allocator); !ok && !explicit {
		f.Close()
		_ = s.fs.Remove(name)
		return nil
	}
	s.resv = reserve{f: f, size: size}
	if fs, ok := s.fs.(freeSpacer); ok {
		if free, err := fs.Free(s.dir); err == nil && free < size {
			// The disk is (nearly) full: the node's other stores (raft's
			// log, opened after the silo) need room to start, and the
			// deletions that give space back need the reserve.
			_ = f.Truncate(0)
			s.resv.out = true
			s.resv.tried = time.Now()
			s.log.Warn("silo: the disk is nearly full; the reserve is released so that the node can start; new pieces are refused until space is freed (delete data or volumes, then gc)", "free", free, "reserve", size)
			return nil
		}
	}
	if n, err := f.Size(); err == nil && n >= size {
		return nil
	}
	if !s.takeReserveLocked() {
		s.log.Warn("silo: the disk is too full for the reserve; new pieces are refused until space is freed", "reserve", size)
	}
	return nil
}

// takeReserveLocked grows the reserve file back to its size; on failure
// (the disk is still too full) it cuts it to nothing again, and the
// reserve stays out. It reports whether the reserve is held. s.mu held
// (or the silo not yet shared).
func (s *Silo) takeReserveLocked() bool {
	r := &s.resv
	r.tried = time.Now()
	if err := preallocate(r.f, 0, r.size); err != nil {
		_ = r.f.Truncate(0)
		r.out = true
		return false
	}
	if r.out {
		s.log.Info("silo: space is back; the reserve is taken again and new pieces accepted", "reserve", r.size)
	}
	r.out = false
	return true
}

// releaseReserveLocked cuts the reserve to nothing, if held, so that a
// write that gives space back can go on; it reports whether it freed
// anything. s.mu held.
func (s *Silo) releaseReserveLocked() bool {
	r := &s.resv
	if r.f == nil || r.out {
		return false
	}
	if err := r.f.Truncate(0); err != nil {
		s.log.Error("silo: could not release the reserve", "err", err)
		return false
	}
	r.out = true
	s.log.Warn("silo: the disk is full; released the reserve for deletions, journal records and compaction; new pieces are refused until space is freed (delete data or volumes, then gc)", "reserve", r.size)
	return true
}

// appendReserveLocked is appendLocked for the records that must get
// through on a full disk (see above): on ErrNoSpace it releases the
// reserve and tries once more.
func (s *Silo) appendReserveLocked(h *header, pcrc uint32, payload, raw []byte) (*segment, uint32, error) {
	seg, off, err := s.appendLocked(h, pcrc, payload, raw)
	if errors.Is(err, blocks.ErrNoSpace) && s.releaseReserveLocked() {
		seg, off, err = s.appendLocked(h, pcrc, payload, raw)
	}
	return seg, off, err
}

// pieceRoomLocked refuses a new piece while the reserve is out, unless
// it can be taken back (tried at most once per reserveRetry). s.mu held.
func (s *Silo) pieceRoomLocked() error {
	r := &s.resv
	if !r.out {
		return nil
	}
	if time.Since(r.tried) >= reserveRetry && s.takeReserveLocked() {
		return nil
	}
	return fmt.Errorf("silo: the disk is full and its reserve in use (free space: delete data or volumes, then gc): %w", blocks.ErrNoSpace)
}

// freeSpacer is implemented by FSes that can tell the free space of the
// file system holding dir (osFS).
type freeSpacer interface {
	Free(dir string) (int64, error)
}

// closeReserve closes the reserve file.
func (s *Silo) closeReserve() {
	if s.resv.f != nil {
		s.resv.f.Close()
		s.resv.f = nil
	}
}
