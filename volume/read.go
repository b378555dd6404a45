package volume

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"cairn/blocks"
	"cairn/internal/fastcopy"
)

// The read path of a volume: ReadAt and the chunk reads below it.

// ReadAt implements Volume.
func (v *volumeImpl) ReadAt(ctx context.Context, p []byte, off int64) error {
	v.life.RLock()
	defer v.life.RUnlock()
	if err := v.usable(); err != nil {
		return err
	}
	if err := v.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	if int64(len(p)) <= v.bs-off%v.bs {
		return v.readChunk(ctx, uint64(off/v.bs), p, off%v.bs)
	}
	// Several chunks. Small reads run inline: a goroutine per chunk costs
	// more than the chunk (a page-cache read). Large reads go in parallel
	// across groups of chunks, each group read in order by one goroutine,
	// but only while cores are idle: when other large reads are in flight
	// (a client at queue depth 8, say), they already keep the cores busy,
	// and one group per read costs less (no goroutines, fewer and longer
	// preads in the silo).
	busy := int(largeReads.Add(1))
	defer largeReads.Add(-1)
	pl := v.planRead(off, len(p), busy)
	if pl.limit == 1 {
		for g := range pl.groups {
			from, to := pl.span(g)
			if err := v.readChunks(ctx, p, off, from, to); err != nil {
				return err
			}
		}
		return nil
	}
	return parallel(ctx, pl.groups, pl.limit, func(g int) error {
		from, to := pl.span(g)
		return v.readChunks(ctx, p, off, from, to)
	})
}

// readPlan splits a read of several chunks into groups, each read in
// order by one goroutine, limit of them at a time.
type readPlan struct {
	first         int64 // the first chunk
	count, per    int   // chunks in all, and per group
	groups, limit int
}

// planRead plans the read of [off, off+n): groups of readGroupBytes read
// in parallel while cores are idle, else one group of up to readBatchBytes
// after another, inline (busy is the number of large reads in flight, this
// one included).
func (v *volumeImpl) planRead(off int64, n, busy int) readPlan {
	pl := readPlan{first: off / v.bs, per: max(1, int(readGroupBytes/v.bs)), limit: v.c.opts.PutParallel}
	pl.count = int((off+int64(n)-1)/v.bs - pl.first + 1)
	if idle := runtime.GOMAXPROCS(0) - busy + 1; idle <= 1 {
		pl.per, pl.limit = max(1, int(readBatchBytes/v.bs)), 1
	} else {
		pl.limit = min(pl.limit, idle)
	}
	pl.groups = (pl.count + pl.per - 1) / pl.per
	return pl
}

// span returns the chunks [from, to) of group g.
func (pl readPlan) span(g int) (from, to int64) {
	return pl.first + int64(g*pl.per), pl.first + int64(min((g+1)*pl.per, pl.count))
}

// largeReads counts the reads of several chunks in flight in this process
// (all volumes): ReadAt splits a large read across goroutines only while
// fewer than GOMAXPROCS of them run.
var largeReads atomic.Int32

// chunkPart is the part of a read that falls in one chunk.
type chunkPart struct {
	chunk uint64
	p     []byte // where the bytes go
	in    int64  // offset in the chunk
}

// readChunks reads chunks [from, to) of the read of p at off. Stored chunks
// are read together (blocks.ManyGetter: a local silo reads neighbouring
// records with one pread); a chunk that fails there is read again alone,
// by readChunk, which repairs or reports it as a single read would.
func (v *volumeImpl) readChunks(ctx context.Context, p []byte, off, from, to int64) error {
	mg, ok := v.store.(blocks.ManyGetter)
	parts := make([]chunkPart, 0, to-from)
	for chunk := from; chunk < to; chunk++ {
		lo := max(chunk*v.bs, off)
		hi := min((chunk+1)*v.bs, off+int64(len(p)))
		parts = append(parts, chunkPart{uint64(chunk), p[lo-off : hi-off], lo - chunk*v.bs})
	}
	if !ok || len(parts) == 1 {
		for _, pt := range parts {
			if err := v.readChunk(ctx, pt.chunk, pt.p, pt.in); err != nil {
				return err
			}
		}
		return nil
	}
	// Dirty chunks under one hold of v.mu, then the map's addresses of
	// the rest in one call, in that order (see gatherChunks).
	dirty := make([]bool, len(parts))
	v.eachDirty(uint64(from), uint64(to), func(chunk uint64, data []byte) {
		j := chunk - uint64(from)
		if pt := parts[j]; data == nil {
			clear(pt.p)
		} else {
			copy(pt.p, data[pt.in:])
		}
		dirty[j] = true
	})
	mapped := make([]blocks.Addr, len(parts))
	if err := v.m.GetRange(ctx, uint64(from), mapped); err != nil {
		return fmt.Errorf("volume %q: read chunks %d to %d: %w", v.name, from, to-1, err)
	}
	stored := parts[:0]
	addrs := mapped[:0]
	for j, pt := range parts {
		switch a := mapped[j]; {
		case dirty[j]:
		case a.IsZero():
			clear(pt.p)
		default:
			stored = append(stored, pt)
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	if vw, ok := v.store.(blocks.Viewer); ok {
		// Copy what the layers below hand out in place straight into p
		// (one pass over the cold bytes, the check's, instead of a read
		// into a buffer and a copy); read the rest below.
		views := make([][]byte, len(addrs))
		release := vw.ViewMany(ctx, addrs, views)
		rest := 0
		for j, pt := range stored {
			if b := views[j]; int64(len(b)) == v.bs && copyView(pt.p, b[pt.in:]) {
				continue
			}
			stored[rest], addrs[rest] = pt, addrs[j]
			rest++
		}
		release()
		stored, addrs = stored[:rest], addrs[:rest]
		if rest == 0 {
			return nil
		}
	}
	bp, _ := v.manyBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer v.manyBufs.Put(bp)
	got, errs := mg.GetMany(ctx, addrs, bp)
	for j, pt := range stored {
		if errs[j] != nil || int64(len(got[j])) != v.bs {
			if err := v.readChunk(ctx, pt.chunk, pt.p, pt.in); err != nil {
				return err
			}
			continue
		}
		fastcopy.Copy(pt.p, got[j][pt.in:])
	}
	return nil
}

// copyView copies a view (blocks.Viewer) into p. A view is mapped file
// pages, which can fault (a disk error when a page evicted since the check
// is read again); the fault is caught and reported as false, for the
// caller to read the chunk the ordinary way.
func copyView(p, view []byte) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	fastcopy.Copy(p, view)
	return true
}

// readGroupBytes is how much of a large read one goroutine reads while
// cores are idle: reads up to this size run inline, larger ones in
// parallel across groups. readBatchBytes bounds one batch (one GetMany)
// of a read that runs inline on a busy machine, and so the buffer it
// pools.
const (
	readGroupBytes = 128 << 10
	readBatchBytes = 4 << 20
)

// locate fills p from chunk at offset in when the chunk is dirty or a
// hole; else it returns the address to read it from (stored true).
func (v *volumeImpl) locate(ctx context.Context, chunk uint64, p []byte, in int64) (a blocks.Addr, stored bool, err error) {
	v.mu.Lock()
	if d, ok := v.dirty.get(chunk); ok {
		if d.data == nil {
			clear(p)
		} else {
			copy(p, d.data[in:])
		}
		v.mu.Unlock()
		return a, false, nil
	}
	v.mu.Unlock()
	a, err = v.m.Get(ctx, chunk)
	if err != nil {
		return a, false, fmt.Errorf("volume %q: read chunk %d: %w", v.name, chunk, err)
	}
	if a.IsZero() {
		clear(p)
		return a, false, nil
	}
	return a, true, nil
}

// eachDirty calls fn with the data of every dirty chunk of [from, to)
// (nil for a hole), in order, under one hold of v.mu: fn must copy what it
// keeps, the data may change once v.mu is released. A large read asks for
// its dirty chunks this way first, then the map for the rest (see
// gatherChunks).
func (v *volumeImpl) eachDirty(from, to uint64, fn func(chunk uint64, data []byte)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.dirty.len() == 0 {
		return
	}
	for c := from; c < to; c++ {
		if d, ok := v.dirty.get(c); ok {
			fn(c, d.data)
		}
	}
}

// readChunk fills p from chunk at offset in: dirty data first, then the map.
func (v *volumeImpl) readChunk(ctx context.Context, chunk uint64, p []byte, in int64) error {
	a, stored, err := v.locate(ctx, chunk, p, in)
	if err != nil || !stored {
		return err
	}
	var b []byte
	if gi, ok := v.store.(blocks.GetterInto); ok {
		// Read through a pooled buffer, with room for what the layers
		// below put around the chunk (piece and record headers).
		bp, _ := v.readBufs.Get().(*[]byte)
		if bp == nil {
			bp = new([]byte)
		}
		if want := int(v.bs) + readSlack; cap(*bp) < want {
			*bp = make([]byte, want)
		}
		defer v.readBufs.Put(bp)
		// A whole chunk of a plain volume on this node goes straight from
		// the disk's pages into p (see blocks.SplitGetter), the buffer
		// only holding the headers around it; anything else, or a failure,
		// reads it whole into the buffer.
		if sg, ok := v.store.(blocks.SplitGetter); ok && in == 0 && int64(len(p)) == v.bs &&
			sg.GetSplit(ctx, a, nil, p, (*bp)[:blocks.SplitScratch]) {
			return nil
		}
		b, err = gi.GetInto(ctx, a, (*bp)[:0])
	} else {
		b, err = v.store.Get(ctx, a)
	}
	if err != nil {
		return fmt.Errorf("volume %q: read chunk %d: %w", v.name, chunk, err)
	}
	if int64(len(b)) != v.bs {
		return fmt.Errorf("volume %q: chunk %d is %d bytes, want %d: %w", v.name, chunk, len(b), v.bs, blocks.ErrCorrupt)
	}
	fastcopy.Copy(p, b[in:])
	return nil
}

// readSlack is the room a read buffer keeps beyond a chunk for the headers
// of the layers below (sealing, piece and record headers), so that they
// can read into it without allocating.
const readSlack = 512

// ReadVec is ReadAt without the final copy, for a server that sends the
// bytes from where they were read (the NBD server's vectored READ reply).
// It reads [off, off+n) and calls fn once with slices whose concatenation
// is exactly those n bytes, then takes them back: the slices are valid
// only during fn, and fn must not modify them (holes share one buffer of
// zeros). Some slices may be mapped file pages (blocks.Viewer: the chunks
// of a plain volume on this node go out without being copied at all):
// hand them to the kernel (a write, which reports a page it cannot read
// as EFAULT), or read them under runtime/debug.SetPanicOnFault. fn runs
// without the volume's locks held, so a slow consumer delays neither
// writes nor Close. ReadVec returns ReadAt's errors, before
// fn is called and without calling it, or else fn's error.
func (v *volumeImpl) ReadVec(ctx context.Context, off int64, n int, fn func(bufs [][]byte) error) error {
	if n <= 0 {
		if err := v.ReadAt(ctx, nil, off); err != nil {
			return err
		}
		return fn(nil)
	}
	// The read counts as in flight until fn returns: a server sending
	// the replies of earlier reads keeps the cores as busy as reading.
	largeReads.Add(1)
	defer largeReads.Add(-1)
	r := vecReads.Get().(*vecRead)
	defer r.release(v)
	if err := v.gatherVec(ctx, off, n, r); err != nil {
		return err
	}
	return fn(r.all)
}

// gatherVec reads the chunks of [off, off+n) into r, as ReadAt reads them
// on a busy machine, under the volume's life lock.
func (v *volumeImpl) gatherVec(ctx context.Context, off int64, n int, r *vecRead) error {
	v.life.RLock()
	defer v.life.RUnlock()
	if err := v.usable(); err != nil {
		return err
	}
	if err := v.checkRange(off, int64(n)); err != nil {
		return err
	}
	// One goroutine reads the whole range, in batches of readBatchBytes,
	// whatever the cores are doing: unlike ReadAt, which splits a large
	// read across goroutines while cores look idle (planRead), a ReadVec
	// serves a network client, whose own process (and the kernel copying
	// the reply) takes the cores planRead counts as idle. Measured with
	// fio over NBD (1 MiB sequential reads at queue depth 8, 2 cores,
	// five interleaved runs on a busy machine): the split into 128 KiB
	// groups on two goroutines cost 867 µs of server CPU per MiB at
	// 692 MB/s (medians), two halves (one on the caller) 818 at 749, one
	// goroutine 781 at 792. The split paid goroutine starts and wake-ups
	// and a store call per group (and, likely, the kernel copying the
	// reply from the other core's cache).
	pl := v.planRead(off, n, math.MaxInt) // as if no core were idle
	for len(r.groups) < pl.groups {
		r.groups = append(r.groups, &vecGroup{})
	}
	for g := range pl.groups {
		from, to := pl.span(g)
		if err := v.gatherChunks(ctx, off, n, from, to, r.groups[g]); err != nil {
			return err
		}
	}
	for _, g := range r.groups[:pl.groups] {
		r.all = append(r.all, g.vec...)
	}
	return nil
}

// vecRead is the state of one ReadVec: a group per goroutine of the read
// (see ReadAt), and the slices of every group, in order.
type vecRead struct {
	groups []*vecGroup
	all    [][]byte
}

// vecGroup gathers the slices of chunks [from, to) of a ReadVec.
type vecGroup struct {
	vec     [][]byte      // the group's slices, in order
	buf     *[]byte       // GetMany's buffer (from the volume's manyBufs)
	scratch []byte        // copies of dirty chunks and of chunks read alone; never grown
	addrs   []blocks.Addr // stored chunks' addresses, for GetMany
	at      []int         // stored chunks' entries in vec
	parts   []chunkPart   // stored chunks (p unused)
	views   [][]byte      // ViewMany's answer (scratch)
	dirty   [][]byte      // per chunk: its copy if dirty, dirtyHole, or nil (scratch)
	mapped  []blocks.Addr // per chunk: its address in the map (scratch)
	// releases give back the views in vec (blocks.Viewer), once fn is done.
	releases []func()
}

var vecReads = sync.Pool{New: func() any { return new(vecRead) }}

// release gives the buffers back to v's pool and r to vecReads, keeping
// no reference to the data.
func (r *vecRead) release(v *volumeImpl) {
	for _, g := range r.groups {
		for _, rel := range g.releases {
			rel()
		}
		clear(g.releases)
		g.releases = g.releases[:0]
		if g.buf != nil {
			v.manyBufs.Put(g.buf)
			g.buf = nil
		}
		clear(g.vec)
		g.vec = g.vec[:0]
		g.addrs, g.at, g.parts = g.addrs[:0], g.at[:0], g.parts[:0]
		clear(g.dirty)
		g.dirty, g.mapped = g.dirty[:0], g.mapped[:0]
		if cap(g.scratch) > maxKeptScratch {
			g.scratch = nil
		}
		g.scratch = g.scratch[:0]
	}
	clear(r.all)
	r.all = r.all[:0]
	vecReads.Put(r)
}

// maxKeptScratch bounds the scratch buffer a pooled vecGroup keeps.
const maxKeptScratch = 256 << 10

// zeroes backs the slices of holes in a ReadVec (never written).
var zeroes [64 << 10]byte

// dirtyHole marks, in vecGroup.dirty, a dirty chunk that is a hole (told
// apart from a copy by its address).
var dirtyHole = make([]byte, 1)

// gatherChunks appends to g the slices of chunks [from, to) of the read
// of [off, off+n): dirty chunks copied (their data may change once v.mu is
// released), holes as zeroes, stored chunks as read by GetMany, in place.
// A chunk that fails there is read again alone, by readChunk, which
// repairs or reports it as a single read would.
func (v *volumeImpl) gatherChunks(ctx context.Context, off int64, n int, from, to int64, g *vecGroup) error {
	mg, many := v.store.(blocks.ManyGetter)
	// Every copy goes to scratch, made (at the first copy) to hold the
	// whole group if need be, and never grown after: the slices taken
	// from it stay valid.
	lo0, hi0 := max(from*v.bs, off), min(to*v.bs, off+int64(n))
	take := func(k int64) []byte {
		if len(g.scratch) == 0 && int64(cap(g.scratch)) < hi0-lo0 {
			g.scratch = make([]byte, 0, hi0-lo0)
		}
		s := g.scratch[len(g.scratch) : len(g.scratch)+int(k)]
		g.scratch = g.scratch[:len(g.scratch)+int(k)]
		return s
	}
	// First the dirty chunks, copied under one hold of v.mu (their data
	// may change once it is released); then the map's addresses of the
	// whole run, in one call: a chunk found clean here was pushed, and
	// its address set in the map, before it was, so the map gives this
	// write's address or a later one. Both locks are taken once per run,
	// not per chunk: under 1 MiB reads at depth 8 over NBD, with both
	// cores gathering, the atomic instructions of v.mu's per-chunk
	// locking took a third of this function's own samples (perf
	// annotate), and the map's lock costs the same.
	k := int(to - from)
	g.dirty = slices.Grow(g.dirty[:0], k)[:k]
	v.eachDirty(uint64(from), uint64(to), func(c uint64, data []byte) {
		chunk := int64(c)
		if data == nil {
			g.dirty[chunk-from] = dirtyHole
			return
		}
		lo := max(chunk*v.bs, off)
		hi := min((chunk+1)*v.bs, off+int64(n))
		p := take(hi - lo)
		copy(p, data[lo-chunk*v.bs:])
		g.dirty[chunk-from] = p
	})
	g.mapped = slices.Grow(g.mapped[:0], k)[:k]
	if err := v.m.GetRange(ctx, uint64(from), g.mapped); err != nil {
		return fmt.Errorf("volume %q: read chunks %d to %d: %w", v.name, from, to-1, err)
	}
	for chunk := from; chunk < to; chunk++ {
		lo := max(chunk*v.bs, off)
		hi := min((chunk+1)*v.bs, off+int64(n))
		in := lo - chunk*v.bs
		switch d := g.dirty[chunk-from]; {
		case d != nil && &d[0] == &dirtyHole[0]:
			g.appendZeroes(hi - lo)
			continue
		case d != nil:
			g.vec = append(g.vec, d)
			continue
		}
		a := g.mapped[chunk-from]
		if a.IsZero() {
			g.appendZeroes(hi - lo)
			continue
		}
		g.at = append(g.at, len(g.vec))
		g.vec = append(g.vec, nil)
		g.addrs = append(g.addrs, a)
		g.parts = append(g.parts, chunkPart{chunk: uint64(chunk), in: in})
	}
	if len(g.addrs) == 0 {
		return nil
	}
	if vw, ok := v.store.(blocks.Viewer); ok && len(g.addrs) > 1 {
		// Stored chunks the layers below hand out in place (a plain
		// volume's chunks in this node's mapped segments): the reply is
		// written from there, without a copy. The rest are read below.
		if cap(g.views) < len(g.addrs) {
			g.views = make([][]byte, len(g.addrs))
		}
		g.views = g.views[:len(g.addrs)]
		g.releases = append(g.releases, vw.ViewMany(ctx, g.addrs, g.views))
		rest := 0
		for j, pt := range g.parts {
			if b := g.views[j]; int64(len(b)) == v.bs {
				lo := max(int64(pt.chunk)*v.bs, off)
				hi := min(int64(pt.chunk+1)*v.bs, off+int64(n))
				g.vec[g.at[j]] = b[pt.in : pt.in+hi-lo]
				continue
			}
			g.addrs[rest], g.parts[rest], g.at[rest] = g.addrs[j], g.parts[j], g.at[j]
			rest++
		}
		clear(g.views)
		g.addrs, g.parts, g.at = g.addrs[:rest], g.parts[:rest], g.at[:rest]
		if rest == 0 {
			return nil
		}
	}
	var got [][]byte
	var errs []error
	if many && len(g.addrs) > 1 {
		if g.buf == nil {
			g.buf, _ = v.manyBufs.Get().(*[]byte)
			if g.buf == nil {
				g.buf = new([]byte)
			}
		}
		got, errs = mg.GetMany(ctx, g.addrs, g.buf)
	}
	for j, pt := range g.parts {
		k := g.at[j]
		lo := max(int64(pt.chunk)*v.bs, off)
		hi := min(int64(pt.chunk+1)*v.bs, off+int64(n))
		if got != nil && errs[j] == nil && int64(len(got[j])) == v.bs {
			g.vec[k] = got[j][pt.in : pt.in+hi-lo]
			continue
		}
		p := take(hi - lo)
		if err := v.readChunk(ctx, pt.chunk, p, pt.in); err != nil {
			return err
		}
		g.vec[k] = p
	}
	return nil
}

// appendZeroes appends n bytes of zeroes to g's slices.
func (g *vecGroup) appendZeroes(n int64) {
	for n > 0 {
		k := min(n, int64(len(zeroes)))
		g.vec = append(g.vec, zeroes[:k])
		n -= k
	}
}
