package volume

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"cairn/blocks"
	"cairn/volume/chunkmap"
)

// GCStats reports one garbage collection.
type GCStats struct {
	Marked int64 // distinct blocks reachable from some root, journal or open volume
	Swept  int64 // blocks deleted
}

// gcTracker records the addresses Put while a collection runs, and keeps
// Puts and sweeping deletes mutually exclusive.
type gcTracker struct {
	active atomic.Int32
	mu     sync.RWMutex // Put holds it shared; a sweep batch exclusively
	putMu  sync.Mutex   // guards put
	put    map[blocks.Addr]struct{}
}

func (g *gcTracker) note(a blocks.Addr) {
	if g.active.Load() == 0 {
		return
	}
	g.putMu.Lock()
	if g.put != nil {
		g.put[a] = struct{}{}
	}
	g.putMu.Unlock()
}

func (g *gcTracker) wasPut(a blocks.Addr) bool {
	g.putMu.Lock()
	defer g.putMu.Unlock()
	_, ok := g.put[a]
	return ok
}

// trackedStore is a volume's store: every Put is recorded while a
// collection runs, and never overlaps a sweep's deletes.
type trackedStore struct {
	blocks.Store
	gc *gcTracker
}

var (
	_ blocks.SizedPutter = (*trackedStore)(nil)
	_ blocks.SyncHolders = (*trackedStore)(nil)
	_ blocks.GetterInto  = (*trackedStore)(nil)
	_ blocks.ManyGetter  = (*trackedStore)(nil)
	_ blocks.SplitGetter = (*trackedStore)(nil)
	_ blocks.Viewer      = (*trackedStore)(nil)
)

// GetSplit implements blocks.SplitGetter: the wrapped store's, or false.
func (s *trackedStore) GetSplit(ctx context.Context, a blocks.Addr, head, tail, scratch []byte) bool {
	sg, ok := s.Store.(blocks.SplitGetter)
	return ok && sg.GetSplit(ctx, a, head, tail, scratch)
}

// ViewMany implements blocks.Viewer: the wrapped store's, or no views.
func (s *trackedStore) ViewMany(ctx context.Context, addrs []blocks.Addr, views [][]byte) func() {
	if vw, ok := s.Store.(blocks.Viewer); ok {
		return vw.ViewMany(ctx, addrs, views)
	}
	return blocks.NoRelease
}

// GetInto implements blocks.GetterInto: the wrapped store's, or its Get.
func (s *trackedStore) GetInto(ctx context.Context, a blocks.Addr, dst []byte) ([]byte, error) {
	if gi, ok := s.Store.(blocks.GetterInto); ok {
		return gi.GetInto(ctx, a, dst)
	}
	return s.Store.Get(ctx, a)
}

// GetMany implements blocks.ManyGetter: the wrapped store's, or its Get
// for each block.
func (s *trackedStore) GetMany(ctx context.Context, addrs []blocks.Addr, buf *[]byte) ([][]byte, []error) {
	if mg, ok := s.Store.(blocks.ManyGetter); ok {
		return mg.GetMany(ctx, addrs, buf)
	}
	out, errs := make([][]byte, len(addrs)), make([]error, len(addrs))
	for i, a := range addrs {
		out[i], errs[i] = s.Store.Get(ctx, a)
	}
	return out, errs
}

// SyncHolders implements blocks.SyncHolders: the wrapped store's, or nil
// ("call Sync") when it cannot tell. Sync is the wrapped store's.
func (s *trackedStore) SyncHolders() []blocks.Holder {
	if sh, ok := s.Store.(blocks.SyncHolders); ok {
		return sh.SyncHolders()
	}
	return nil
}

// Put implements blocks.Putter.
func (s *trackedStore) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	a, _, err := s.PutSized(ctx, data)
	return a, err
}

// PutSized implements blocks.SizedPutter; without the capability below,
// the stored size is len(data).
func (s *trackedStore) PutSized(ctx context.Context, data []byte) (blocks.Addr, int, error) {
	s.gc.mu.RLock()
	defer s.gc.mu.RUnlock()
	var a blocks.Addr
	var n int
	var err error
	if sp, ok := s.Store.(blocks.SizedPutter); ok {
		a, n, err = sp.PutSized(ctx, data)
	} else {
		a, err = s.Store.Put(ctx, data)
		n = len(data)
	}
	if err == nil {
		s.gc.note(a)
	}
	return a, n, err
}

// markLive marks what this open volume references in memory: its map
// (its dirty pages written out first) and its journal changes not yet
// appended. With pagesOnly, only the map's pages are marked of the map,
// not the chunks its leaves point at: every chunk the map holds is also
// in the root or the journal (or the changes marked here), which a
// collector reads afterwards (see MarkStored), whereas a page written out
// since the last checkpoint is referenced from memory only.
func (v *volumeImpl) markLive(ctx context.Context, pagesOnly bool, mark func(blocks.Addr) error) error {
	// Not in the middle of a checkpoint: the pages of a map root written
	// out but not yet swapped into the root are in neither this map (if
	// rewritten since) nor the stored root the collector reads next.
	v.ckptMu.Lock()
	defer v.ckptMu.Unlock()
	v.flushMu.Lock()
	defer v.flushMu.Unlock()
	if v.fenced.Load() || v.closed.Load() {
		return nil
	}
	root, err := v.m.Flush(ctx)
	if err != nil {
		return fmt.Errorf("volume %q: gc: flush map: %w", v.name, err)
	}
	chunks := mark
	if pagesOnly {
		chunks = func(blocks.Addr) error { return nil }
	}
	if err := chunkmap.Walk(ctx, v.store, root, mark, chunks); err != nil {
		return fmt.Errorf("volume %q: gc: walk map: %w", v.name, err)
	}
	for _, c := range v.pending {
		if err := mark(c.Addr); err != nil {
			return err
		}
	}
	for _, b := range v.unappended {
		cs, err := decodeRecord(b.rec)
		if err != nil {
			return err
		}
		for _, c := range cs {
			if err := mark(c.Addr); err != nil {
				return err
			}
		}
	}
	return nil
}

// markOpen runs markLive on every volume open read-write in this process.
func (c *Catalogue) markOpen(ctx context.Context, pagesOnly bool, mark func(blocks.Addr) error) error {
	c.mu.Lock()
	var open []*volumeImpl
	for _, v := range c.open {
		if v != nil {
			open = append(open, v)
		}
	}
	c.mu.Unlock()
	for _, v := range open {
		if err := v.markLive(ctx, pagesOnly, mark); err != nil {
			return err
		}
	}
	return nil
}

// LiveRefs marks what the volumes open read-write in this process
// reference from memory only: the pages of their maps written out since
// the last checkpoint (each map's dirty pages are written out first) and
// their map changes not yet in the journal. A cluster's collector calls it
// on every node, after every node has begun its sweep and before it reads
// the roots and journals (MarkStored): a block Put before the sweep began
// is then either referenced from memory now (the volume's flush lock,
// held here, covers every Put and the change that records it), or from a
// root or journal that MarkStored reads, or by nothing.
func (c *Catalogue) LiveRefs(ctx context.Context, mark func(blocks.Addr) error) error {
	return c.markOpen(ctx, true, mark)
}

// CollectGarbage deletes the blocks nothing references. It marks every
// block reachable from every root in the catalogue (live maps, snapshots,
// kept versions), every address in journal records past a checkpoint, and
// the in-memory state of the volumes open read-write in this process; then
// it calls walk to list the stored blocks and deletes, through
// Options.Blocks, each one that is neither marked nor Put since the
// collection began. A Put and a sweep's delete never overlap, so a block
// written again during the sweep survives.
//
// It also measures each writable volume's Stored bytes (distinct mapped
// chunks times the stored/plaintext ratio of its Puts) and records it in
// the root (one compare-and-set per volume).
//
// Limits: writers attached in other processes are not seen in memory;
// their flushed writes are (through the journal), but blocks they Put and
// have not yet journalled may be swept. A cluster collects with LiveRefs
// on every node and MarkStored instead (internal/node/gc_cluster.go). A read-only view opened before the collection may find
// blocks its writer has since replaced gone (snapshots are safe).
func (c *Catalogue) CollectGarbage(ctx context.Context, walk func(ctx context.Context, fn func(blocks.Addr) error) error) (GCStats, error) {
	var st GCStats
	if c.opts.Blocks == nil {
		return st, fmt.Errorf("volume: CollectGarbage needs Options.Blocks (the store to delete through): %w", ErrInvalid)
	}
	g := &c.gc
	g.putMu.Lock()
	if g.active.Add(1) == 1 {
		g.put = map[blocks.Addr]struct{}{}
	}
	g.putMu.Unlock()
	defer func() {
		g.putMu.Lock()
		if g.active.Add(-1) == 0 {
			g.put = nil
		}
		g.putMu.Unlock()
	}()

	marked := map[blocks.Addr]struct{}{}
	mark := func(a blocks.Addr) error {
		if !a.IsZero() {
			marked[a] = struct{}{}
		}
		return nil
	}
	if err := c.markOpen(ctx, false, mark); err != nil {
		return st, err
	}
	if err := c.MarkStored(ctx, mark); err != nil {
		return st, err
	}
	st.Marked = int64(len(marked))

	// Sweep in batches; each batch excludes Puts while it re-checks and deletes.
	var cand []blocks.Addr
	sweep := func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, a := range cand {
			if g.wasPut(a) {
				continue
			}
			if err := c.opts.Blocks.Delete(ctx, a); err != nil {
				return fmt.Errorf("volume: gc: delete %s: %w", a, err)
			}
			st.Swept++
		}
		cand = cand[:0]
		return nil
	}
	err := walk(ctx, func(a blocks.Addr) error {
		if _, ok := marked[a]; ok {
			return nil
		}
		cand = append(cand, a)
		if len(cand) >= 256 {
			return sweep()
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("volume: gc: walk: %w", err)
	}
	if err := sweep(); err != nil {
		return st, err
	}
	c.log.Info("garbage collected", "marked", st.Marked, "swept", st.Swept)
	return st, nil
}

// maxCatalogueRounds bounds MarkStored's re-reads of the catalogue (each
// one marks the volumes created meanwhile).
const maxCatalogueRounds = 16

// maxRootRereads bounds markVolume's retries of a root that checkpoints
// while it is read.
const maxRootRereads = 8

// MarkStored marks what the catalogue's roots reference: each volume's map
// (pages and chunks), its kept versions, and its journal records past the
// checkpoint, on every journal holder (one unreachable fails the call:
// its records cannot be read, so nothing may be swept). It reads each root
// again after its journal and starts over if a checkpoint moved it
// meanwhile (the checkpoint trims the records it covers), and reads the
// catalogue again at the end, marking the volumes created meanwhile
// (clones), until it finds none new. It also records each writable
// volume's Stored bytes (see CollectGarbage).
func (c *Catalogue) MarkStored(ctx context.Context, mark func(blocks.Addr) error) error {
	seen := map[blocks.ID]bool{}
	for round := 0; ; round++ {
		es, _, err := c.loadCatalog(ctx)
		if err != nil {
			return err
		}
		fresh := 0
		for _, e := range es {
			if seen[e.ID] {
				continue
			}
			seen[e.ID] = true
			fresh++
			if err := c.markVolume(ctx, e, mark); err != nil {
				return err
			}
		}
		if fresh == 0 {
			return nil
		}
		if round == maxCatalogueRounds {
			return fmt.Errorf("volume: gc: volumes kept being created during the collection (%d rounds); try again", round)
		}
	}
}

// markVolume marks what one root references: its map, its kept versions,
// and its journal past the checkpoint; and records its Stored bytes. A
// volume deleted meanwhile is skipped.
func (c *Catalogue) markVolume(ctx context.Context, e catalogEntry, mark func(blocks.Addr) error) error {
	r, _, err := c.loadRoot(ctx, e.ID)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var distinct map[blocks.Addr]struct{}
	for try := 0; ; try++ {
		if distinct, err = c.markRoot(ctx, e.ID, r, mark); err != nil {
			return err
		}
		again, _, err := c.loadRoot(ctx, e.ID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if sameMaps(r, again) {
			break
		}
		if try == maxRootRereads {
			return fmt.Errorf("volume %q: gc: the volume checkpointed %d times while it was read; try again", r.Name, try+1)
		}
		r = again
	}
	stored := int64(len(distinct)) * int64(r.Policy.BlockSize)
	if r.PutLogical > 0 {
		stored = int64(float64(stored) * float64(r.PutStored) / float64(r.PutLogical))
	}
	now := c.opts.Now().UTC()
	_, err = c.updateRoot(ctx, e.ID, func(r *rootRecord) error {
		r.Stored, r.StoredAt = stored, now
		return nil
	})
	if err != nil {
		c.log.Warn("could not record stored bytes", "volume", r.Name, "err", err)
	}
	return nil
}

// sameMaps reports whether two reads of a root reference the same maps and
// journal records: the same map, checkpoint and kept versions.
func sameMaps(a, b *rootRecord) bool {
	if a.MapRoot != b.MapRoot || a.CheckpointSeq != b.CheckpointSeq || len(a.Kept) != len(b.Kept) {
		return false
	}
	for i := range a.Kept {
		if a.Kept[i].MapRoot != b.Kept[i].MapRoot {
			return false
		}
	}
	return true
}

// markRoot marks what root r of volume id references and returns the
// distinct chunks of its map.
func (c *Catalogue) markRoot(ctx context.Context, id blocks.ID, r *rootRecord, mark func(blocks.Addr) error) (map[blocks.Addr]struct{}, error) {
	store, err := c.volumeStore(id, r)
	if err != nil {
		return nil, err
	}
	distinct := map[blocks.Addr]struct{}{}
	err = chunkmap.Walk(ctx, store, r.MapRoot, mark, func(a blocks.Addr) error {
		distinct[a] = struct{}{}
		return mark(a)
	})
	if err != nil {
		return nil, fmt.Errorf("volume %q: gc: walk map: %w", r.Name, err)
	}
	for _, k := range r.Kept {
		if err := chunkmap.Walk(ctx, store, k.MapRoot, mark, mark); err != nil {
			return nil, fmt.Errorf("volume %q: gc: walk kept version: %w", r.Name, err)
		}
	}
	var js []JournalHolder
	if !r.ReadOnly {
		if js, err = c.opts.Journals(id, r.Policy); err != nil {
			return nil, fmt.Errorf("volume %q: gc: journal holders: %w", r.Name, err)
		}
	}
	for _, j := range js {
		err := j.Replay(ctx, id, r.CheckpointSeq, func(_ blocks.Epoch, _ uint64, rec []byte) error {
			cs, err := decodeRecord(rec)
			if err != nil {
				return err
			}
			for _, ch := range cs {
				if err := mark(ch.Addr); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("volume %q: gc: replay journal: %w", r.Name, err)
		}
	}
	return distinct, nil
}
