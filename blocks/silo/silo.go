package silo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"cairn/blocks"
	"cairn/internal/crc32c"
)

var (
	_ blocks.Holder  = (*Silo)(nil)
	_ blocks.Walker  = (*Silo)(nil)
	_ blocks.Journal = (*Silo)(nil)

	_ blocks.Local            = (*Silo)(nil)
	_ blocks.PieceGetterInto  = (*Silo)(nil)
	_ blocks.PieceSplitGetter = (*Silo)(nil)
	_ blocks.WriteBehinder    = (*Silo)(nil)
)

// IsLocal implements blocks.Local: it reports true. GetPiece and
// GetPieceInto return only bytes read from this node's disk (or the write
// buffer) that pass the record checksum, which covers the record header,
// key included, and the payload, and whose key is the one asked for; no
// method retains a slice passed to it.
func (s *Silo) IsLocal() bool { return true }

var errNoSpace = blocks.ErrNoSpace

// Defaults and bounds of Options.
const (
	DefaultSegmentSize  = 64 << 20
	DefaultCompactRatio = 0.5
	MinSegmentSize      = 4 << 10
	MaxSegmentSize      = 1 << 30
)

// Options configures a Silo. The zero value selects the defaults.
type Options struct {
	// SegmentSize is the size at which the active segment is sealed and a
	// new one started (a record is never split, so a segment may exceed it
	// by one record). Default 64 MiB; it must lie in
	// [MinSegmentSize, MaxSegmentSize]. It may change between opens.
	SegmentSize int64
	// CompactRatio is the fraction of a sealed segment's bytes that must be
	// dead (deleted, superseded or trimmed) before background compaction
	// rewrites it. Default 0.5; it must lie in (0, 1].
	CompactRatio float64
	// Logger receives corruption reports and compaction events. Default:
	// discard.
	Logger *slog.Logger
	// FS is the file system to use (a test hook). Default: the operating
	// system's.
	FS FS
	// Reserve is the room, in bytes, kept back on the disk for deletions,
	// journal records and compaction once the disk is full (see
	// reserve.go). 0: half a segment and 8 MiB where the file system can
	// fallocate, else none; negative: none.
	Reserve int64
	// Relocate turns read relocation on: pieces that large reads find
	// scattered are copied once into the order they were read (see
	// relocate.go, which says why it is off by default).
	Relocate bool
}

func (o *Options) setDefaults() error {
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < MinSegmentSize || o.SegmentSize > MaxSegmentSize {
		return fmt.Errorf("silo: segment size %d outside [%d, %d]", o.SegmentSize, MinSegmentSize, MaxSegmentSize)
	}
	if o.CompactRatio == 0 {
		o.CompactRatio = DefaultCompactRatio
	}
	if !(o.CompactRatio > 0 && o.CompactRatio <= 1) {
		return fmt.Errorf("silo: compact ratio %v outside (0, 1]", o.CompactRatio)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FS == nil {
		o.FS = osFS{}
	}
	return nil
}

// Stats describes a silo's contents and footprint.
type Stats struct {
	Pieces    int64 // live pieces
	LiveBytes int64 // payload bytes of live pieces and journal records
	DiskBytes int64 // bytes of all segment files, the preallocated included
	Prealloc  int64 // bytes of DiskBytes preallocated for appends (zeros)
	Segments  int   // segment files holding records
	Relocated int64 // pieces read relocation moved since open (relocate.go)
}

// loc is where a record lives: segment id, offset, payload length.
type loc struct {
	seg, off, n uint32
}

func (l loc) size() int64 { return hdrSize + int64(l.n) }

// entry is the index entry of a live piece. The index (index.go) stores
// it with its key in one 64-byte slot.
type entry struct {
	loc
	bad   bool // the record failed its checksum; a PutPiece may replace it
	moved bool // read relocation copied the record once: never again (relocate.go)
	stamp uint64
}

// tombInfo remembers, for a key whose older put records may still sit in
// some segment, the oldest such segment and the key's latest tombstone.
type tombInfo struct {
	minSeg    uint32 // oldest segment that may hold a put of the key
	tombSeg   uint32 // segment of the latest tombstone (0: none)
	tombOff   uint32
	tombStamp uint64
}

// marker locates a seal or trim record.
type marker struct {
	loc
	stamp uint64
}

type jrec struct {
	loc
	epoch blocks.Epoch
	stamp uint64
}

type logState struct {
	sealed     blocks.Epoch
	seal       marker // zero if never sealed
	trimBefore uint64
	trim       marker // zero if never trimmed
	recs       map[uint64]jrec
}

type segment struct {
	id    uint32
	name  string
	f     File
	mu    sync.RWMutex // held shared by readers of f, exclusively to close it
	size  int64        // bytes of records, buffered ones included (guarded by Silo.mu)
	alloc int64        // the file's length: size plus a preallocated zero tail (guarded by Silo.mu)
	live  int64        // bytes of live piece and journal records (guarded by Silo.mu)
	// synced is how far a completed sync reached in this segment (guarded
	// by Silo.mu); records written carry it (header.durable).
	synced int64
	// zeroed: the preallocated tail was written with zeros (not reserved
	// with fallocate); set when the segment is made, then read-only.
	zeroed bool
	mm     segMap // the read-only mapping reads copy from (see mmap.go)
}

type batch struct {
	done    chan struct{}
	gen     uint64 // the write generation the sync covers (0 until known; guarded by smu)
	err     error
	waiters int // callers queued (for tests)
}

// Silo is a node's local block storage: a blocks.Holder, blocks.Walker and
// blocks.Journal on append-only segment files in one directory. It is safe
// for concurrent use. See the package documentation for the model.
type Silo struct {
	dir  string
	fs   FS
	log  *slog.Logger
	opts Options
	lock io.Closer

	mu     sync.RWMutex // guards the fields below and segment size/live
	closed bool
	failed error // sticky: a sync failed, so writes are refused until reopen
	segs   map[uint32]*segment
	order  []uint32 // ids of segs, ascending
	active *segment
	stamp  uint64 // last stamp handed out
	index  *index // freed (empty) once closed
	tombs  map[blocks.Addr]tombInfo
	logs   map[blocks.ID]*logState
	drops  map[blocks.ID]marker // the latest drop (Trim to MaxUint64) per log
	live   int64                // LiveBytes
	ghosts []uint32             // removed segments whose removal may not be durable yet
	sweeps []*Sweep             // open garbage-collection sweeps (see sweep.go)
	wbuf   []byte               // records at the end of the active segment not yet written to its file
	wskip  int                  // the head of wbuf a flight already wrote (see writeAlign)
	maps   atomic.Int64         // segments mapped (see mmap.go)
	resv   reserve              // room kept for deletions on a full disk (reserve.go)
	// spareHold: unix nanoseconds until which the spare maker does not
	// try (the disk had no room for a segment; see holdSpares).
	spareHold atomic.Int64

	fmu          sync.Mutex  // guards flights and flightE; never held while taking mu
	fdone        *sync.Cond  // on fmu: a flight was retired (see waitFlightRoom)
	flights      []*flight   // full write buffers being written, oldest first (see active.go)
	flightE      error       // the first failed flight's error: sticky
	flightFailed atomic.Bool // flightE is set
	flyQ         chan *flight
	flyDone      chan struct{}

	prepWG sync.WaitGroup // the index's next table being prepared (prepIndexLocked)

	spareMu   sync.Mutex // guards spare; taken after mu, never before it
	spare     *segment   // a preallocated segment, the one after the active, or nil
	spareKick chan struct{}
	spareDone chan struct{}
	unsynced  []*segment  // sealed segments no sync has covered yet, oldest first (guarded by mu)
	sealSync  atomic.Bool // too many unsynced: the spare maker runs a Sync
	wantZero  atomic.Bool // the next spare is to be zero-filled (sync-heavy workload)
	zeroSpare atomic.Bool // the spare is ready and zero-filled

	// The sync-heavy detector (guarded by mu; see active.go): syncs in the
	// current window, the bytes appended since it began, and the verdict
	// of the last window.
	winSyncs int
	winBytes int64
	heavy    bool

	writeGen atomic.Uint64 // incremented under mu by every write
	syncs    atomic.Int64  // fdatasyncs run by Sync (for tests and benchmarks)

	smu        sync.Mutex // guards the group-commit fields below
	scond      *sync.Cond
	syncing    bool
	cur        *batch // the sync in flight (when syncing)
	next       *batch // the sync callers queue for
	durableGen uint64
	stopped    bool

	compactMu sync.Mutex // one compaction at a time
	kick      chan struct{}
	cancel    context.CancelFunc
	bgDone    chan struct{}
	relocQ    chan []blocks.Addr // keys for the read relocator (nil: off)
	relocDone chan struct{}
	relocated atomic.Int64
	relocHook func(blocks.Addr) // a test's: called between a move's read and its copy
	closing   atomic.Bool       // Close has begun: compaction stops
	closeOnce sync.Once
	closeErr  error
}

func segName(id uint32) string { return fmt.Sprintf("%016x.seg", id) }

func parseSegName(name string) (uint32, bool) {
	if len(name) != 20 || !strings.HasSuffix(name, ".seg") {
		return 0, false
	}
	v, err := strconv.ParseUint(name[:16], 16, 32)
	if err != nil || v == 0 {
		return 0, false
	}
	return uint32(v), true
}

// Open opens (creating if needed) the silo in dir, rebuilding its index
// from the segment files: sealed segments by their record headers, the
// active (last) segment by reading and verifying it whole and cutting off a
// torn tail. Only one Silo may have dir open at a time, across processes;
// a second Open fails. The Silo owns a background compaction goroutine
// until Close.
func Open(ctx context.Context, dir string, opts Options) (*Silo, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	fsys := opts.FS
	if err := fsys.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("silo: open %s: %w", dir, err)
	}
	lock, err := fsys.Lock(dir)
	if err != nil {
		return nil, fmt.Errorf("silo: open %s: %w", dir, err)
	}
	s := &Silo{
		dir:   dir,
		fs:    fsys,
		log:   opts.Logger.With("silo", dir),
		opts:  opts,
		lock:  lock,
		segs:  map[uint32]*segment{},
		index: newIndex(),
		tombs: map[blocks.Addr]tombInfo{},
		logs:  map[blocks.ID]*logState{},
		drops: map[blocks.ID]marker{},
		kick:  make(chan struct{}, 1),
		wbuf:  make([]byte, 0, writeBufSize),

		spareKick: make(chan struct{}, 1),
		spareDone: make(chan struct{}),
	}
	s.scond = sync.NewCond(&s.smu)
	err = s.load(ctx)
	if err == nil {
		err = s.openReserve()
	}
	if err != nil {
		s.closeFiles()
		s.index.free()
		lock.Close()
		return nil, err
	}
	s.flyQ, s.flyDone = make(chan *flight, flyQueue), make(chan struct{})
	s.fdone = sync.NewCond(&s.fmu)
	go s.flyLoop()
	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.bgDone = make(chan struct{})
	go s.compactLoop(bg)
	go s.spareLoop(bg)
	s.relocDone = make(chan struct{})
	if s.opts.Relocate {
		s.relocQ = make(chan []blocks.Addr, relocQueue)
		go s.relocLoop(bg)
	} else {
		close(s.relocDone)
	}
	s.kickCompactor()
	s.kickSpare()
	return s, nil
}

func (s *Silo) load(ctx context.Context) error {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return fmt.Errorf("silo: open %s: %w", s.dir, err)
	}
	var ids []uint32
	for _, n := range names {
		if id, ok := parseSegName(n); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if ids, err = s.dropEmptyTail(ctx, ids); err != nil {
		return err
	}
	// Segments before the last one a sync vouches for (see unsureFrom) are
	// durable whole: their headers are scanned. From it on, segments are
	// read whole and verified, and they end at the first torn record: the
	// segments after it hold only later writes, none of them synced.
	files := make([]File, len(ids))
	for i, id := range ids {
		f, err := s.fs.Open(filepath.Join(s.dir, segName(id)))
		if err != nil {
			return fmt.Errorf("silo: open segment: %w", err)
		}
		files[i] = f
		s.segs[id] = &segment{id: id, name: filepath.Join(s.dir, segName(id)), f: f}
		s.order = append(s.order, id)
	}
	full, err := s.unsureFrom(ctx, ids, files)
	if err != nil {
		return err
	}
	st := newScanState(s)
	for i, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		seg, f := s.segs[id], files[i]
		name := seg.name
		size, err := f.Size()
		if err != nil {
			return fmt.Errorf("silo: open segment %s: %w", name, err)
		}
		if size > math.MaxUint32 {
			// Offsets are 32 bits: no silo writes a segment this large.
			return fmt.Errorf("silo: open segment %s: %d bytes, over the 4 GiB a segment may hold", name, size)
		}
		visit := func(off int64, h *header) { st.apply(id, uint32(off), h) }
		bad := func(off, n int64, why error) {
			s.log.Warn("silo: corrupt bytes in segment", "segment", name, "offset", off, "length", n, "err", why)
		}
		var (
			after    int
			zeroTail bool
			end64    int64
		)
		fs := full[id]
		if fs != nil {
			end64, after, zeroTail = fs.emit(visit, bad)
		} else {
			end64, after, zeroTail, err = scanSegment(f, size, false, visit, bad)
			if err != nil {
				return fmt.Errorf("silo: scan segment %s: %w", name, err)
			}
		}
		torn := end64 < size && !zeroTail
		last := i == len(ids)-1
		// The next segment's roll mark records the size of the segment
		// before it, which is this one only when no segment between them
		// was compacted away. (A gap means one was: its compaction synced
		// every sealed segment first, this one whole included.)
		if !last && fs != nil && ids[i+1] == id+1 {
			if sealed, ok := full[ids[i+1]].sealedBefore(); ok && end64 < sealed {
				// Its last records were lost (their pages read as zeros):
				// a torn tail like any other.
				torn = true
			}
		}
		dropped := false
		if torn && !last {
			// Everything after a torn record was written after it, and no
			// sync covered it: drop the later segments.
			for _, lid := range ids[i+1:] {
				after += full[lid].intact()
				s.dropFile(s.segs[lid])
				delete(s.segs, lid)
			}
			s.order = s.order[:i+1]
			if err := s.fs.SyncDir(s.dir); err != nil {
				return mapErr("sync directory", err)
			}
			last, dropped = true, true
		}
		seg.size, seg.alloc = end64, size
		if fs != nil {
			// What survived is the base that later records vouch for: make
			// it durable first (a kill -9 may have left unsynced bytes in
			// the page cache).
			if err := f.Sync(); err != nil {
				return mapErr("sync", err)
			}
			if last {
				seg.synced = end64
			}
		}
		switch {
		case torn:
			level := slog.LevelWarn
			if after > 1 {
				level = slog.LevelError // more than a torn write: rot?
			}
			s.log.Log(ctx, level, "silo: cutting the segments after their longest valid prefix",
				"segment", name, "offset", end64, "length", size-end64, "intact_records_cut", after)
			fallthrough
		case end64 < size && !last:
			// A sealed segment keeps no zero tail (a crash may leave one
			// between sealing and its truncation).
			if err := f.Truncate(end64); err != nil {
				return mapErr("truncate segment", err)
			}
			if err := f.Sync(); err != nil {
				return mapErr("sync", err)
			}
			seg.alloc = end64
		}
		if last && seg.alloc < s.opts.SegmentSize {
			s.preallocActive(seg)
		}
		if dropped {
			break
		}
	}
	st.resolve()
	s.cleanupLocked()
	if len(ids) == 0 {
		seg, err := s.makeSegment(1, false)
		if err != nil {
			return err
		}
		s.segs[1] = seg
		s.order = append(s.order, 1)
	}
	s.active = s.segs[s.order[len(s.order)-1]]
	return nil
}

// unsureFrom finds the segments a crash may have left torn and reads them
// whole. Sealing does not sync a segment (the next Sync does, see
// rollLocked), so the unsure ones are the last segment and those before it
// back to the last one holding a record with a durable mark: that mark was
// written after a sync completed while its segment was active, and a Sync
// makes every sealed segment durable before it completes, so the segments
// before it are durable whole. It returns the full scans by segment id.
func (s *Silo) unsureFrom(ctx context.Context, ids []uint32, files []File) (map[uint32]*fullScan, error) {
	full := map[uint32]*fullScan{}
	for i := len(ids) - 1; i >= 0; i-- {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		size, err := files[i].Size()
		if err != nil {
			return nil, fmt.Errorf("silo: open segment %s: %w", segName(ids[i]), err)
		}
		if size > math.MaxUint32 {
			return nil, fmt.Errorf("silo: open segment %s: %d bytes, over the 4 GiB a segment may hold", segName(ids[i]), size)
		}
		fs, err := scanFull(files[i], size)
		if err != nil {
			return nil, fmt.Errorf("silo: scan segment %s: %w", segName(ids[i]), err)
		}
		full[ids[i]] = fs
		if fs.vouches {
			break
		}
	}
	return full, nil
}

// dropEmptyTail removes the last segments of ids while they start with
// zero bytes: such a segment holds no record that a Sync covered (a spare,
// or an active segment none of whose records reached the disk, or whose
// first header rotted to zeros). Intact records found in one are logged at
// error level. The one right after the last remaining segment is kept as
// the spare instead if it is SegmentSize bytes, all zeros. It returns the
// remaining ids.
func (s *Silo) dropEmptyTail(ctx context.Context, ids []uint32) ([]uint32, error) {
	removed := false
	var keep *segment // a spare candidate
	for len(ids) > 0 {
		id := ids[len(ids)-1]
		name := filepath.Join(s.dir, segName(id))
		f, err := s.fs.Open(name)
		if err != nil {
			return nil, fmt.Errorf("silo: open segment: %w", err)
		}
		size, err := f.Size()
		var empty bool
		if err == nil {
			empty, err = allZero(f, 0, min(size, hdrSize))
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("silo: open segment %s: %w", name, err)
		}
		if !empty {
			f.Close()
			break
		}
		_, after, zero, err := scanSegment(f, size, true, func(int64, *header) {}, nil)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("silo: scan segment %s: %w", name, err)
		}
		if after > 0 {
			s.log.Log(ctx, slog.LevelError, "silo: dropping a last segment whose first record is missing",
				"segment", name, "intact_records_cut", after)
		}
		seg := &segment{id: id, name: name, f: f, alloc: size}
		if keep != nil {
			s.dropFile(keep)
			removed = true
		}
		keep = nil
		if size == s.opts.SegmentSize && zero {
			keep = seg // all zeros: a spare
		} else {
			s.dropFile(seg)
			removed = true
		}
		ids = ids[:len(ids)-1]
	}
	if keep != nil {
		if len(ids) > 0 && keep.id == ids[len(ids)-1]+1 {
			s.spare = keep
		} else {
			s.dropFile(keep)
			removed = true
		}
	}
	if removed {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return nil, mapErr("sync directory", err)
		}
	}
	return ids, nil
}

// preallocActive extends the active segment found at open (reserved, or
// with written zeros where fallocate is missing) to
// SegmentSize (best effort: on a full disk it stays as it is, and appends
// extend it).
func (s *Silo) preallocActive(seg *segment) {
	if seg.size >= s.opts.SegmentSize {
		return
	}
	if err := preallocate(seg.f, seg.alloc, s.opts.SegmentSize); err != nil {
		_ = seg.f.Truncate(seg.alloc)
		s.log.Warn("silo: could not preallocate the active segment", "segment", seg.name, "err", err)
		return
	}
	seg.alloc = s.opts.SegmentSize
}

// preallocate makes f's first to bytes take disk space: reserved with
// fallocate, or, where the file system cannot, with zeros written over
// [from, to) (the bytes before from are already written); then synced.
func preallocate(f File, from, to int64) error {
	err := errAllocUnsupported
	if a, ok := f.(allocator); ok {
		err = a.Allocate(to)
	}
	if errors.Is(err, errAllocUnsupported) {
		err = writeZeros(f, from, to)
	}
	if err == nil {
		err = f.Sync()
	}
	return err
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, hdrSize+8<<10); return &b }}

func getBuf(n int) *[]byte {
	bp := bufPool.Get().(*[]byte)
	if cap(*bp) < n {
		b := make([]byte, n)
		*bp = b
	}
	*bp = (*bp)[:n]
	return bp
}

func putBuf(bp *[]byte) {
	if cap(*bp) > 1<<20+hdrSize {
		return // let big buffers go
	}
	bufPool.Put(bp)
}

// killLocked accounts a live piece or journal record at l as dead.
func (s *Silo) killLocked(l loc) {
	if seg := s.segs[l.seg]; seg != nil {
		seg.live -= l.size()
		s.kickIfDeadLocked(seg)
	}
	s.live -= int64(l.n)
}

// kickIfDeadLocked wakes the compactor when seg, sealed, has reached the
// dead share that makes it worth rewriting (Options.CompactRatio).
func (s *Silo) kickIfDeadLocked(seg *segment) {
	if seg != s.active && float64(seg.size-seg.live) >= s.opts.CompactRatio*float64(seg.size) {
		s.kickCompactor()
	}
}

func (s *Silo) liveLocked(l loc) {
	if seg := s.segs[l.seg]; seg != nil {
		seg.live += l.size()
	}
	s.live += int64(l.n)
}

// noteHistoryLocked records that segment seg may hold a (dead) put of key.
func (s *Silo) noteHistoryLocked(key blocks.Addr, seg uint32) {
	t := s.tombs[key]
	if t.minSeg == 0 || seg < t.minSeg {
		t.minSeg = seg
	}
	s.tombs[key] = t
}

// anySegIn reports whether a segment with id in [lo, hi) exists.
func (s *Silo) anySegIn(lo, hi uint32) bool {
	if lo >= hi {
		return false
	}
	i := sort.Search(len(s.order), func(i int) bool { return s.order[i] >= lo })
	return i < len(s.order) && s.order[i] < hi
}

func (s *Silo) checkOpen() error {
	if s.closed {
		return fmt.Errorf("silo: %w", blocks.ErrClosed)
	}
	return nil
}

// PutPiece implements blocks.Holder. It writes the piece to the active
// segment (the page cache) and returns; Sync makes it durable. A key
// already present is left as it is, unless its record was found corrupt,
// in which case it is replaced. data is not retained. Errors:
// blocks.ErrTooLarge (over blocks.MaxPiece), blocks.ErrNoSpace,
// blocks.ErrClosed, or the error of an earlier failed sync.
func (s *Silo) PutPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(data) > blocks.MaxPiece {
		return fmt.Errorf("silo: piece of %d bytes: %w", len(data), blocks.ErrTooLarge)
	}
	pcrc := crc32c.Checksum(data) // outside the lock

	h := header{typ: recPiece, n: uint32(len(data)), key: key}

	s.waitFlightRoom()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	old, ok := s.index.get(key)
	if ok && !old.bad {
		if len(s.sweeps) > 0 {
			s.touchLocked(key)
		}
		return nil
	}
	if err := s.pieceRoomLocked(); err != nil {
		return err
	}
	s.stamp++
	h.stamp = s.stamp
	seg, off, err := s.appendLocked(&h, pcrc, data, nil)
	if err != nil {
		return err
	}
	if ok {
		s.killLocked(old.loc)
		s.noteHistoryLocked(key, old.seg)
	}
	if t, has := s.tombs[key]; has && t.tombStamp != 0 {
		// The key's tombstone is superseded: compaction may drop it.
		s.markerLocked(loc{seg: t.tombSeg, off: t.tombOff}, -1)
		t.tombSeg, t.tombOff, t.tombStamp = 0, 0, 0
		s.tombs[key] = t
	}
	l := loc{seg: seg.id, off: off, n: h.n}
	s.index.set(key, entry{loc: l, stamp: h.stamp})
	s.prepIndexLocked()
	s.liveLocked(l)
	return nil
}

// prepIndexLocked has the index's next table made in the background when
// the index wants one (see index.prepWanted). Called with s.mu held.
func (s *Silo) prepIndexLocked() {
	n := s.index.prepWanted()
	if n == 0 {
		return
	}
	s.prepWG.Go(func() {
		t := prepare(n, s.closing.Load)
		s.mu.Lock()
		ok := !s.closed && s.index.adoptPrep(t)
		s.mu.Unlock()
		if !ok {
			t.free()
		}
	})
}

// readRecord reads the record at l of seg into buf (grown as needed) and
// checks its header and checksum. It returns the record (header and
// payload). It is called with s.mu held shared and releases it.
func (s *Silo) readRecord(seg *segment, l loc, buf []byte, h *header) ([]byte, error) {
	buf, err := s.fetchRecord(seg, l, buf)
	if err != nil {
		return buf, err
	}
	return buf, checkFetched(seg, l, buf, h)
}

// GetPiece implements blocks.Holder. The piece's record checksum is
// verified on every read; the caller owns the returned slice. Errors:
// blocks.ErrNotFound, blocks.ErrCorrupt (wrapped; the bytes are never
// returned), blocks.ErrClosed, or an I/O error.
func (s *Silo) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	return s.GetPieceInto(ctx, key, nil)
}

// ReadSlack is the room beyond a piece's length that GetPieceInto needs in
// dst to read the piece without allocating: the record header, read and
// checked with the payload.
const ReadSlack = hdrSize

// GetPieceInto implements blocks.PieceGetterInto: GetPiece reading into
// dst's array. When cap(dst) is at least the piece's length plus ReadSlack
// it returns dst[:len(piece)] (using dst[:len(piece)+ReadSlack] as scratch),
// else a newly allocated slice. The checksum is verified as by GetPiece; on
// an error the contents of dst are unspecified. The caller owns dst and
// the result.
func (s *Silo) GetPieceInto(ctx context.Context, key blocks.Addr, dst []byte) ([]byte, error) {
	e, seg, err := s.lookupRLocked(ctx, key)
	if err != nil {
		return nil, err
	}
	var h header
	n := int(e.n)
	if sr, ok := seg.f.(splitReader); ok && cap(dst) >= n+hdrSize {
		// The payload straight into dst, the header into the room after it.
		payload, hb := dst[:n], dst[n:n+hdrSize]
		err := s.fetchSplit(seg, e.loc, sr, hb, payload, nil)
		if err == nil {
			err = checkSplit(seg, e.loc, hb, payload, nil, &h)
		}
		if err := s.checkPiece(seg, e.loc, key, &h, err); err != nil {
			return nil, err
		}
		return payload, nil
	}
	buf, err := s.readRecord(seg, e.loc, dst[:0], &h)
	if err := s.checkPiece(seg, e.loc, key, &h, err); err != nil {
		return nil, err
	}
	if dst != nil && cap(dst) >= len(buf) {
		return buf[:copy(buf, buf[hdrSize:])], nil
	}
	return buf[hdrSize:], nil
}

// lookupRLocked finds piece key: its index entry and segment, with s.mu
// held shared on success (the caller reads the record and releases it);
// on an error s.mu is not held.
func (s *Silo) lookupRLocked(ctx context.Context, key blocks.Addr) (entry, *segment, error) {
	if err := ctx.Err(); err != nil {
		return entry{}, nil, err
	}
	s.mu.RLock()
	if err := s.checkOpen(); err != nil {
		s.mu.RUnlock()
		return entry{}, nil, err
	}
	e, ok := s.index.get(key)
	if !ok {
		s.mu.RUnlock()
		return entry{}, nil, fmt.Errorf("silo: piece %s: %w", key, blocks.ErrNotFound)
	}
	return e, s.segs[e.seg], nil
}

// checkPiece returns the error of reading the record at l of seg as piece
// key: err (the read's), or ErrCorrupt when the record h is not that
// piece's; a corrupt piece is marked bad.
func (s *Silo) checkPiece(seg *segment, l loc, key blocks.Addr, h *header, err error) error {
	if err == nil && (h.typ != recPiece || h.key != key) {
		err = fmt.Errorf("silo: segment %s offset %d: record is not piece %s: %w", seg.name, l.off, key, blocks.ErrCorrupt)
	}
	if err != nil && errors.Is(err, blocks.ErrCorrupt) {
		s.markBad(key, l)
	}
	return err
}

func (s *Silo) markBad(key blocks.Addr, l loc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.index.get(key); ok && e.loc == l && !e.bad {
		e.bad = true
		s.index.set(key, e)
		s.log.Warn("silo: corrupt piece", "key", key.String(), "segment", l.seg, "offset", l.off)
	}
}

// HasPiece implements blocks.Holder (from the index: the bytes are not
// read or verified).
func (s *Silo) HasPiece(ctx context.Context, key blocks.Addr) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.checkOpen(); err != nil {
		return false, err
	}
	_, ok := s.index.get(key)
	return ok, nil
}

// DeletePiece implements blocks.Holder: it writes a tombstone and forgets
// the key (durable at the next Sync). Deleting an absent key writes nothing.
func (s *Silo) DeletePiece(ctx context.Context, key blocks.Addr) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkOpen(); err != nil {
		return err
	}
	e, ok := s.index.get(key)
	if !ok {
		return nil
	}
	return s.deleteLocked(key, e)
}

// deleteLocked deletes the live piece key, whose index entry is e (s.mu
// held).
func (s *Silo) deleteLocked(key blocks.Addr, e entry) error {
	s.stamp++
	h := header{typ: recTomb, key: key, stamp: s.stamp}
	seg, off, err := s.appendReserveLocked(&h, 0, nil, nil)
	if err != nil {
		return err
	}
	s.index.del(key)
	s.killLocked(e.loc)
	s.noteHistoryLocked(key, e.seg)
	t := s.tombs[key]
	t.tombSeg, t.tombOff, t.tombStamp = seg.id, off, h.stamp
	s.tombs[key] = t
	s.markerLocked(loc{seg: seg.id, off: off}, +1)
	return nil
}

// Walk implements blocks.Walker: it calls fn for every piece key the
// silo holds, stopping at fn's first error. It copies the keys out of the
// index a range of their hashes at a time (at most about walkBatch keys,
// 32 bytes each), under the lock, and calls fn without it: a key deleted
// during the walk is seen only if its range came first, one put during
// the walk is not seen (its entry's stamp is newer; a pass that writes
// pieces here would otherwise walk what it wrote), and none is seen
// twice. (It copied every key first: 32 bytes a piece,
// 320 MiB for a node holding 10M pieces, during every anti-entropy pass
// and collection.)
func (s *Silo) Walk(ctx context.Context, fn func(key blocks.Addr) error) error {
	s.mu.RLock()
	if err := s.checkOpen(); err != nil {
		s.mu.RUnlock()
		return err
	}
	n, since := s.index.len(), s.stamp
	s.mu.RUnlock()
	parts := 1
	for parts*walkBatch < n {
		parts *= 2
	}
	var keys []blocks.Addr
	for p := range parts {
		lo, hi := hashRange(p, parts)
		s.mu.RLock()
		if err := s.checkOpen(); err != nil {
			s.mu.RUnlock()
			return err
		}
		keys = s.index.appendRange(keys[:0], lo, hi, since)
		s.mu.RUnlock()
		for i, k := range keys {
			if i%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if err := fn(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// hashRange returns the bounds (inclusive) of part p of the 64-bit hash
// space cut into parts equal ranges (parts a power of two).
func hashRange(p, parts int) (lo, hi uint64) {
	shift := uint(bits.Len(uint(parts - 1))) // log2(parts)
	lo = uint64(p) << (64 - shift)           // 0 when shift is 0 (one part)
	return lo, lo + ^uint64(0)>>shift
}

// walkBatch is the number of keys Walk aims to copy out of the index at
// a time (a variable for tests).
var walkBatch = 1 << 16

// Stats returns the silo's current counts.
func (s *Silo) Stats() Stats {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := Stats{Pieces: int64(s.index.len()), LiveBytes: s.live, Segments: len(s.order), Relocated: s.relocated.Load()}
	for _, id := range s.order {
		seg := s.segs[id]
		st.DiskBytes += max(seg.size, seg.alloc)
		st.Prealloc += max(seg.alloc-seg.size, 0)
	}
	if s.spareMu.TryLock() { // else it is being made or taken: not counted
		if s.spare != nil {
			st.DiskBytes += s.spare.alloc
			st.Prealloc += s.spare.alloc
		}
		s.spareMu.Unlock()
	}
	return st
}

// Sync implements blocks.Holder and is the silo's group commit: it returns
// once every piece, tombstone and journal record written before the call
// is durable (fdatasync of the active segment; sealed segments were synced
// when sealed). Concurrent callers share fdatasyncs: each sync covers the
// writes made before it started (a write generation). A caller whose writes
// are all covered by a completed sync returns at once; one whose writes are
// covered by the sync in flight waits for it; any other caller queues for
// the next, which one caller runs for all that queued. A failed fdatasync
// is sticky (the kernel may have dropped the dirty pages): every later
// write and Sync fails until the silo is reopened, which rescans the
// active segment.
func (s *Silo) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := s.writeGen.Load() // covers every write that returned before now
	s.smu.Lock()
	if s.stopped {
		s.smu.Unlock()
		return fmt.Errorf("silo: %w", blocks.ErrClosed)
	}
	if want <= s.durableGen {
		s.smu.Unlock()
		s.mu.RLock()
		err := s.failed
		s.mu.RUnlock()
		return err
	}
	if s.syncing {
		b := s.cur
		if b == nil || b.gen < want {
			if s.next == nil {
				s.next = &batch{done: make(chan struct{})}
			}
			b = s.next
			b.waiters++
		}
		s.smu.Unlock()
		select {
		case <-b.done:
			return b.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.syncing = true
	b := &batch{done: make(chan struct{})}
	s.cur = b
	s.smu.Unlock()
	return s.lead(b)
}

// WriteBehind implements blocks.WriteBehinder: it writes the buffered
// records to the active segment's file and starts the disk writing what
// no sync has covered there yet (writeStarter), then returns without
// waiting. A Sync that follows finds the buffer empty and the pages on
// their way, and its fdatasync waits only for the rest. The volume calls
// it between a WRITE's reply and the FLUSH a database sends after it (see
// volume's WriteBehind). Sealed segments not yet synced are left to Sync.
func (s *Silo) WriteBehind() error {
	s.mu.Lock()
	if err := s.writeOutLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	seg := s.active
	from, to := seg.synced, seg.size
	ws, ok := seg.f.(writeStarter)
	seg.mu.RLock() // the file stays open (as in syncActive)
	s.mu.Unlock()
	defer seg.mu.RUnlock()
	if !ok || to <= from {
		return nil
	}
	if err := ws.StartWrite(from, to-from); err != nil {
		return fmt.Errorf("silo: write behind: %w", err)
	}
	return nil
}

// writeOutLocked writes the buffered records to the active segment's
// file, as Sync and WriteBehind begin; it fails on a closed silo and on
// one whose writes failed before. The caller holds s.mu.
func (s *Silo) writeOutLocked() error {
	if s.closed {
		return fmt.Errorf("silo: %w", blocks.ErrClosed)
	}
	if err := s.flushLocked(); err != nil {
		return err
	}
	return s.failed
}

// lead runs one fdatasync for batch b (now s.cur), then hands the next
// queued batch to a new goroutine.
func (s *Silo) lead(b *batch) error {
	gen, err := s.syncActive(b)
	s.smu.Lock()
	if err == nil && gen > s.durableGen {
		s.durableGen = gen
	}
	nb := s.next
	s.next = nil
	s.cur = nb
	if nb == nil {
		s.syncing = false
		s.scond.Broadcast()
	}
	s.smu.Unlock()
	b.err = err
	close(b.done)
	if nb != nil {
		go s.lead(nb)
	}
	return err
}

// syncActive makes every write up to the current generation durable and
// returns that generation. It publishes the generation in b first, so that
// Sync callers whose writes it covers wait for it rather than the next.
func (s *Silo) syncActive(b *batch) (uint64, error) {
	s.mu.Lock()
	if err := s.writeOutLocked(); err != nil {
		s.mu.Unlock()
		return 0, err
	}
	seg := s.active
	gen := s.writeGen.Load()
	upto := seg.size
	sealed := slices.Clone(s.unsynced)
	for _, o := range sealed {
		o.mu.RLock() // compaction closes a segment only after a Sync: not this one
	}
	seg.mu.RLock()
	s.mu.Unlock()
	s.smu.Lock()
	b.gen = gen
	s.smu.Unlock()
	err := s.waitFlights()
	for _, o := range sealed {
		if err == nil {
			err = o.f.Sync()
		}
		o.mu.RUnlock()
	}
	if err == nil {
		err = seg.f.Sync()
	}
	seg.mu.RUnlock()
	s.syncs.Add(1)
	if err != nil {
		s.mu.Lock()
		if s.failed == nil {
			s.failed = mapErr("sync", err)
			s.log.Error("silo: sync failed; writes refused until reopen", "err", err)
		}
		err = s.failed
		s.mu.Unlock()
		return 0, err
	}
	s.mu.Lock()
	s.unsynced = slices.DeleteFunc(s.unsynced, func(o *segment) bool { return slices.Contains(sealed, o) })
	if upto > seg.synced {
		seg.synced = upto
		if seg == s.active {
			s.countSyncLocked()
		}
	}
	s.mu.Unlock()
	return gen, nil
}

// countSyncLocked counts a sync that made new bytes of the active segment
// durable and, at the end of each window of syncWindow of them, judges
// whether the workload is sync-heavy (see active.go). Turning heavy while
// the active segment is reserved asks the spare maker for a zero-filled
// spare, which the writer then rolls to.
func (s *Silo) countSyncLocked() {
	s.winSyncs++
	if s.winSyncs < syncWindow {
		return
	}
	s.heavy = s.winBytes < syncWindow*heavySyncBytes
	s.winSyncs, s.winBytes = 0, 0
	if s.heavy && !s.active.zeroed && !s.wantZero.Load() {
		s.wantZero.Store(true)
		s.kickSpare()
	}
}

// Close stops compaction, syncs, closes the segment files and releases the
// directory lock. Operations after Close fail with blocks.ErrClosed. A
// second Close returns nil.
func (s *Silo) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.cancel()
		<-s.bgDone
		<-s.spareDone
		<-s.relocDone
		s.compactMu.Lock() // wait for an explicit Compact to stop
		s.compactMu.Unlock()
		err := s.Sync(context.Background())
		if err == nil {
			// A mark after the last sync vouches for every record before
			// it: at the next open, rot anywhere in them is stepped over,
			// not mistaken for a torn tail (see scanActive).
			if err = s.mark(); err == nil {
				err = s.Sync(context.Background())
			}
		}
		s.smu.Lock()
		s.stopped = true
		for s.syncing {
			s.scond.Wait()
		}
		s.smu.Unlock()
		s.mu.Lock()
		s.closed = true
		close(s.flyQ) // no appends from here on
		// Every reader of the index holds mu and finds the silo closed
		// (or, GetPieceSplit, the freed index empty).
		s.index.free()
		s.mu.Unlock()
		s.prepWG.Wait() // a table being prepared is freed by its goroutine
		<-s.flyDone
		s.closeFiles()
		if lerr := s.lock.Close(); err == nil {
			err = lerr
		}
		s.closeErr = err
	})
	return s.closeErr
}

func (s *Silo) closeFiles() {
	for _, seg := range s.segs {
		seg.mu.Lock()
		s.unmap(seg)
		seg.f.Close()
		seg.mu.Unlock()
	}
	if s.spare != nil {
		s.spare.f.Close() // it stays on disk: the next Open removes it
		s.spare = nil
	}
	s.closeReserve()
}

// mark appends a sync mark (see recMark).
func (s *Silo) mark() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.active == nil {
		return nil
	}
	h := header{typ: recMark}
	_, _, err := s.appendLocked(&h, 0, nil, nil)
	return err
}
