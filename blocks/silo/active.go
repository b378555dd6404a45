package silo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"cairn/blocks"
	"cairn/internal/crc32c"
	"cairn/internal/fastcopy"
)

// The active segment's write path.
//
// Segments are created at full Options.SegmentSize (a spare one ahead of
// need, by a background goroutine) in one of two ways, chosen by how the
// silo is being used:
//
//   - Reserved with fallocate: cheap (metadata only), but the file system
//     marks the extents unwritten, so the first fdatasync after writing into
//     them also commits the extent conversion (on ext4 here, 209 µs for a
//     4 KiB write + fdatasync against 142 µs into written zeros).
//   - Written with zeros and synced: appends then overwrite blocks the file
//     system has already allocated and written, and an fdatasync flushes
//     data only. It costs a second write of every byte: zero-filling took
//     38% of the CPU of a 4 KiB random-write run when every segment was
//     made this way.
//
// So segments are zero-filled only while syncs are frequent: the silo
// counts syncs over windows of syncWindow syncs, and a window that wrote
// less than syncWindow*heavySyncBytes bytes marks the workload sync-heavy;
// syncWindow*heavySyncBytes bytes appended before the window's syncWindow-th
// sync mark it not sync-heavy (a bulk load that does not sync at all too).
// A spare made while sync-heavy is zero-filled; otherwise it is reserved.
// When a workload turns sync-heavy while the active segment is a reserved
// one, the spare maker replaces the spare with a zero-filled one and the
// next append rolls over to it early (the old segment is sealed short,
// like any other). Where fallocate is missing, segments are zero-filled.
// Appends collect in a write buffer and go out with one pwrite when the
// buffer reaches the next writeAlign boundary of the file (below), on
// Sync, and when the segment is sealed; reads of records still in the
// buffer are served from it. A record larger than maxBuffered or past the
// preallocated space is written with its own pwrite (past the
// preallocated end it extends the file, as a plain append does). Sealing
// truncates the zero tail and syncs.

// Write buffers end on writeAlign boundaries of the segment file.
//
// A full buffer is written with one pwrite of exactly the bytes between two
// boundaries: the record that crosses a boundary is split, its head going
// out with the buffer before the boundary and the whole record starting the
// next buffer (which skips the head when it is written; see wskip), so that
// every record is whole in some buffer for the reads served from buffers.
// Writes that cover a whole aligned 2 MiB of a file give the page cache
// 2 MiB folios, which the kernel maps into the silo's mappings (mmap.go)
// with one page-table entry each instead of 512: a random 4 KiB read then
// misses the TLB far less (in this VM a miss costs a two-dimensional page
// walk). Measured: a 256 MiB file written in 256 KiB writes has
// FilePmdMapped 0 in /proc/self/smaps, in 2 MiB aligned writes 256 MiB;
// BenchmarkVolume/RandRead4K (internal/node, after SeqWrite1M) went from
// 2.4-2.6 µs to 1.8 µs a read, and fio's 4 KiB random reads at queue
// depth 32 over NBD (benchnbd) from 0.77-0.82x nbdkit to about 1.0x.
// Buffers that Sync or a seal writes out early end anywhere, as do records
// too large for a buffer (written on their own). Zero-filled segments keep
// 64 KiB folios (see zeroChunk).
//
// An earlier try ended 256 KiB buffers on 256 KiB boundaries (folios of
// that size, never mapped whole): reads then used pread, and with a node
// of a cluster dead the client's IOPS fell from 0.95x to 0.6x of before
// (benchnbd -heal-only), so it was taken out. The same fall came back
// with 2 MiB buffers and was then explained: writers waited for the
// flight queue holding the silo's lock, stalling readers (see
// maxFlights).
const writeAlign = 2 << 20

// maxBuffered is the largest record that goes through the write buffer;
// a larger one is written with its own pwrite.
const maxBuffered = 256<<10 + hdrSize

// writeBufSize is the capacity of a write buffer: the bytes up to the next
// boundary (writeAlign, plus the head of a record carried over from the
// previous buffer) and one more record.
const writeBufSize = writeAlign + 2*maxBuffered

// maxUnsynced is how many sealed segments may wait for a sync before the
// silo runs one in the background (see rollLocked).
const maxUnsynced = 8

// A sync window: syncWindow syncs that wrote fewer than
// syncWindow*heavySyncBytes bytes between them mark the workload
// sync-heavy (see above).
const (
	syncWindow     = 32
	heavySyncBytes = 1 << 20
)

// zeroChunk is the size of the zero writes that preallocate a segment,
// and so the size of the page-cache folios a sync-heavy writer appends
// into: the smaller the folio, the less the kernel's writeback of a
// partly dirty one costs at each fdatasync (only the dirty blocks go to
// the disk either way: 16.8 sectors a pair at every size). Not
// writeAlign: a zero-filled segment made of 2 MiB folios made each 4 KiB
// write + fdatasync cost 200-250 µs against 175-190 µs with 1 MiB
// (BenchmarkVolume/WriteFlush4K in internal/node, four rounds each).
// 64 KiB against 1 MiB (twelfth session, interleaved, on a noisy disk):
// WriteFlush4K after RandWrite4K, nine pairs, mean 174 against 189 µs a
// pair (median 172 against 182) at 92 against 100 µs of CPU; fio's 4 KiB
// write + fsync at QD1 over NBD, three pairs, 2,648-2,789 against
// 2,056-2,666 pairs a second at 270-285 against 281-339 µs of CPU per
// pair. A bare append + fdatasync loop (a 4,358-byte record a pair, as
// the volume writes) into files zeroed in 4 KiB, 64 KiB and 1 MiB writes
// agreed in direction, and the 64 KiB zero-fill itself ran faster than
// the 1 MiB one (about 70 against 95-180 ms for 256 MiB). 4 KiB writes
// would take 16,384 system calls per segment for little more.
const zeroChunk = 64 << 10

var zeros = make([]byte, zeroChunk)

// appendLocked appends one record at the end of the active segment, rolling
// to a new segment first when the active one is full: the header h (whose
// stamp the caller has set) with payload (CRC32C pcrc), or, when raw is not
// nil, the whole encoded record raw verbatim. The record goes to the write
// buffer when it fits there and in the preallocated space.
func (s *Silo) appendLocked(h *header, pcrc uint32, payload, raw []byte) (*segment, uint32, error) {
	if s.failed == nil && s.flightFailed.Load() {
		s.failed = s.flightErr()
	}
	if s.failed != nil {
		return nil, 0, s.failed
	}
	if s.active.size >= s.opts.SegmentSize || (s.heavy && !s.active.zeroed && s.zeroSpare.Load()) {
		if err := s.rollLocked(); err != nil {
			return nil, 0, err
		}
	}
	n := hdrSize + len(payload)
	if raw != nil {
		n = len(raw)
	}
	seg := s.active
	off := seg.size
	if raw != nil {
		// A record copied whole (compaction) carries its old segment's
		// durable mark: re-encode it with this segment's.
		var rh header
		if err := decodeHeader(raw, &rh); err != nil {
			return nil, 0, err
		}
		h, payload, raw = &rh, raw[hdrSize:], nil
		pcrc = crc32c.Checksum(payload)
	}
	h.durable = uint32(seg.synced)
	if len(s.wbuf)+n > cap(s.wbuf) {
		if err := s.launchLocked(); err != nil {
			return nil, 0, err
		}
	}
	if n <= maxBuffered && off+int64(n) <= seg.alloc {
		i := len(s.wbuf)
		s.wbuf = s.wbuf[:i+n]
		encodeInto(s.wbuf[i:], h, pcrc, payload, raw)
		if start := off - int64(i); off+int64(n) >= s.nextBoundary(start) {
			if err := s.launchAlignedLocked(start, off, n); err != nil {
				return nil, 0, err
			}
		}
	} else {
		if err := s.flushLocked(); err != nil {
			return nil, 0, err
		}
		bp := getBuf(n)
		encodeInto(*bp, h, pcrc, payload, raw)
		_, err := seg.f.WriteAt(*bp, off)
		putBuf(bp)
		if err != nil {
			s.undoWriteLocked(seg, off, n)
			return nil, 0, mapErr("write", err)
		}
		if end := off + int64(n); end > seg.alloc {
			seg.alloc = end
		}
	}
	seg.size += int64(n)
	s.winBytes += int64(n)
	if s.heavy && s.winBytes >= syncWindow*heavySyncBytes {
		// A window's worth of bytes without a window's worth of syncs: no
		// longer sync-heavy. countSyncLocked judges only at syncs, and a
		// bulk load may not sync at all: without this, every segment it
		// filled after a sync-heavy spell would be zero-filled first,
		// twice the disk writes for nothing.
		s.heavy = false
		s.wantZero.Store(false)
		s.winSyncs, s.winBytes = 0, 0
	}
	if half := s.opts.SegmentSize / 2; seg.size >= half && seg.size-int64(n) < half {
		s.kickSpare() // a zero-filled spare waits for this (see spareLoop)
	}
	s.writeGen.Add(1)
	return seg, uint32(off), nil
}

func encodeInto(b []byte, h *header, pcrc uint32, payload, raw []byte) {
	if raw != nil {
		copy(b, raw)
		return
	}
	putHeader(b, h, pcrc)
	fastcopy.Copy(b[hdrSize:], payload)
}

// undoWriteLocked cuts whatever part of a failed write of n bytes at off
// was written, so that no half record stays behind a later one: the part
// inside the preallocated space is zeroed again, the part past it truncated
// (truncating frees space, so it succeeds on a full disk). If the zeroing
// fails the silo refuses writes until reopened.
func (s *Silo) undoWriteLocked(seg *segment, off int64, n int) {
	if off >= seg.alloc {
		_ = seg.f.Truncate(off)
		return
	}
	_ = seg.f.Truncate(seg.alloc)
	if err := writeZeros(seg.f, off, min(off+int64(n), seg.alloc)); err != nil && s.failed == nil {
		s.failed = mapErr("clear a failed write", err)
		s.log.Error("silo: could not clear a failed write; writes refused until reopen", "err", err)
	}
}

// flushLocked writes the write buffer to the active segment. A failure is
// sticky, like a failed fdatasync: records already acknowledged to their
// writers are not on disk, so the silo refuses writes and syncs until it is
// reopened (reads of the buffered records are still served).
func (s *Silo) flushLocked() error {
	if len(s.wbuf) == 0 {
		return nil
	}
	if s.failed != nil {
		return s.failed
	}
	seg := s.active
	off := seg.size - int64(len(s.wbuf))
	// The whole buffer, the head a flight wrote (wskip) included: that
	// flight may still be in the air, and once the buffer is gone a reader
	// of the record the head belongs to reads the file. Writing the same
	// bytes twice, even at once, leaves them as they are.
	if _, err := seg.f.WriteAt(s.wbuf, off); err != nil {
		s.failed = mapErr("write", err)
		s.log.Error("silo: writing buffered records failed; writes refused until reopen", "err", err)
		return s.failed
	}
	s.wbuf, s.wskip = s.wbuf[:0], 0
	return nil
}

// nextBoundary returns the first writeAlign boundary past the part of the
// write buffer already written (the buffer starts at file offset start).
func (s *Silo) nextBoundary(start int64) int64 {
	return (start+int64(s.wskip))/writeAlign*writeAlign + writeAlign
}

// copyBufferedLocked reports whether the record at l is still in the write
// buffer or in a buffer being written, and copies it into dst (of its
// size) when dst is not nil (s.mu held, shared or exclusive). A record is
// always whole in one buffer: buffers hold whole records.
func (s *Silo) copyBufferedLocked(seg *segment, l loc, dst []byte) bool {
	return s.splitBufferedLocked(seg, l, dst, nil, nil)
}

// splitBufferedLocked is copyBufferedLocked copying the record into a, b
// and c in turn: len(a) bytes into a, the next len(b) into b, the rest
// into c.
func (s *Silo) splitBufferedLocked(seg *segment, l loc, a, b, c []byte) bool {
	if seg == s.active && len(s.wbuf) > 0 {
		if within(s.wbuf, seg.size-int64(len(s.wbuf)), l, a, b, c) {
			return true
		}
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for _, fl := range s.flights {
		if fl.seg == seg && within(fl.buf, fl.off, l, a, b, c) {
			return true
		}
	}
	return false
}

// mayBufferLocked reports whether some record of seg may still be in a
// write buffer or a flight rather than in its file. With the silo's lock
// held (read or write) no flight starts (fly1Locked needs the write lock)
// and the active segment stays the active one, so false holds until the
// lock is released: the records of seg can be read from its file.
func (s *Silo) mayBufferLocked(seg *segment) bool {
	if seg == s.active && len(s.wbuf) > 0 {
		return true
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for _, fl := range s.flights {
		if fl.seg == seg {
			return true
		}
	}
	return false
}

// within reports whether buf, which holds the segment's bytes from offset
// start, holds all of the record at l, and copies it into a, b and c as
// splitBufferedLocked does if so (all nil: it only reports).
func within(buf []byte, start int64, l loc, a, b, c []byte) bool {
	i := int64(l.off) - start
	if i < 0 || i+l.size() > int64(len(buf)) {
		return false
	}
	copy3(buf[i:i+l.size()], a, b, c)
	return true
}

// copy3 copies src into a, b and c in turn (fastcopy: a payload in a
// record is rarely aligned with the reader's buffer).
func copy3(src, a, b, c []byte) {
	src = src[fastcopy.Copy(a, src):]
	src = src[fastcopy.Copy(b, src):]
	fastcopy.Copy(c, src)
}

// Full write buffers are written to their segment outside the silo's lock,
// so that writers keep appending (and hashing, and copying) while the
// kernel takes 2 MiB into the page cache: a flight. One goroutine writes
// the flights in order, one at a time: concurrent pwrites to one file
// contend for its inode lock in the kernel (with four in the air, a 4 KiB
// random write run spent 3.5x the system CPU in pwrite: 7.9 s against
// 2.25 s for 4 GiB, BenchmarkVolume/RandWrite4K in internal/node), and an
// appender that waited for the previous flight under the silo's lock made
// the parallel push serial again. Reads of records in a flight are served
// from its buffer until the write is done; Sync waits for every flight
// before it fdatasyncs, and compaction before it reads a segment. A failed
// flight is sticky, like a failed buffer write.

// maxFlights bounds the buffers queued or being written (8 MiB): a writer
// of pieces or records that finds that many waits for the flight writer
// before it takes the silo's lock (waitFlightRoom). It must not wait under
// the lock: readers need it, and a 2 MiB flight can take milliseconds when
// the kernel has to find (or compact) memory for a 2 MiB folio. Waiting
// under the lock, with a cluster node dead (more pieces per write, as
// handoffs), cut the client's IOPS to 0.38x of before the kill against
// 0.77x (benchnbd -heal-only -heal-rates 0).
const maxFlights = 4

// flyQueue is the capacity of the flight writer's queue: above maxFlights,
// so that an appender (which holds the lock) never waits on it in
// practice: appenders that do not wait for room (seals, compaction, marks)
// and a burst of writers that all found room add a few.
const flyQueue = 64

// waitFlightRoom waits, without the silo's lock, until fewer than
// maxFlights flights are queued or being written.
func (s *Silo) waitFlightRoom() {
	s.fmu.Lock()
	for len(s.flights) >= maxFlights {
		s.fdone.Wait()
	}
	s.fmu.Unlock()
}

// flight is a full write buffer holding seg's bytes from off; its first
// skip bytes were written by the flight before it (see writeAlign).
type flight struct {
	seg  *segment
	off  int64
	skip int
	buf  []byte
	done chan struct{}
}

var wbufPool = sync.Pool{New: func() any { b := make([]byte, 0, writeBufSize); return &b }}

// launchLocked hands the whole write buffer to the flight writer and
// starts a fresh one.
func (s *Silo) launchLocked() error {
	if len(s.wbuf) == 0 {
		return nil
	}
	if s.failed != nil {
		return s.failed
	}
	s.fly1Locked(s.active.size-int64(len(s.wbuf)), s.wbuf, s.wskip)
	s.wbuf, s.wskip = (*wbufPool.Get().(*[]byte))[:0], 0
	return nil
}

// launchAlignedLocked hands the write buffer, which starts at file offset
// start and ends with the record of n bytes just appended at off, to the
// flight writer up to the boundary that record reaches (see writeAlign).
// A record that crosses the boundary starts the fresh buffer, whole, with
// its head marked as written.
func (s *Silo) launchAlignedLocked(start, off int64, n int) error {
	if s.failed != nil {
		return s.failed
	}
	b := s.nextBoundary(start)
	old := s.wbuf
	s.fly1Locked(start, old[:b-start], s.wskip)
	s.wbuf, s.wskip = (*wbufPool.Get().(*[]byte))[:0], 0
	if end := off + int64(n); end > b {
		s.wbuf = append(s.wbuf, old[off-start:end-start]...)
		s.wskip = int(b - off)
	}
	return nil
}

// fly1Locked queues buf, the active segment's bytes from file offset
// start, for the flight writer.
func (s *Silo) fly1Locked(start int64, buf []byte, skip int) {
	seg := s.active
	fl := &flight{seg: seg, off: start, skip: skip, buf: buf, done: make(chan struct{})}
	s.fmu.Lock()
	s.flights = append(s.flights, fl)
	s.fmu.Unlock()
	seg.mu.RLock() // the segment stays open until the write is done
	s.flyQ <- fl   // the writer never takes s.mu: waiting here (rare: flyQueue) is safe
}

// flyLoop writes the flights in order until flyQ is closed.
func (s *Silo) flyLoop() {
	defer close(s.flyDone)
	for fl := range s.flyQ {
		s.fly(fl)
	}
}

// fly writes a flight's buffer and retires the flight.
func (s *Silo) fly(fl *flight) {
	_, err := fl.seg.f.WriteAt(fl.buf[fl.skip:], fl.off+int64(fl.skip))
	fl.seg.mu.RUnlock()
	s.fmu.Lock()
	s.flights = slices.DeleteFunc(s.flights, func(f *flight) bool { return f == fl })
	s.fdone.Broadcast()
	if err != nil && s.flightE == nil {
		s.flightE = mapErr("write", err)
		s.flightFailed.Store(true)
		s.log.Error("silo: writing buffered records failed; writes refused until reopen", "err", err)
	}
	s.fmu.Unlock()
	close(fl.done)
	b := fl.buf[:0]
	wbufPool.Put(&b)
}

// waitFlights waits for the flights in the air now and returns the error
// of any failed flight. It must not be called with s.mu held exclusively
// by a caller that the flights wait for (they never take s.mu).
func (s *Silo) waitFlights() error {
	s.fmu.Lock()
	fls := slices.Clone(s.flights)
	s.fmu.Unlock()
	for _, fl := range fls {
		<-fl.done
	}
	return s.flightErr()
}

// flightErr returns the error of a failed flight, or nil.
func (s *Silo) flightErr() error {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return s.flightE
}

// fetchRecord reads the bytes of the record at l of seg into buf (grown as
// needed) and returns them, unchecked. It is called with s.mu held shared
// and releases it.
func (s *Silo) fetchRecord(seg *segment, l loc, buf []byte) ([]byte, error) {
	n := int(l.size())
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if s.copyBufferedLocked(seg, l, buf) {
		s.mu.RUnlock()
		return buf, nil
	}
	seg.mu.RLock()
	s.mu.RUnlock()
	_, err := seg.f.ReadAt(buf, int64(l.off))
	seg.mu.RUnlock()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return buf, fmt.Errorf("silo: segment %s offset %d: short record: %w", seg.name, l.off, blocks.ErrCorrupt)
		}
		return buf, mapErr("read", err)
	}
	return buf, nil
}

// fetchSplit is fetchRecord reading the record's header into hb (hdrSize
// bytes) and its payload into a and b in turn (l.n bytes in all), from a
// write buffer, the segment's mapping, or else with one system call from a
// file that can (sr; only with b empty): no copy of the payload
// afterwards. With sr nil, a record it would have to pread is
// errUnmapped. It is called with s.mu held shared and releases it.
func (s *Silo) fetchSplit(seg *segment, l loc, sr splitReader, hb, a, b []byte) error {
	if s.splitBufferedLocked(seg, l, hb, a, b) {
		s.mu.RUnlock()
		return nil
	}
	alloc := seg.alloc
	seg.mu.RLock()
	s.mu.RUnlock()
	var err error
	switch m := s.mapping(seg, alloc); {
	case int64(l.off)+l.size() <= int64(len(m)):
		err = copyMapped(seg, l.off, m[l.off:int64(l.off)+l.size()], hb, a, b)
	case sr == nil:
		err = errUnmapped
	case len(a) == 0:
		_, err = seg.f.ReadAt(hb, int64(l.off))
	default:
		_, err = sr.ReadSplitAt(hb, a, int64(l.off))
	}
	seg.mu.RUnlock()
	switch {
	case err == nil, errors.Is(err, errUnmapped):
		return err
	case errors.Is(err, io.EOF):
		return fmt.Errorf("silo: segment %s offset %d: short record: %w", seg.name, l.off, blocks.ErrCorrupt)
	}
	return mapErr("read", err)
}

// errUnmapped: fetchSplit found the record in no buffer and no mapping,
// and was given no file to read it from.
var errUnmapped = errors.New("silo: record not mapped")

// checkSplit is checkFetched for a record fetched by fetchSplit, its
// payload in a and b.
func checkSplit(seg *segment, l loc, hb, a, b []byte, h *header) error {
	if err := decodeHeader(hb, h); err != nil {
		return fmt.Errorf("silo: segment %s offset %d: %v: %w", seg.name, l.off, err, blocks.ErrCorrupt)
	}
	if h.n != l.n || int(h.n) != len(a)+len(b) ||
		crc32c.Update(crc32c.Update(crc32c.Checksum(a), b), hb[:76]) != h.crc {
		return fmt.Errorf("silo: segment %s offset %d: checksum mismatch: %w", seg.name, l.off, blocks.ErrCorrupt)
	}
	return nil
}

// checkFetched checks the header and checksum of a record fetched from l.
func checkFetched(seg *segment, l loc, buf []byte, h *header) error {
	if err := decodeHeader(buf, h); err != nil {
		return fmt.Errorf("silo: segment %s offset %d: %v: %w", seg.name, l.off, err, blocks.ErrCorrupt)
	}
	if h.n != l.n || !checkRecord(buf, h) {
		return fmt.Errorf("silo: segment %s offset %d: checksum mismatch: %w", seg.name, l.off, blocks.ErrCorrupt)
	}
	return nil
}

// rollLocked seals the active segment and makes the spare (or, if none is
// ready, a new segment) active. Sealing writes out the buffer and truncates
// the zero tail; it does not sync: the sealed segment joins s.unsynced, and
// the next Sync makes it durable before it completes (a writer that fills
// segments faster than the disk takes them does not wait for the disk at
// every roll; the page cache absorbs bursts, as it does for a plain file).
// So every segment before the one holding the last sync's durable mark is
// durable whole (see unsureFrom). The new segment starts with a sync mark,
// so that a sync completing while it is active is vouched for by the
// records written after it even if the sync found the segment empty, and
// which records the sealed segment's size, so that open can tell a sealed
// segment whose last records a crash lost (pages never written back read
// as zeros, like a preallocated tail) from one that ended there. When
// maxUnsynced segments wait for a sync, the spare maker runs one, which
// bounds what a crash leaves to be verified at open.
func (s *Silo) rollLocked() error {
	if err := s.flushLocked(); err != nil {
		return err
	}
	old := s.active
	if old.alloc > old.size {
		if err := old.f.Truncate(old.size); err != nil {
			return mapErr("truncate sealed segment", err)
		}
		old.alloc = old.size
	}
	id := old.id + 1
	seg, err := s.takeSpare(id)
	if err != nil {
		// old stays the active segment (every append tries again), and
		// is listed as sealed only once it is.
		return err
	}
	s.unsynced = append(s.unsynced, old)
	if len(s.unsynced) >= maxUnsynced {
		s.sealSync.Store(true)
	}
	s.segs[id] = seg
	s.order = append(s.order, id)
	s.active = seg
	s.wantZero.Store(s.heavy)
	s.kickSpare()
	h := header{typ: recMark, b: uint64(old.size)} // the sealed segment's size (see unsureFrom)
	if _, _, err := s.appendLocked(&h, 0, nil, nil); err != nil {
		return err
	}
	s.kickCompactor()
	return nil
}

// takeSpare returns the spare segment if it has id, else makes segment id
// now, reserved (the writer waits for a fallocate, not for zeros). Called
// with s.mu held.
func (s *Silo) takeSpare(id uint32) (*segment, error) {
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	sp := s.spare
	s.spare = nil
	s.zeroSpare.Store(false)
	if sp != nil {
		if sp.id == id {
			return sp, nil
		}
		s.dropFile(sp)
		if err := s.fs.SyncDir(s.dir); err != nil {
			return nil, mapErr("sync directory", err)
		}
	}
	seg, err := s.makeSegment(id, false)
	if errors.Is(err, blocks.ErrNoSpace) {
		s.holdSpares()
	}
	for size := s.opts.SegmentSize / 2; errors.Is(err, blocks.ErrNoSpace); size /= 2 {
		// A nearly full disk: reserve what is left, or nothing (appends
		// past the reserved end extend the file, one pwrite each, until
		// the disk is full: a write then fails with ErrNoSpace at once,
		// and the disk is used to its end). Without this, every append
		// tried to make a whole segment again and failed: a FLUSH of
		// 512 MiB of dirty chunks onto a disk with 35 MiB free took 7
		// minutes to report ENOSPC (4 ms a chunk).
		if size < minFallbackSegment {
			size = 0
		}
		seg, err = s.makeSegmentSized(id, false, size)
		if size == 0 {
			break
		}
	}
	return seg, err
}

// holdSpares stops the spare maker for spareHoldOff: a whole segment did
// not fit, and each try of one takes the space left until it fails (its
// zeros or its fallocate), failing the writes that run meanwhile.
func (s *Silo) holdSpares() {
	s.spareHold.Store(time.Now().Add(spareHoldOff).UnixNano())
}

// spareHoldOff is how long the spare maker rests after a segment did not
// fit on the disk.
const spareHoldOff = 10 * time.Second

// minFallbackSegment is the least a segment made on a nearly full disk
// reserves before the writer gives up reserving (see takeSpare).
const minFallbackSegment = 1 << 20

// makeSegment creates segment file id, preallocated to SegmentSize bytes:
// written with zeros when zero is set or the file system cannot fallocate,
// else reserved with fallocate (see above); synced, its directory entry
// synced. On failure it removes what it made.
func (s *Silo) makeSegment(id uint32, zero bool) (*segment, error) {
	return s.makeSegmentSized(id, zero, s.opts.SegmentSize)
}

// makeSegmentSized is makeSegment preallocating size bytes (0: none; the
// segment then grows as records are appended).
func (s *Silo) makeSegmentSized(id uint32, zero bool, size int64) (*segment, error) {
	name := filepath.Join(s.dir, segName(id))
	f, err := s.fs.Create(name)
	if err != nil {
		return nil, mapErr("create segment", err)
	}
	seg := &segment{id: id, name: name, f: f, alloc: size}
	err = errAllocUnsupported
	if size == 0 {
		err = nil
	} else if a, ok := f.(allocator); ok && !zero {
		err = a.Allocate(size)
	}
	if errors.Is(err, errAllocUnsupported) {
		seg.zeroed = true
		err = writeZeros(f, 0, size)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = s.fs.SyncDir(s.dir)
	}
	if err != nil {
		s.dropFile(seg)
		return nil, mapErr("create segment", err)
	}
	return seg, nil
}

// dropFile truncates (returning its space at once), closes and removes a
// segment file that holds no records. The removal is durable at the next
// SyncDir.
func (s *Silo) dropFile(seg *segment) {
	_ = seg.f.Truncate(0)
	seg.f.Close()
	_ = s.fs.Remove(seg.name)
}

// writeZeros writes zero bytes over [from, to) of f.
func writeZeros(f File, from, to int64) error {
	for off := from; off < to; {
		n := min(to-off, zeroChunk)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// allZero reports whether [from, to) of f holds only zero bytes (bytes past
// the end of the file count as zero).
func allZero(f File, from, to int64) (bool, error) {
	buf := make([]byte, min(to-from, zeroChunk))
	for off := from; off < to; {
		n := min(to-off, int64(len(buf)))
		m, err := f.ReadAt(buf[:n], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		if !isZero(buf[:m]) {
			return false, nil
		}
		if m < int(n) {
			return true, nil
		}
		off += n
	}
	return true, nil
}

func isZero(b []byte) bool {
	for len(b) >= len(zeros) {
		if !bytes.Equal(b[:len(zeros)], zeros) {
			return false
		}
		b = b[len(zeros):]
	}
	return bytes.Equal(b, zeros[:len(b)])
}

// kickSpare asks the spare maker for a spare after the active segment.
func (s *Silo) kickSpare() {
	select {
	case s.spareKick <- struct{}{}:
	default:
	}
}

// spareLoop keeps one spare segment ready (the one after the active), so
// that rolling to a new segment does not wait for its preallocation.
func (s *Silo) spareLoop(ctx context.Context) {
	defer close(s.spareDone)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.spareKick:
		}
		s.mu.RLock()
		if s.closed || s.failed != nil {
			s.mu.RUnlock()
			continue
		}
		id := s.active.id + 1
		// A zero-filled spare costs a segment's worth of disk writes: while
		// the active segment is less than half full, it can wait (the
		// writer kicks again at half), so that a sync-heavy writer does not
		// compete with it sooner than it must.
		early := s.active.size < s.opts.SegmentSize/2 && s.active.zeroed
		s.mu.RUnlock()
		if s.sealSync.CompareAndSwap(true, false) {
			if err := s.Sync(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, blocks.ErrClosed) {
				s.log.Warn("silo: background sync of sealed segments failed", "err", err)
			}
		}
		zero := s.wantZero.Load()
		var spareErr error
		s.spareMu.Lock()
		if sp := s.spare; sp != nil && zero && !sp.zeroed {
			// The workload turned sync-heavy: replace the reserved spare
			// with a zero-filled one (the writer then rolls to it early).
			s.spare = nil
			s.dropFile(sp)
		}
		if s.spare == nil && !s.closing.Load() && !(zero && early) && time.Now().UnixNano() >= s.spareHold.Load() {
			sp, err := s.makeSegment(id, zero)
			if errors.Is(err, blocks.ErrNoSpace) {
				s.holdSpares()
			}
			if err != nil {
				spareErr = err
			} else {
				s.spare = sp
				s.zeroSpare.Store(sp.zeroed)
			}
		}
		s.spareMu.Unlock()
		if spareErr != nil {
			// Rolling will try again, and report the error to a writer. A
			// writer that rolled meanwhile made segment id itself: no news
			// (the next round prepares the one after it). s.mu is taken
			// only now: a rolling writer holds it while it takes spareMu.
			s.mu.RLock()
			moved := s.active.id >= id
			s.mu.RUnlock()
			if !moved {
				s.log.Warn("silo: could not prepare a spare segment", "segment", id, "err", spareErr)
			}
		}
	}
}
