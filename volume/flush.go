package volume

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"cairn/blocks"
)

// The write-back path of a volume: pushing dirty chunks to the store,
// appending their map changes to the journal, and Flush.

// pushBatch bounds what a push under pressure takes at once, so that a
// writer waiting for flushMu waits for one batch, not for the whole cache
// (pushing 512 MiB at once stalled writers for over a second).
const pushBatch = 32 << 20

type pushItem struct {
	chunk uint64
	d     *dirtyChunk
	gen   uint64
	data  []byte
	lent  *lent // data's lent buffer (see dirtyChunk)
	addr  blocks.Addr
	err   error
}

// pushLocked Puts every dirty chunk, applies the results to the map and
// queues their journal changes. It returns the opSeq it covers (every
// change up to it is now in the map). The caller holds flushMu.
func (v *volumeImpl) pushLocked(ctx context.Context) (uint64, error) {
	return v.pushSomeLocked(ctx, 0)
}

// pushSomeLocked is pushLocked for at most max bytes of dirty chunks (0: all
// of them); a partial push covers nothing (it returns 0).
func (v *volumeImpl) pushSomeLocked(ctx context.Context, max int64) (uint64, error) {
	items, cover := v.takeDirty(max)
	err := v.putItems(ctx, items)
	v.settle(items)
	if err != nil {
		return 0, err
	}
	return cover, nil
}

// takeDirty marks at most max bytes of dirty chunks (0: all of them) as
// being pushed and returns them, by chunk, with the opSeq the push will
// cover (0 for a partial push).
func (v *volumeImpl) takeDirty(max int64) ([]pushItem, uint64) {
	v.mu.Lock()
	n := v.dirty.len()
	if max > 0 {
		n = min(n, int(max/v.bs)+1)
	}
	items := make([]pushItem, 0, n)
	var taken int64
	for ch, d := range v.dirty.all() {
		if max > 0 && taken >= max {
			break
		}
		d.shared = true
		items = append(items, pushItem{chunk: ch, d: d, gen: d.gen, data: d.data, lent: d.lent})
		taken += v.entryCost(d.data) // a lent chunk's bytes too: what the push writes
	}
	cover := v.opSeq
	if len(items) < v.dirty.len() {
		cover = 0
	}
	v.mu.Unlock()
	slices.SortFunc(items, func(a, b pushItem) int { return cmp.Compare(a.chunk, b.chunk) })
	return items, cover
}

// putItems Puts the items' data, applies the addresses to the map and
// queues their journal changes. An item that failed keeps its error (it
// stays dirty at settle); the first is returned.
func (v *volumeImpl) putItems(ctx context.Context, items []pushItem) error {
	if len(items) == 0 {
		return nil
	}
	sp, _ := v.store.(blocks.SizedPutter)
	var putL, putS atomic.Uint64
	// Once the store is out of space, the items not yet started are not
	// tried: they fail with that error and stay dirty (a push of the
	// whole cache onto a full disk would otherwise hash and try every
	// chunk before the FLUSH could report ENOSPC).
	var full atomic.Pointer[error]
	_ = parallel(ctx, len(items), v.c.opts.PutParallel, func(i int) error {
		it := &items[i]
		if it.data == nil {
			return nil
		}
		if e := full.Load(); e != nil {
			it.err = *e
			return nil
		}
		n := len(it.data)
		if sp != nil {
			it.addr, n, it.err = sp.PutSized(ctx, it.data)
		} else {
			it.addr, it.err = v.store.Put(ctx, it.data)
		}
		if it.err != nil {
			if errors.Is(it.err, blocks.ErrNoSpace) {
				full.CompareAndSwap(nil, &it.err)
			}
			return nil // counted neither as put nor as stored
		}
		putL.Add(uint64(len(it.data)))
		putS.Add(uint64(n))
		return nil
	})
	var firstErr error
	for i := range items {
		it := &items[i]
		if it.err == nil {
			it.err = v.setMap(ctx, it.chunk, it.addr)
		}
		if it.err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("volume %q: push chunk %d: %w", v.name, it.chunk, it.err)
			}
			continue
		}
		v.pending = append(v.pending, change{Chunk: it.chunk, Addr: it.addr})
	}
	v.mu.Lock()
	v.putLogical += putL.Load()
	v.unsynced += int64(putL.Load())
	v.putStored += putS.Load()
	v.mu.Unlock()
	return firstErr
}

// settle ends a push: an item pushed without error leaves the dirty set
// unless it changed meanwhile; one that failed stays dirty (and is pushed
// again by the next push, to the same address if its data is the same).
func (v *volumeImpl) settle(items []pushItem) {
	if len(items) == 0 {
		return
	}
	v.mu.Lock()
	for i := range items {
		it := &items[i]
		cur, ok := v.dirty.get(it.chunk)
		if ok && cur == it.d && cur.gen == it.gen && it.err == nil {
			v.dirty.del(it.chunk)
			v.addDirty(-v.chunkCost(it.data, it.lent))
		} else if ok && cur == it.d && cur.gen == it.gen {
			cur.shared = false // failed: stays dirty, still ours
			continue
		}
		// Pushed, or changed meanwhile (setDirty left the old data to us).
		v.dropData(it.data, it.lent)
	}
	v.mu.Unlock()
}

// appendLocked encodes the pending changes into records and appends every
// unappended record to every journal holder. The caller holds flushMu.
func (v *volumeImpl) appendLocked(ctx context.Context) error {
	_, err := v.appendRecordsLocked(ctx, false)
	return err
}

// appendRecordsLocked is appendLocked; with syncLast, the last record goes
// to each journal holder that implements AppendSyncer through AppendSync,
// and synced[i] reports whether journal holder i has synced since it took
// every record (nil when no record was appended). The caller holds flushMu.
func (v *volumeImpl) appendRecordsLocked(ctx context.Context, syncLast bool) (synced []bool, err error) {
	for len(v.pending) > 0 {
		n := min(len(v.pending), maxRecEntries)
		v.unappended = append(v.unappended, batch{seq: v.nextSeq, rec: encodeRecord(v.pending[:n])})
		v.nextSeq++
		v.pending = v.pending[n:]
	}
	v.pending = nil
	for len(v.unappended) > 0 {
		b := v.unappended[0]
		last := len(v.unappended) == 1
		var done []bool
		if syncLast && last && v.anyAppendSyncer() {
			done = make([]bool, len(v.journals))
		}
		err := parallel(ctx, len(v.journals), len(v.journals), func(i int) error {
			if done != nil {
				if as, ok := v.journals[i].(AppendSyncer); ok {
					if err := as.AppendSync(ctx, v.id, v.epoch, b.seq, b.rec); err != nil {
						return err
					}
					done[i] = true
					return nil
				}
			}
			return v.journals[i].Append(ctx, v.id, v.epoch, b.seq, b.rec)
		})
		if errors.Is(err, blocks.ErrFenced) {
			return nil, v.fence(err)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %q: journal append seq %d: %w", v.name, b.seq, err)
		}
		v.unappended = v.unappended[1:]
		v.sinceCkpt++
		synced = done
	}
	v.unappended = nil
	return synced, nil
}

// anyAppendSyncer reports whether a journal holder implements AppendSyncer.
func (v *volumeImpl) anyAppendSyncer() bool {
	for _, j := range v.journals {
		if _, ok := j.(AppendSyncer); ok {
			return true
		}
	}
	return false
}

// syncAll syncs the store and every journal holder, in parallel, each
// distinct holder once: on one node the store's only holder and the
// journal holder are the same silo, and one Sync covers both (see
// blocks.SyncHolders). Journal holder i is left out where synced[i]: it
// synced after it took the last record (AppendSync). With a single
// holder it runs inline.
func (v *volumeImpl) syncAll(ctx context.Context, synced []bool) error {
	ts := v.syncTargets(synced)
	err := parallel(ctx, len(ts), len(ts), func(i int) error { return ts[i].Sync(ctx) })
	if err != nil {
		return fmt.Errorf("volume %q: sync: %w", v.name, err)
	}
	return nil
}

// syncer is anything syncAll syncs: a holder, a journal holder, a store.
type syncer interface {
	Sync(ctx context.Context) error
}

// syncTargets returns what syncAll must sync: the store's holders (or the
// store itself when it cannot name them) and the journal holders but
// those marked in synced, without duplicates.
func (v *volumeImpl) syncTargets(synced []bool) []syncer {
	ts := make([]syncer, 0, len(v.journals)+1)
	add := func(x syncer) {
		for _, t := range ts {
			if blocks.SameHolder(t, x) {
				return
			}
		}
		ts = append(ts, x)
	}
	var hs []blocks.Holder
	if sh, ok := v.store.(blocks.SyncHolders); ok {
		hs = sh.SyncHolders()
	}
	if hs == nil {
		add(v.store)
	}
	for _, h := range hs {
		add(h)
	}
	for i, j := range v.journals {
		if i < len(synced) && synced[i] {
			continue
		}
		add(j)
	}
	return ts
}

// Flush implements Volume: push the dirty chunks, append their journal
// records, sync the store and the journal holders (a journal holder that
// implements AppendSyncer takes the last record and syncs in one step).
// Concurrent Flushes share the work: a Flush whose changes a running one
// covers waits for it.
func (v *volumeImpl) Flush(ctx context.Context) error {
	if err := v.usable(); err != nil {
		return err
	}
	if v.readOnly {
		return nil
	}
	v.mu.Lock()
	want := v.opSeq
	done := v.durableSeq >= want
	v.mu.Unlock()
	if done {
		return nil
	}
	if err := v.flushShared(ctx, want); err != nil {
		return err
	}
	if v.needsCheckpoint(true) {
		v.kickBackground()
	}
	return nil
}

// flushShared makes every change up to want durable, unless a Flush that
// ran meanwhile already did.
func (v *volumeImpl) flushShared(ctx context.Context, want uint64) error {
	v.flushMu.Lock()
	defer v.flushMu.Unlock()
	if err := v.usable(); err != nil {
		return err
	}
	v.mu.Lock()
	done := v.durableSeq >= want
	v.mu.Unlock()
	if done {
		return nil
	}
	return v.flushLocked(ctx)
}

// flushLocked makes everything changed so far durable; the caller holds flushMu.
func (v *volumeImpl) flushLocked(ctx context.Context) error {
	items, cover := v.takeDirty(0)
	if fc := v.carrier(len(items)); fc != nil {
		return v.flushCarried(ctx, fc, items, cover)
	}
	err := v.putItems(ctx, items)
	v.settle(items)
	if err != nil {
		return err
	}
	// The last record goes with a sync of each journal holder that can
	// do both in one step (AppendSyncer); syncAll then syncs the store's
	// holders (a cluster skips the nodes those syncs covered) and the
	// other journal holders. The records are sent only once every piece
	// they name was put. Across nodes a record may become durable before
	// a piece elsewhere, as when both were synced in one parallel phase:
	// the FLUSH returns only after both phases succeeded, and nothing is
	// promised before.
	synced, err := v.appendRecordsLocked(ctx, true)
	if err != nil {
		return err
	}
	return v.syncDone(ctx, synced, cover)
}

// syncDone ends a Flush whose records are appended: it syncs what the
// appends did not (syncAll) and marks every change up to cover durable.
func (v *volumeImpl) syncDone(ctx context.Context, synced []bool, cover uint64) error {
	if err := v.syncAll(ctx, synced); err != nil {
		return err
	}
	if v.fenced.Load() {
		return v.fencedErr(nil)
	}
	v.mu.Lock()
	if cover > v.durableSeq {
		v.durableSeq = cover
	}
	v.unsynced = 0 // every push so far was under flushMu, before this sync
	v.mu.Unlock()
	v.syncedAt.Store(int64(time.Since(monoBase)))
	return nil
}

// monoBase is the origin of syncedAt's clock (monotonic).
var monoBase = time.Now()

// writeBehindWindow is how recent a volume's last synced Flush must be for
// WriteBehind to act: a client that flushes after every write, or every
// few (a database's commits, a journaling file system), flushes far more
// often; one that writes in bulk and syncs now and then does not. A
// variable for tests.
var writeBehindWindow = 10 * time.Millisecond

// WriteBehind starts making the writes since the last Flush durable
// without waiting for the disk, when the volume is being flushed often
// (its last synced Flush at most writeBehindWindow ago), those writes are
// few (at most quickFlush bytes, dirty or pushed since that Flush), and
// every holder a Flush syncs is on this node (as for FlushIsQuick): it
// pushes the dirty chunks, appends their journal record, and asks each
// holder to write behind (blocks.WriteBehinder: the silo writes its
// buffer out and starts the disk). Otherwise, or when a push, checkpoint
// or Flush holds the volume's flush lock, it does nothing. It makes
// nothing durable: Flush still does, and then waits only for what the
// disk has not done yet.
//
// It is nbd.WriteBehinder's: the NBD server calls it after answering a
// WRITE while nothing else is in flight, which is where a client at queue
// depth 1, or one that sends a few writes before each FLUSH, turns around
// to send the FLUSH. A write + FLUSH pair then overlaps the disk's write
// of the data with the reply's trip to the client and back, leaving the
// FLUSH mostly the device's cache flush: fio's 4 KiB random write + fsync
// at depth 1 over NBD, four interleaved rounds, 4,268-5,182 pairs a second
// against 4,032-4,400 before (nbdkit 4,023-4,554); see design.md.
//
// An error (a failed push or append, a failed write of the silo's buffer)
// is one the next Flush reports too; the data stays as Flush would find
// it (a failed chunk stays dirty).
func (v *volumeImpl) WriteBehind(ctx context.Context) error {
	if v.readOnly || v.usable() != nil {
		return nil
	}
	last := v.syncedAt.Load()
	if last == 0 || time.Since(monoBase)-time.Duration(last) > writeBehindWindow {
		return nil
	}
	v.mu.Lock()
	few := v.dirtyBytes > 0 && v.dirtyBytes+v.unsynced <= quickFlush
	v.mu.Unlock()
	if !few || !v.flushesLocally() || !v.flushMu.TryLock() {
		return nil
	}
	defer v.flushMu.Unlock()
	if _, err := v.pushLocked(ctx); err != nil {
		return err
	}
	if err := v.appendLocked(ctx); err != nil {
		return err
	}
	for _, t := range v.syncTargets(nil) {
		if wb, ok := t.(blocks.WriteBehinder); ok {
			if err := wb.WriteBehind(); err != nil {
				return fmt.Errorf("volume %q: write behind: %w", v.name, err)
			}
		}
	}
	return nil
}

// FlushCarrier is an optional capability of a volume's journal holders
// (asked of the first): it lets a FLUSH send the pieces of its blocks to
// the nodes that hold both pieces and a journal copy together with the
// record, in one round trip to each instead of two (pieces, then record).
//
// CarryFlush returns a context for one FLUSH's Puts and last append, and
// finish. A piece Put under the context may be held back rather than
// sent; the Put then returns before the piece is stored, and the journal
// holder's AppendSync of the last record (under the same context) sends
// it along. finish, called after the appends whether they succeeded or
// not, puts every piece that was not carried or whose carrying failed
// (elsewhere if its holder is down) and returns nil only once every
// piece Put under the context is stored; otherwise those Puts are not
// known to have happened.
type FlushCarrier interface {
	CarryFlush(ctx context.Context) (context.Context, func(context.Context) error)
}

// carryMax is the most dirty chunks a carried FLUSH pushes: carrying saves
// one round trip per FLUSH, which counts for the small FLUSHes of a
// database's commits; a large one pays for its pieces anyway, and its
// records must not be appended (plain Append, before the last record)
// ahead of pieces held back for the last one.
const carryMax = 64

// carrier returns the journal holders' FlushCarrier for a FLUSH of n
// dirty chunks, or nil when the FLUSH is not carried.
func (v *volumeImpl) carrier(n int) FlushCarrier {
	if n == 0 || n > carryMax || len(v.journals) == 0 || len(v.pending)+len(v.unappended) > 0 {
		return nil
	}
	fc, _ := v.journals[0].(FlushCarrier)
	return fc
}

// flushCarried is flushLocked with the FLUSH's pieces carried by the
// journal holders' appends (see FlushCarrier). The items stay dirty
// until finish has confirmed their pieces: a FLUSH that fails leaves
// them to the next push, although their map changes may already be in
// the journal (the same address again, once the same data is put).
func (v *volumeImpl) flushCarried(ctx context.Context, fc FlushCarrier, items []pushItem, cover uint64) error {
	cctx, finish := fc.CarryFlush(ctx)
	err := v.putItems(cctx, items)
	var synced []bool
	if err == nil {
		synced, err = v.appendRecordsLocked(cctx, true)
	}
	if ferr := finish(ctx); ferr != nil {
		for i := range items {
			if items[i].err == nil {
				items[i].err = ferr
			}
		}
		if err == nil {
			err = fmt.Errorf("volume %q: push: %w", v.name, ferr)
		}
	}
	v.settle(items)
	if err != nil {
		return err
	}
	return v.syncDone(ctx, synced, cover)
}
