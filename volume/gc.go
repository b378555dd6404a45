package volume

import (
	"context"
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

// markLive marks what this open volume references in memory: its map (its
// dirty pages written out first) and its journal changes not yet appended.
func (v *volumeImpl) markLive(ctx context.Context, mark func(blocks.Addr) error) error {
	v.flushMu.Lock()
	defer v.flushMu.Unlock()
	if v.fenced.Load() || v.closed.Load() {
		return nil
	}
	root, err := v.m.Flush(ctx)
	if err != nil {
		return fmt.Errorf("volume %q: gc: flush map: %w", v.name, err)
	}
	if err := chunkmap.Walk(ctx, v.store, root, mark, mark); err != nil {
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
// Limits: writers attached on other nodes are not seen in memory; their
// flushed writes are (through the journal), but blocks they Put and have
// not yet journalled may be swept. Run it where the writers are, or while
// they are quiet. A read-only view opened before the collection may find
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
	c.mu.Lock()
	var open []*volumeImpl
	for _, v := range c.open {
		if v != nil {
			open = append(open, v)
		}
	}
	c.mu.Unlock()
	for _, v := range open {
		if err := v.markLive(ctx, mark); err != nil {
			return st, err
		}
	}
	es, _, err := c.loadCatalog(ctx)
	if err != nil {
		return st, err
	}
	for _, e := range es {
		if err := c.markVolume(ctx, e, mark); err != nil {
			return st, err
		}
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
	err = walk(ctx, func(a blocks.Addr) error {
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

// markVolume marks what one root references: its map, its kept versions,
// and its journal past the checkpoint; and records its Stored bytes.
func (c *Catalogue) markVolume(ctx context.Context, e catalogEntry, mark func(blocks.Addr) error) error {
	r, _, err := c.loadRoot(ctx, e.ID)
	if err != nil {
		return err
	}
	store, err := c.volumeStore(e.ID, r)
	if err != nil {
		return err
	}
	distinct := map[blocks.Addr]struct{}{}
	err = chunkmap.Walk(ctx, store, r.MapRoot, mark, func(a blocks.Addr) error {
		distinct[a] = struct{}{}
		return mark(a)
	})
	if err != nil {
		return fmt.Errorf("volume %q: gc: walk map: %w", r.Name, err)
	}
	for _, k := range r.Kept {
		if err := chunkmap.Walk(ctx, store, k.MapRoot, mark, mark); err != nil {
			return fmt.Errorf("volume %q: gc: walk kept version: %w", r.Name, err)
		}
	}
	var js []JournalHolder
	if !r.ReadOnly {
		if js, err = c.opts.Journals(e.ID, r.Policy); err != nil {
			return fmt.Errorf("volume %q: gc: journal holders: %w", r.Name, err)
		}
	}
	for _, j := range js {
		err := j.Replay(ctx, e.ID, r.CheckpointSeq, func(_ blocks.Epoch, _ uint64, rec []byte) error {
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
			return fmt.Errorf("volume %q: gc: replay journal: %w", r.Name, err)
		}
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
