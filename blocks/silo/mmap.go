package silo

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"

	"cairn/blocks"
)

// Reads through memory mappings.
//
// A piece read copies its record out of a read-only shared mapping of its
// segment file instead of calling pread: the same page-cache pages, without
// the system call and the page-cache lookup around every copy. A random
// 4,160-byte read of a 256 MiB file in the page cache cost about 0.6 µs
// that way against 1.2 µs with pread (this machine). A segment is mapped
// at its first read, for the length its file has then (the active
// segment's preallocated length, a sealed one's size; a record past the
// mapping is read with pread), and unmapped before its file is closed,
// when no reader holds it (segment.mu).
//
// A mapping turns a failed read into a fault (SIGBUS: the disk failed, or
// someone cut the file short behind the silo's back); copies run with
// debug.SetPanicOnFault, so that the fault becomes an I/O error of that
// one read, as pread's EIO would, never a crash.
//
// Mapped pages the silo has read count in the process's resident set
// (RSS) as shared file pages: they are the page cache, which pread fills
// just the same, not memory of the process's own. maxMaps bounds the
// mappings (the kernel's vm.max_map_count is 65,530 by default); segments
// past it are read with pread.

// maxMaps bounds the segments mapped at once per silo.
const maxMaps = 16384

// mapper is implemented by Files that can be mapped (osFile).
type mapper interface {
	Map(size int64) ([]byte, error)
}

// Map maps the first size bytes of the file, read-only and shared.
func (f *osFile) Map(size int64) ([]byte, error) {
	return syscall.Mmap(f.fd, 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
}

// segMap is a segment's mapping.
type segMap struct {
	mu    sync.Mutex
	tried bool   // a mapping was attempted (it is not retried)
	mem   []byte // the mapping, or nil
	ptr   atomic.Pointer[[]byte]
	// pins counts the views handed out of the mapping (view.go) and not
	// yet released; retired is set when the segment was closed while
	// pinned: the last unpin unmaps it.
	pins    atomic.Int32
	retired bool
}

// mapping returns seg's mapping, mapping the first size bytes of its file
// on the first call (nil: not mappable). The caller holds seg.mu shared.
func (s *Silo) mapping(seg *segment, size int64) []byte {
	if p := seg.mm.ptr.Load(); p != nil {
		return *p
	}
	seg.mm.mu.Lock()
	defer seg.mm.mu.Unlock()
	if seg.mm.tried || size <= 0 {
		if seg.mm.retired {
			return nil
		}
		return seg.mm.mem
	}
	seg.mm.tried = true
	m, ok := seg.f.(mapper)
	if !ok {
		return nil
	}
	if s.maps.Add(1) > maxMaps {
		s.maps.Add(-1)
		return nil
	}
	mem, err := m.Map(size)
	if err != nil {
		s.maps.Add(-1)
		s.log.Debug("silo: mapping a segment failed; reading it with pread", "segment", seg.name, "err", err)
		return nil
	}
	seg.mm.mem = mem
	seg.mm.ptr.Store(&seg.mm.mem)
	return mem
}

// unmap drops seg's mapping. The caller holds seg.mu exclusively (no
// reader is copying from it, and no view can be taken). While views of it
// are pinned, the mapping stays until the last one is released (unpin):
// the file may be closed and removed meanwhile, its pages stay readable.
func (s *Silo) unmap(seg *segment) {
	seg.mm.mu.Lock()
	defer seg.mm.mu.Unlock()
	seg.mm.ptr.Store(nil)
	if seg.mm.pins.Load() > 0 {
		seg.mm.retired = true
		return
	}
	s.dropMapLocked(seg)
}

// dropMapLocked unmaps seg's mapping; seg.mm.mu is held.
func (s *Silo) dropMapLocked(seg *segment) {
	if seg.mm.mem != nil {
		_ = syscall.Munmap(seg.mm.mem)
		s.maps.Add(-1)
	}
	seg.mm.mem = nil
}

// pin keeps seg's mapping until unpin; the caller holds seg.mu shared and
// has seen the mapping (so that unmap has not run).
func pin(seg *segment) { seg.mm.pins.Add(1) }

// unpin releases a pin, unmapping a retired segment's mapping with the
// last one.
func (s *Silo) unpin(seg *segment) {
	if seg.mm.pins.Add(-1) != 0 {
		return
	}
	seg.mm.mu.Lock()
	defer seg.mm.mu.Unlock()
	if seg.mm.retired && seg.mm.pins.Load() == 0 {
		s.dropMapLocked(seg)
	}
}

// copyMapped copies src, a record in a mapping, into a, b and c in turn
// (see copy3). A fault while copying is returned as an I/O error (see
// above).
func copyMapped(seg *segment, off uint32, src, a, b, c []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("silo: read segment %s offset %d through its mapping: %v: %w", seg.name, off, r, syscall.EIO)
		}
	}()
	copy3(src, a, b, c)
	return nil
}

// GetPieceSplit implements blocks.PieceSplitGetter: the piece's record
// copied from the write buffers or the segment's mapping, its header into
// scratch and its payload into head and tail, checked as GetPiece checks
// it. It reports false for a piece of another length, one it has marked
// bad, a segment it has not mapped (or a record past the mapping), and any
// failure (a failed check also marks the piece bad, as GetPiece does).
func (s *Silo) GetPieceSplit(ctx context.Context, key blocks.Addr, head, tail, scratch []byte) bool {
	if ctx.Err() != nil || len(scratch) < hdrSize {
		return false
	}
	hb := scratch[:hdrSize]
	s.mu.RLock()
	e, ok := s.index.get(key)
	if s.checkOpen() != nil || !ok || e.bad || int(e.n) != len(head)+len(tail) {
		s.mu.RUnlock()
		return false
	}
	seg := s.segs[e.seg]
	var h header
	err := s.fetchSplit(seg, e.loc, nil, hb, head, tail)
	if err == nil {
		err = checkSplit(seg, e.loc, hb, head, tail, &h)
	}
	return s.checkPiece(seg, e.loc, key, &h, err) == nil
}
