package silo

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"cairn/blocks"
	"cairn/internal/crc32c"
)

var _ blocks.PieceViewer = (*Silo)(nil)

// Views: pieces handed out in place, in their segment's mapping.
//
// A large read served over the network was read into a buffer (one copy,
// from cold page-cache memory: a quarter of the server's CPU in a 1 MiB
// sequential read over NBD) and then written to the socket from there (a
// second copy). A view skips the first: the caller writes the socket
// straight from the mapping. Each view pins its segment's mapping (mmap.go,
// pin): compaction and Close go on as before, closing and removing the
// file, and only the munmap waits for the last view's release, so a slow
// consumer delays no one; the pages of a removed file stay readable until
// then.
//
// A view is verified (record checksum, type and key, as GetPiece verifies)
// before it is handed out; segments are append-only and records never
// change in place, so the bytes stay what was verified. Anything else is
// left to the caller's ordinary read: a record still in the write buffers
// or past the mapping, a piece marked bad, a failed check (which the
// ordinary read then reports and marks), a fault on the mapping.

// ViewPieces implements blocks.PieceViewer: views[i] is the piece under
// keys[i] (its record's payload) in its segment's mapping, or nil.
func (s *Silo) ViewPieces(ctx context.Context, keys []blocks.Addr, views [][]byte) (release func()) {
	if ctx.Err() != nil || len(keys) == 0 {
		return blocks.NoRelease
	}
	ps := pinSets.Get().(*pinSet)
	ps.s = s
	recs := ps.recs[:0]
	s.mu.RLock()
	if s.checkOpen() != nil {
		s.mu.RUnlock()
		ps.release()
		return blocks.NoRelease
	}
	if prefetchViews {
		warmSlots(s.index, keys)
	}
	// The segments met so far (up to eight, then replaced in turn): a
	// scattered read alternates between a few segments (the pushes that
	// wrote its chunks), and each is looked up, asked whether it holds
	// records not yet written to its file (a lock), mapped and pinned
	// once per call rather than at every switch.
	var met [8]segView
	nmet, evict := 0, 0
	var sv *segView
	for i, k := range keys {
		e, ok := s.index.get(k)
		if !ok || e.bad {
			continue
		}
		if sv == nil || sv.seg.id != e.seg {
			sv = nil
			for j := range nmet {
				if met[j].seg.id == e.seg {
					sv = &met[j]
					break
				}
			}
			if sv == nil {
				seg := s.segs[e.seg]
				if seg == nil {
					continue
				}
				if nmet < len(met) {
					sv = &met[nmet]
					nmet++
				} else {
					sv = &met[evict%len(met)]
					evict++
				}
				*sv = s.viewSegLocked(seg, ps)
			}
		}
		if sv.buffered && s.copyBufferedLocked(sv.seg, e.loc, nil) {
			continue
		}
		end := int64(e.off) + e.size()
		if end > int64(len(sv.m)) {
			continue
		}
		recs = append(recs, viewRec{i: int32(i), seg: sv.seg, l: e.loc, rec: sv.m[e.off:end], moved: e.moved})
	}
	s.mu.RUnlock()
	ps.recs = recs
	if s.relocQ != nil && scattered(recs) {
		s.queueRelocation(recs, keys)
	}
	if prefetchViews {
		warmRecords(recs)
	}
	// The checks run without the silo's lock: a checksum of a 1 MiB read
	// takes tens of microseconds.
	checkViews(recs, keys, views)
	if len(ps.segs) == 0 {
		ps.release()
		return blocks.NoRelease
	}
	return ps.release
}

// segView is a segment as ViewPieces reads it: its mapping (nil if it
// could not be mapped) and whether records of it may still be buffered.
type segView struct {
	seg      *segment
	m        []byte
	buffered bool
}

// viewSegLocked maps seg (at its first read) and pins it into ps, under
// its read lock, and asks whether it may hold buffered records (see
// mayBufferLocked). The caller holds the silo's lock.
func (s *Silo) viewSegLocked(seg *segment, ps *pinSet) segView {
	sv := segView{seg: seg, buffered: s.mayBufferLocked(seg)}
	seg.mu.RLock()
	sv.m = s.mapping(seg, seg.alloc)
	if sv.m != nil {
		pin(seg)
		ps.segs = append(ps.segs, seg)
	}
	seg.mu.RUnlock()
	return sv
}

// checkViews sets views[r.i] to the piece of each record r of recs that
// checks as GetPiece checks it (checkView), four records at a time: their
// checksums are computed in one interleaved pass (crc32c.Update4), whose
// cache misses overlap, where one record after another leaves few in
// flight. Records of scattered places in the page cache, as a large read
// after random writes finds them, are checked in about two thirds of the
// time (BenchmarkViewPieces1M). A group with a fault on its mapping is
// checked again record by record, so that only the record at fault is
// left out.
func checkViews(recs []viewRec, keys []blocks.Addr, views [][]byte) {
	i := 0
	for ; checkFour && i+4 <= len(recs); i += 4 {
		g := (*[4]viewRec)(recs[i : i+4])
		if !checkView4(g, keys, views) {
			for _, r := range g {
				views[r.i] = checkView(r, keys[r.i])
			}
		}
	}
	for _, r := range recs[i:] {
		views[r.i] = checkView(r, keys[r.i])
	}
}

// checkFour turns on checkViews' checks four at a time (a benchmark's
// switch).
var checkFour = true

// checkView4 is checkView of four records, setting the views of those
// that check. It returns false, having set none, when the mappings
// faulted.
func checkView4(g *[4]viewRec, keys []blocks.Addr, views [][]byte) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	var h [4]header
	var good [4]bool
	var crc [4]uint32
	var recs, payloads [4][]byte
	for j, r := range g {
		good[j] = viewHeader(r, keys[r.i], &h[j])
		recs[j], payloads[j] = r.rec, r.rec[hdrSize:]
	}
	crc32c.Update4(&crc, &payloads)
	recordCRC4(&crc, &recs)
	var out [4][]byte
	for j := range g {
		if good[j] && crc[j] == h[j].crc {
			out[j] = payloads[j]
		}
	}
	for j, r := range g {
		views[r.i] = out[j]
	}
	return true
}

// checkView returns the piece of the record r in a mapping if it checks
// as GetPiece checks it, else nil (a fault on the mapping included).
func checkView(r viewRec, key blocks.Addr) (piece []byte) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			piece = nil
		}
	}()
	var h header
	if !viewHeader(r, key, &h) || !checkRecord(r.rec, &h) {
		return nil
	}
	return r.rec[hdrSize:]
}

// viewHeader decodes r's header into h and reports whether it is the
// header of key's piece record at r's place, as GetPiece requires
// (checkFetched's checks but the checksum, and the type and key); the
// record's checksum is left to the caller.
func viewHeader(r viewRec, key blocks.Addr, h *header) bool {
	// decodeFields: the record checksum the caller checks covers the
	// header's bytes too.
	return decodeFields(r.rec, h) == nil && h.n == r.l.n && len(r.rec) == hdrSize+int(h.n) &&
		h.typ == recPiece && h.key == key
}

// viewRec is a record ViewPieces checks: keys[i]'s, at l in seg, whose
// bytes are rec in the mapping.
type viewRec struct {
	i     int32
	moved bool // the record was moved by read relocation before
	seg   *segment
	l     loc
	rec   []byte
}

// pinSet is the segments one ViewPieces pinned, released together.
type pinSet struct {
	s    *Silo
	segs []*segment
	recs []viewRec // scratch
}

var pinSets = sync.Pool{New: func() any { return new(pinSet) }}

// release unpins the set's segments and pools it.
func (ps *pinSet) release() {
	for _, seg := range ps.segs {
		ps.s.unpin(seg)
	}
	clear(ps.segs)
	clear(ps.recs)
	ps.segs, ps.recs, ps.s = ps.segs[:0], ps.recs[:0], nil
	if cap(ps.recs) > maxKeptWants {
		ps.recs = nil
	}
	pinSets.Put(ps)
}

// prefetchViews turns on the loads ahead in ViewPieces (a benchmark's
// switch): warmSlots and warmRecords. The memory a large read touches is
// far larger than the caches, and each piece met three misses in turn:
// its index slot, its record's header, then the record itself (the CRC),
// each waiting for the one before (a profile of the NBD server, fio's
// 1 MiB sequential reads, put about 6% of its CPU in the first two and a
// third in the CRC, most of it waiting for memory). BenchmarkViewPieces1M
// (1 MiB from 512 MiB of pieces, four interleaved pairs on a busy 2-core
// machine, CPU per MiB): 168 to 179 µs with the loads ahead, 226 to 241
// without. The sums go to warmSink once per call, not per record (an
// atomic per record would bounce its cache line between concurrent
// reads).
//
// Until the twentieth session checkView also asked for every line of the
// next record (PREFETCHT0 hints, each 64 bytes) while it checked the one
// at hand, which the thirteenth measured at 130-135 µs per MiB against
// 180-183 without. On the development VM of the twentieth session (the
// same 2-core "AMD EPYC" as reported, evidently another host: the
// benchmark ran far faster) the hints cost instead, three runs of each
// setting: records in the order they were written, 111-112 µs per MiB
// with every warming, 80 without the hints, 77 without the hints and
// warmRecords, 135 without warmSlots, 100 with none; records read in a
// scattered order, 198-199 with every warming, 197-199 without the hints,
// 229-233 without the hints and warmRecords, 249-260 with none. The
// hardware's own prefetcher follows a run of records; what it cannot
// guess, a slot's place and the next record's start after a jump, the
// two loads ahead still give it. Over NBD (fio's 1 MiB sequential reads
// after the suite's write history, three interleaved pairs): 283-307 µs
// of server CPU per MiB without the hints (361 in one noisy run) against
// 317-332 (442 and 494 in two).
var prefetchViews = true

// warmSink keeps the loads of warmSlots and warmRecords.
var warmSink atomic.Uint32

// warmSlots loads the home slot of every key in ix's current table before
// the lookups: independent loads, which the CPU overlaps, where each
// lookup's miss (the table is far larger than the caches) would wait for
// the one before. The caller holds the silo's lock.
func warmSlots(ix *index, keys []blocks.Addr) {
	t := &ix.cur
	if t.n == 0 {
		return
	}
	var acc uint32
	for i := range keys {
		acc += t.slots[ix.hash(&keys[i])>>t.shift].flags
	}
	warmSink.Add(acc)
}

// warmRecords loads the first byte of every record before the checks (as
// warmSlots does the slots). A record is mapped file memory, which can
// fault: a fault is left to the check, which reports it.
func warmRecords(recs []viewRec) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() { _ = recover() }()
	var acc byte
	for i := range recs {
		acc += recs[i].rec[0] + recs[i].rec[hdrSize-1]
	}
	warmSink.Add(uint32(acc))
}
