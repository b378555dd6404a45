package silo

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"cairn/blocks"
)

// Sweeps: deleting garbage that other nodes decided is garbage.
//
// A cluster's garbage collector marks, across every node, what volumes
// still reference, while writers go on. A piece that no mark covers may
// still be in use if it was put after the marking began: a new block whose
// reference is not yet anywhere the marking looked, or an old block
// written again (PutPiece of a key already held writes nothing, so the
// record keeps its old stamp). A Sweep tells those apart: BeginSweep takes
// the silo's stamp before the marking starts, and from then on every
// PutPiece of a key already held is remembered by the sweep; DeleteStale
// deletes a piece only if its record is older than the sweep and it was
// not put again since. The state is in memory only: a silo reopened
// mid-collection has no sweep, and the collector gives up on it.

// Sweep is a garbage collection's window on a silo (see BeginSweep).
type Sweep struct {
	s       *Silo
	stamp   uint64                   // records stamped up to it predate the sweep
	touched map[blocks.Addr]struct{} // keys put again since (guarded by s.mu)
}

// BeginSweep opens a sweep: DeleteStale will delete only pieces stored
// before this call and not put again since. End releases it.
func (s *Silo) BeginSweep() (*Sweep, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	sw := &Sweep{s: s, stamp: s.stamp, touched: map[blocks.Addr]struct{}{}}
	s.sweeps = append(s.sweeps, sw)
	return sw, nil
}

// touchLocked records, in every open sweep, that key was put again.
func (s *Silo) touchLocked(key blocks.Addr) {
	for _, sw := range s.sweeps {
		sw.touched[key] = struct{}{}
	}
}

// DeleteStale deletes the piece key if it was stored before the sweep
// began and not put again since, and reports whether it did. A piece
// absent, newer or put again is left alone (false, nil). The deletion is
// durable at the next Sync, like DeletePiece's.
func (sw *Sweep) DeleteStale(ctx context.Context, key blocks.Addr) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s := sw.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return false, err
	}
	if !slices.Contains(s.sweeps, sw) {
		return false, fmt.Errorf("silo: sweep already ended: %w", blocks.ErrClosed)
	}
	e, ok := s.index.get(key)
	if !ok || e.stamp > sw.stamp {
		return false, nil
	}
	if _, again := sw.touched[key]; again {
		return false, nil
	}
	return true, s.deleteLocked(key, e)
}

// End closes the sweep; later DeleteStale calls fail. It may be called
// more than once.
func (sw *Sweep) End() {
	s := sw.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweeps = slices.DeleteFunc(s.sweeps, func(o *Sweep) bool { return o == sw })
	sw.touched = nil
}

// PeekPiece reads the first bytes of piece key's payload into dst (as
// many as fit, or the whole payload if shorter) and returns them. Unlike
// GetPiece it does not verify the record's checksum, which covers the
// whole payload: it reads the record's header and checks that it is the
// piece's, and the caller verifies what it uses (a sweep reads the
// redundancy layer's piece header, which carries its own checksum, to
// learn which block a piece belongs to, without reading the block).
// Errors: blocks.ErrNotFound, blocks.ErrCorrupt (the record's header is
// not the piece's), blocks.ErrClosed, or an I/O error.
func (s *Silo) PeekPiece(ctx context.Context, key blocks.Addr, dst []byte) ([]byte, error) {
	e, seg, err := s.lookupRLocked(ctx, key)
	if err != nil {
		return nil, err
	}
	dst = dst[:min(len(dst), int(e.n))]
	var hb [hdrSize]byte
	sr, _ := seg.f.(splitReader)
	if len(dst) == 0 {
		sr = nil // ReadSplitAt needs two buffers; the header alone is read plainly
	}
	err = s.fetchSplit(seg, e.loc, sr, hb[:], dst, nil)
	if errors.Is(err, errUnmapped) {
		// Neither buffered nor mapped, and a file that cannot read in two
		// parts: read the whole piece, verified.
		p, err := s.GetPiece(ctx, key)
		if err != nil {
			return nil, err
		}
		return dst[:copy(dst, p)], nil
	}
	if err != nil {
		return nil, err
	}
	var h header
	if err := decodeHeader(hb[:], &h); err != nil {
		return nil, fmt.Errorf("silo: segment %s offset %d: %v: %w", seg.name, e.off, err, blocks.ErrCorrupt)
	}
	if h.typ != recPiece || h.key != key || h.n != e.n {
		return nil, fmt.Errorf("silo: segment %s offset %d: record is not piece %s: %w", seg.name, e.off, key, blocks.ErrCorrupt)
	}
	return dst, nil
}

// Stamp returns the silo's last stamp: it grows with every piece,
// tombstone and journal record written, so a caller can tell whether the
// silo took any write since it last looked.
func (s *Silo) Stamp() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stamp
}
