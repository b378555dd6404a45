package chunkmap

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"cairn/blocks"
)

// ErrRange is returned (wrapped) by Get and Set for a chunk index at or
// beyond Len.
var ErrRange = errors.New("chunkmap: chunk out of range")

// errRestart tells a descent that the tree changed while the lock was
// released for I/O: it starts again from the root.
var errRestart = errors.New("chunkmap: restart")

// Defaults of Options.
const (
	DefaultCacheBytes  = 64 << 20
	DefaultPageEntries = 1024
	// pageOverhead approximates the memory of a cached page beyond its
	// entries (the page struct and its map slot).
	pageOverhead = 128
)

// Options configures a Map. The zero value is usable.
type Options struct {
	// CacheBytes bounds the memory held by clean cached pages (see
	// PageBytes); 0 means DefaultCacheBytes (64 MiB). Dirty pages are not
	// counted: they stay until Flush. For example, with the default 1024
	// entries a page costs about 32 KiB, so 4 MiB caches 127 pages: the
	// root and inner pages of a 1 TiB map plus about 120 leaves.
	CacheBytes int64
	// PageEntries is the number of entries per page; 0 means
	// DefaultPageEntries (1024, 32 KiB pages). Values below 2 are raised to
	// 2 and values above MaxPageEntries lowered to it. A map must be loaded
	// with the PageEntries it was written with (Load reports ErrCorrupt
	// otherwise).
	PageEntries int
	// Logger receives debug logs; nil means slog.Default().
	Logger *slog.Logger
}

// CacheStats describes the cache of clean pages.
type CacheStats struct {
	Bytes     int64  // memory of the clean cached pages (PageBytes each)
	Pages     int    // clean cached pages
	Hits      uint64 // page lookups served from memory (cached or dirty)
	Misses    uint64 // pages read from the store
	Evictions uint64 // clean pages dropped to respect CacheBytes
	// IndexBytes is the memory of the leaf index (see leafIndex), not
	// counted in Bytes nor bounded by CacheBytes: 16 bytes per 256 leaves
	// of the map (up to 512 KiB) plus 4 KiB per group of 256 consecutive
	// leaves holding a page in memory, so at most 1/8 of the pages'
	// memory beyond the fixed part at the default 1024 entries.
	IndexBytes int64
}

// PageBytes returns the memory a cached page of the given entries counts
// for in CacheStats.Bytes.
func PageBytes(entries int) int64 { return int64(entries)*32 + pageOverhead }

type pkey struct {
	level uint8
	idx   uint64
}

// page is a map page in memory: dirty (changed since the last Flush, held
// until Flush) or clean (equal to the stored page at addr, in the LRU).
type page struct {
	key   pkey
	addr  blocks.Addr   // the stored address, when clean
	ent   []blocks.Addr // PageEntries entries; for a dirty child the entry is stale
	dirty bool
	inLRU bool
	ref   bool // hit since it last reached the back of the LRU ring (see evict)
	// ver counts the changes of a dirty page; ver0 is its value when the
	// running Flush took its snapshot.
	ver, ver0 uint64
	// prev and next link the LRU of clean pages (front = most recent).
	prev, next *page
}

// Map is the chunk map of one volume. It is safe for concurrent use. Its
// lock is not held during store I/O: a Get that misses does not delay Gets
// of cached pages, and a Flush does not stop Gets and Sets.
type Map struct {
	// The fields a Get of a leaf in memory reads come first, so that it
	// touches one or two of the Map's cache lines.
	mu    sync.Mutex // guards the fields below it
	n     uint64
	hits  uint64    // CacheStats.Hits
	leaf  leafIndex // the leaves in memory, by index (mirrors pages[0])
	e     uint64    // entries per page
	shift uint      // log2(e) when e is a power of two, else 0
	mask  uint64    // e-1 when e is a power of two

	store blocks.Store
	cost  int64 // PageBytes(e)
	limit int64 // CacheBytes
	log   *slog.Logger
	width [maxLevel + 2]uint64 // width[l] = E^l chunks per entry of a level-l page, saturated

	flushMu sync.Mutex // serializes Flush and Resize; taken before mu

	height int                            // level of the root page
	top    blocks.Addr                    // stored address of the root page when it is not dirty
	root   blocks.Addr                    // root as of the last Flush or Load
	pages  [maxLevel + 1]map[uint64]*page // by level, then index: every dirty page and every cached clean page
	dirty  int                            // dirty pages
	gen    uint64                         // bumped when stored pointers change (Flush, Resize)
	lru    page                           // sentinel of the LRU ring
	bytes  int64                          // memory of the clean pages in the LRU
	nclean int                            // clean pages in the LRU
	stats  CacheStats                     // Misses, Evictions (Hits is in hits)
}

// New returns an empty map of n chunks (all holes) whose pages are stored
// in store. It does no I/O.
func New(store blocks.Store, n uint64, opts Options) *Map {
	e := opts.PageEntries
	switch {
	case e == 0:
		e = DefaultPageEntries
	case e < 2:
		e = 2
	case e > MaxPageEntries:
		e = MaxPageEntries
	}
	limit := opts.CacheBytes
	if limit <= 0 {
		limit = DefaultCacheBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Map{
		store: store,
		e:     uint64(e),
		cost:  PageBytes(e),
		limit: limit,
		log:   log,
		n:     n,
	}
	w := uint64(1)
	for l := range m.width {
		m.width[l] = w
		if w > math.MaxUint64/m.e {
			w = math.MaxUint64
		} else {
			w *= m.e
		}
	}
	if m.e&(m.e-1) == 0 {
		m.shift, m.mask = uint(bits.TrailingZeros64(m.e)), m.e-1
	}
	m.lru.prev, m.lru.next = &m.lru, &m.lru
	m.height = m.heightFor(n)
	m.leaf.reset(m.leaves(n), nil)
	return m
}

// Load opens the map whose root page is root (the zero Addr is an empty
// map) with n chunks. It reads the root page (and nothing else) and checks
// that its level and entry count fit n and opts. Errors wrap the store's
// (blocks.ErrNotFound, blocks.ErrCorrupt, blocks.ErrUnavailable), and
// blocks.ErrCorrupt for a malformed or mismatched root page.
func Load(ctx context.Context, store blocks.Store, root blocks.Addr, n uint64, opts Options) (*Map, error) {
	m := New(store, n, opts)
	if root.IsZero() {
		return m, nil
	}
	data, err := store.Get(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("chunkmap: read root page %s: %w", root, err)
	}
	p, err := m.decode(data, pkey{level: uint8(m.height)})
	if err != nil {
		return nil, fmt.Errorf("chunkmap: root page %s: %w", root, err)
	}
	m.top, m.root = root, root
	p.addr = root
	m.stats.Misses++
	m.insert(p)
	m.evict()
	return m, nil
}

// leaves returns the number of leaf pages of a map of n chunks.
func (m *Map) leaves(n uint64) uint64 {
	if n == 0 {
		return 0
	}
	return (n-1)/m.e + 1
}

// split returns the index of chunk's leaf and chunk's slot in it (a shift
// and a mask for the usual power-of-two E, not two divisions).
func (m *Map) split(chunk uint64) (idx, slot uint64) {
	if m.shift != 0 {
		return chunk >> m.shift, chunk & m.mask
	}
	return chunk / m.e, chunk % m.e
}

// heightFor returns the root level of a map of n chunks.
func (m *Map) heightFor(n uint64) int {
	h := 0
	for m.width[h+1] < n {
		h++
	}
	return h
}

// decode decodes a page read from the store for position key.
func (m *Map) decode(data []byte, key pkey) (*page, error) {
	level, ent, err := decodePage(data)
	if err != nil {
		return nil, err
	}
	if level != int(key.level) || uint64(len(ent)) != m.e {
		return nil, fmt.Errorf("chunkmap: page of level %d with %d entries where the map wants level %d with %d: %w",
			level, len(ent), key.level, m.e, blocks.ErrCorrupt)
	}
	return &page{key: key, ent: ent}, nil
}

// Len returns the number of chunks.
func (m *Map) Len() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

// Root returns the root page address as of the last Flush or Load (zero
// for an all-hole map).
func (m *Map) Root() blocks.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.root
}

// DirtyPages returns the number of pages changed since the last Flush (the
// pages the next Flush writes, at most; all-hole pages are dropped instead).
func (m *Map) DirtyPages() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dirty
}

// CacheStats returns the statistics of the clean page cache.
func (m *Map) CacheStats() CacheStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.stats
	s.Bytes, s.Pages, s.Hits, s.IndexBytes = m.bytes, m.nclean, m.hits, m.leaf.bytes()
	return s
}

// Get returns the address of chunk's block, the zero address for a hole.
// Errors: ErrRange when chunk >= Len; the store's errors (wrapped) when a
// page cannot be read. A Get whose leaf page is in memory does not
// allocate.
//
// The path of a leaf in memory is kept short because a volume's random
// read pays for every cache line it touches cold, and most for loads that
// wait on one another (see leafIndex): the Map's first line or two, the
// leaf index's directory and group, then the entry and the page (for its
// CLOCK bit) side by side, with no hashing, division, defer or error
// formatting.
func (m *Map) Get(ctx context.Context, chunk uint64) (blocks.Addr, error) {
	m.mu.Lock()
	if chunk < m.n {
		idx, slot := m.split(chunk)
		if s := m.leafSlot(idx); s.p != nil {
			a := unsafe.Slice(s.ent, m.e)[slot]
			m.hits++
			if !s.p.ref {
				s.p.ref = true
			}
			m.mu.Unlock()
			return a, nil
		}
	}
	return m.getSlow(ctx, chunk)
}

// GetRange sets out[i] to the address of chunk from+i, as Get would, for
// every i: the run of chunks a large read covers, with the map's lock
// taken once for each stretch of leaves in memory rather than per chunk
// (a lock's atomic instructions are costly when the cores' readers pass
// its cache line between them, as 1 MiB reads at depth 8 over NBD do).
// Errors are Get's.
func (m *Map) GetRange(ctx context.Context, from uint64, out []blocks.Addr) error {
	i := 0
	for i < len(out) {
		m.mu.Lock()
		for i < len(out) {
			chunk := from + uint64(i)
			if chunk >= m.n {
				break
			}
			idx, slot := m.split(chunk)
			s := m.leafSlot(idx)
			if s.p == nil {
				break
			}
			k := copy(out[i:min(len(out), i+int(m.n-chunk))], unsafe.Slice(s.ent, m.e)[slot:])
			m.hits += uint64(k)
			if !s.p.ref {
				s.p.ref = true
			}
			i += k
		}
		if i == len(out) {
			m.mu.Unlock()
			return nil
		}
		// A chunk out of range, or whose leaf is not in memory: Get's
		// slow path, which reads the leaf (or fails); then on.
		a, err := m.getSlow(ctx, from+uint64(i))
		if err != nil {
			return err
		}
		out[i] = a
		i++
	}
	return nil
}

// getSlow is Get for a chunk out of range or whose leaf is not in memory.
// It is called with m.mu held and releases it.
func (m *Map) getSlow(ctx context.Context, chunk uint64) (blocks.Addr, error) {
	defer m.mu.Unlock()
	if chunk >= m.n {
		return blocks.Addr{}, fmt.Errorf("chunkmap: get chunk %d of %d: %w", chunk, m.n, ErrRange)
	}
	var path [maxLevel + 1]*page
	ok, err := m.descend(ctx, chunk, false, &path)
	if err != nil || !ok {
		return blocks.Addr{}, err
	}
	return path[0].ent[chunk%m.e], nil
}

// Set makes chunk's address a; the zero address makes it a hole. The
// change is in memory until Flush. Errors: ErrRange when chunk >= Len; the
// store's errors (wrapped) when a page on the chunk's path cannot be read.
func (m *Map) Set(ctx context.Context, chunk uint64, a blocks.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if chunk >= m.n {
		return fmt.Errorf("chunkmap: set chunk %d of %d: %w", chunk, m.n, ErrRange)
	}
	idx, slot := m.split(chunk)
	if p := m.leafAt(idx); p != nil && (p.dirty || p.ent[slot] == a) {
		// A dirty leaf's ancestors are dirty already.
		m.hits++
		if p.ent[slot] != a {
			p.ent[slot] = a
			p.ver++
		}
		return nil
	}
	var path [maxLevel + 1]*page
	ok, err := m.descend(ctx, chunk, !a.IsZero(), &path)
	if err != nil {
		return err
	}
	if !ok || path[0].ent[chunk%m.e] == a {
		return nil // a hole in an all-hole subtree, or no change
	}
	path[0].ent[chunk%m.e] = a
	for l := 0; l <= m.height; l++ {
		m.markDirty(path[l])
	}
	return nil
}

// descend finds the pages on chunk's path, root first, into path[height..0]
// and reports whether the leaf exists. Without create it stops at an
// all-hole subtree (returning false); with create it makes new dirty pages
// for them (the caller marks the path dirty). It is called and returns with
// m.mu held but releases it while reading from the store; the path it
// returns is consistent with the tree at its return.
func (m *Map) descend(ctx context.Context, chunk uint64, create bool, path *[maxLevel + 1]*page) (bool, error) {
restart:
	g := m.gen
	p, err := m.page(ctx, pkey{uint8(m.height), 0}, m.top, g)
	if err == errRestart {
		goto restart
	}
	if err != nil {
		return false, err
	}
	for l := m.height; ; l-- {
		if p == nil {
			if !create {
				return false, nil
			}
			p = &page{key: pkey{uint8(l), chunk / m.width[l+1]}, ent: make([]blocks.Addr, m.e)}
			m.keep(p)
			// markDirty by the caller counts it.
		}
		path[l] = p
		if l == 0 {
			return true, nil
		}
		slot := chunk / m.width[l] % m.e
		p, err = m.page(ctx, pkey{uint8(l - 1), chunk / m.width[l]}, path[l].ent[slot], g)
		if err == errRestart {
			goto restart
		}
		if err != nil {
			return false, err
		}
	}
}

// page returns the page at key whose stored address (per its parent) is a:
// from memory, nil for a zero a, or read from the store. It returns
// errRestart when the tree changed while m.mu was released (g is the
// generation the caller read a under).
func (m *Map) page(ctx context.Context, key pkey, a blocks.Addr, g uint64) (*page, error) {
	if p := m.lookup(key); p != nil {
		m.touch(p)
		return p, nil
	}
	if a.IsZero() {
		return nil, nil
	}
	m.mu.Unlock()
	data, err := m.store.Get(ctx, a)
	var p *page
	if err == nil {
		p, err = m.decode(data, key)
	}
	m.mu.Lock()
	if err != nil {
		return nil, fmt.Errorf("chunkmap: read page %s (level %d, index %d): %w", a, key.level, key.idx, err)
	}
	m.stats.Misses++
	if m.gen != g {
		return nil, errRestart
	}
	if q := m.lookup(key); q != nil {
		return q, nil // read by someone else meanwhile
	}
	p.addr = a
	m.insert(p)
	m.evict()
	return p, nil
}

// lookup returns the page at key if it is in memory.
func (m *Map) lookup(key pkey) *page {
	if key.level == 0 {
		return m.leafAt(key.idx)
	}
	return m.pages[key.level][key.idx]
}

// leafAt returns the leaf page idx if it is in memory: from the leaf index
// if it covers idx, else from pages[0].
func (m *Map) leafAt(idx uint64) *page { return m.leafSlot(idx).p }

// leafSlot is leafAt with the page's first entry (a zero slot when the
// leaf is not in memory).
func (m *Map) leafSlot(idx uint64) leafSlot {
	if s, ok := m.leaf.get(idx); ok {
		return s
	}
	if p := m.pages[0][idx]; p != nil {
		return leafSlot{ent: &p.ent[0], p: p}
	}
	return leafSlot{}
}

// keep records p as the page in memory at its key.
func (m *Map) keep(p *page) {
	lv := m.pages[p.key.level]
	if lv == nil {
		lv = map[uint64]*page{}
		m.pages[p.key.level] = lv
	}
	lv[p.key.idx] = p
	if p.key.level == 0 {
		m.leaf.set(p.key.idx, p)
	}
}

// touch records a hit on p and moves it to the front of the LRU.
func (m *Map) touch(p *page) {
	m.hits++
	if !p.ref {
		p.ref = true
	}
}

// insert adds the clean page p to the map and the front of the LRU.
func (m *Map) insert(p *page) {
	m.keep(p)
	p.inLRU = true
	p.prev, p.next = &m.lru, m.lru.next
	m.lru.next.prev = p
	m.lru.next = p
	m.bytes += m.cost
	m.nclean++
}

// unlink removes p from the LRU.
func (m *Map) unlink(p *page) {
	if !p.inLRU {
		return
	}
	p.prev.next, p.next.prev = p.next, p.prev
	p.prev, p.next, p.inLRU = nil, nil, false
	m.bytes -= m.cost
	m.nclean--
}

// drop forgets p (clean or dirty).
func (m *Map) drop(p *page) {
	m.unlink(p)
	if m.lookup(p.key) == p {
		delete(m.pages[p.key.level], p.key.idx)
		if p.key.level == 0 {
			m.leaf.set(p.key.idx, nil)
		}
	}
	if p.dirty {
		p.dirty = false
		m.dirty--
	}
}

// evict drops clean pages until the cache fits, least recently used
// first, approximately: a hit only marks its page referenced (moving it to
// the front of the ring took two more cache misses per Get, on the pages
// beside it), and eviction gives a referenced page at the back a second
// chance at the front instead of dropping it (CLOCK).
func (m *Map) evict() {
	for m.bytes > m.limit && m.lru.prev != &m.lru {
		p := m.lru.prev
		if p.ref {
			p.ref = false
			if m.lru.next != p {
				p.prev.next, p.next.prev = p.next, p.prev
				p.prev, p.next = &m.lru, m.lru.next
				m.lru.next.prev = p
				m.lru.next = p
			}
			continue // ends: each turn clears a bit or drops a page
		}
		m.drop(p)
		m.stats.Evictions++
	}
}

// markDirty makes p dirty and resident (it may have been evicted, or
// re-read by another goroutine, since the caller found it).
func (m *Map) markDirty(p *page) {
	if q := m.lookup(p.key); q != p {
		if q != nil {
			m.drop(q)
		}
		m.keep(p)
	}
	p.ver++
	if !p.dirty {
		m.unlink(p)
		p.dirty = true
		m.dirty++
	}
}

// Range calls fn for every non-hole chunk in [from, to) (clipped to Len) in
// ascending order. It skips all-hole subtrees without reading them. fn is
// called without the map's lock held, so it may call the Map; a Set made
// during Range may or may not be seen. An error from fn stops Range and is
// returned as is; store errors are wrapped.
func (m *Map) Range(ctx context.Context, from, to uint64, fn func(chunk uint64, a blocks.Addr) error) error {
	var buf []blocks.Addr
	cur := from
	for {
		m.mu.Lock()
		to := min(to, m.n)
		if cur >= to {
			m.mu.Unlock()
			return nil
		}
		leaf, err := m.seek(ctx, &cur, to)
		if err != nil || leaf == nil {
			m.mu.Unlock()
			return err
		}
		buf = append(buf[:0], leaf.ent...)
		m.mu.Unlock()
		base := leaf.key.idx * m.e
		for i := cur - base; i < m.e && base+i < to; i++ {
			if !buf[i].IsZero() {
				if err := fn(base+i, buf[i]); err != nil {
					return err
				}
			}
		}
		cur = base + m.e
		if cur < base { // wrapped around the top of the uint64 range
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// seek returns the first leaf at or after *cur (and before to) that is not
// in an all-hole subtree, moving *cur forward to the first chunk of a
// skipped subtree; nil when there is none. Locking as for descend.
func (m *Map) seek(ctx context.Context, cur *uint64, to uint64) (*page, error) {
restart:
	g := m.gen
	p, err := m.page(ctx, pkey{uint8(m.height), 0}, m.top, g)
	if err == errRestart {
		goto restart
	}
	if err != nil || p == nil {
		return nil, err
	}
	for l := m.height; l > 0; l-- {
		var c *page
		slot := *cur / m.width[l] % m.e
		for ; slot < m.e; slot++ {
			start := p.key.idx*m.width[l+1] + slot*m.width[l]
			if start >= to {
				return nil, nil
			}
			if start > *cur {
				*cur = start
			}
			c, err = m.page(ctx, pkey{uint8(l - 1), start / m.width[l]}, p.ent[slot], g)
			if err == errRestart {
				goto restart
			}
			if err != nil {
				return nil, err
			}
			if c != nil {
				break
			}
		}
		if c == nil {
			// Nothing left under p: continue after it.
			end := (p.key.idx + 1) * m.width[l+1]
			if l == m.height || end <= *cur || end >= to {
				return nil, nil
			}
			*cur = end
			goto restart
		}
		p = c
	}
	return p, nil
}

// Resize makes the map n chunks long: new chunks are holes, and chunks at
// or beyond n are dropped (growing again later gives holes). The depth of
// the tree follows n. Errors: the store's (wrapped) when a page on the
// boundary path cannot be read; the map is then unchanged.
func (m *Map) Resize(ctx context.Context, n uint64) error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	if n == 0 {
		for _, lv := range m.pages {
			for _, p := range lv {
				m.drop(p)
			}
		}
		m.n, m.height, m.top = 0, 0, blocks.Addr{}
		m.leaf.reset(0, nil)
		return nil
	}
	// Read the pages on the paths to chunk n (whose entries at or beyond n
	// are cleared) and to chunk 0 (whose page at the new root level becomes
	// the root), consistently: again if the tree changed meanwhile.
	var oldH, newH int
	var atN, at0 [maxLevel + 1]*page
	haveN := false
	for {
		clear(atN[:])
		clear(at0[:])
		oldN := m.n
		oldH, newH = m.height, m.heightFor(n)
		haveN = n < oldN
		if haveN {
			if _, err := m.descend(ctx, n, false, &atN); err != nil {
				return err
			}
		}
		g := m.gen
		if newH < oldH {
			if _, err := m.descend(ctx, 0, false, &at0); err != nil {
				return err
			}
		}
		if m.gen == g && m.n == oldN {
			break
		}
	}
	m.gen++
	if n < m.n {
		// Clear the entries at or beyond n in the pages that straddle n.
		for l := oldH; haveN && l >= 0; l-- {
			p := atN[l]
			if p == nil {
				break
			}
			start := p.key.idx * m.width[l+1]
			w := m.width[l]
			s0 := (n - start) / w
			if (n-start)%w != 0 {
				s0++
			}
			changed := false
			for s := s0; s < m.e; s++ {
				if !p.ent[s].IsZero() {
					p.ent[s] = blocks.Addr{}
					changed = true
				}
			}
			if changed {
				for k := l; k <= oldH; k++ {
					m.markDirty(atN[k])
				}
			}
		}
		// Forget every page wholly at or beyond n.
		for l := 0; l < oldH; l++ {
			for idx, p := range m.pages[l] {
				if idx*m.width[l+1] >= n {
					m.drop(p)
				}
			}
		}
	}
	if newH < oldH {
		for l := newH + 1; l <= oldH; l++ {
			for _, p := range m.pages[l] {
				m.drop(p)
			}
		}
		p := m.lookup(pkey{uint8(newH), 0})
		if p == nil {
			p = at0[newH]
		}
		switch {
		case p == nil:
			m.top = blocks.Addr{}
		case !p.dirty:
			m.top = p.addr
		}
	}
	if newH > oldH {
		child := m.lookup(pkey{uint8(oldH), 0})
		if child != nil && child.dirty || !m.top.IsZero() {
			for l := oldH + 1; l <= newH; l++ {
				p := &page{key: pkey{uint8(l), 0}, ent: make([]blocks.Addr, m.e)}
				if l == oldH+1 && (child == nil || !child.dirty) {
					p.ent[0] = m.top
				}
				m.markDirty(p)
			}
		}
	}
	m.n, m.height = n, newH
	m.leaf.reset(m.leaves(n), m.pages[0])
	m.evict()
	return nil
}

// Flush writes every page that is dirty when it starts, children before
// parents, with store.Put, and returns the new root address (zero for an
// all-hole map). The root is a snapshot of the map as of the call: Sets
// made while Flush runs are kept, dirty, for the next Flush. The pages are
// not durable until the caller's store.Sync, which must come before the
// root is published. Pages whose entries are all zero are not written.
//
// Flush releases the map's lock while it writes (each level's pages with
// up to FlushParallelism concurrent Puts), so Gets and Sets proceed;
// Flushes and Resizes wait for one another. On error the map stays
// consistent: what was written is clean, the rest still dirty, and a later
// Flush carries on.
func (m *Map) Flush(ctx context.Context) (blocks.Addr, error) {
	return m.FlushSnapshot(ctx, nil)
}

// FlushSnapshot is Flush that calls taken (when not nil) once the snapshot
// it writes out is fixed, before any page is written: a Set that returns
// before taken is called is in the returned root, one made after it is
// not. taken runs without the map's lock held (it may call Get and Set),
// exactly once, before any error FlushSnapshot can return. A caller that
// keeps the map's state in step with something else (the volume's journal
// sequence) reads that state in taken, and can let its writers go on from
// there while the pages are written.
func (m *Map) FlushSnapshot(ctx context.Context, taken func()) (blocks.Addr, error) {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirty == 0 {
		m.root = m.top
		if taken != nil {
			m.mu.Unlock()
			taken()
			m.mu.Lock()
		}
		return m.root, nil
	}
	// The snapshot: the dirty pages and their versions. Leaves are encoded
	// now; inner pages change only by Flush (Sets change leaves, Resize
	// waits for flushMu), so they still describe the snapshot when their
	// level's turn comes.
	height := m.height
	byLevel := make([][]*page, height+1)
	for l := 0; l <= height; l++ {
		for _, p := range m.pages[l] {
			if p.dirty {
				p.ver0 = p.ver
				byLevel[l] = append(byLevel[l], p)
			}
		}
		slices.SortFunc(byLevel[l], func(a, b *page) int { return cmp.Compare(a.key.idx, b.key.idx) })
	}
	var root blocks.Addr
	var stay map[uint64]bool // indices at this level with a child that stays dirty
	written := 0
	for l, pages := range byLevel {
		next := map[uint64]bool{}
		bufs := make([][]byte, len(pages))
		for i, p := range pages {
			if b, ok := encodePage(nil, l, p.ent); ok {
				bufs[i] = b
			}
		}
		m.mu.Unlock()
		if l == 0 && taken != nil {
			// The leaves are encoded and every dirty page's version noted
			// (ver0): the snapshot is fixed.
			taken()
		}
		addrs, err := m.putAll(ctx, bufs)
		m.mu.Lock()
		if err != nil {
			m.evict()
			return blocks.Addr{}, fmt.Errorf("chunkmap: write pages of level %d: %w", l, err)
		}
		m.gen++
		for i, p := range pages {
			a := addrs[i]
			if !a.IsZero() {
				written++
			}
			if l == height {
				root = a
			} else {
				parent := m.lookup(pkey{uint8(l + 1), p.key.idx / m.e})
				if parent == nil || !parent.dirty {
					// Unreachable: a dirty page's ancestors are dirty.
					return blocks.Addr{}, fmt.Errorf("chunkmap: internal error: dirty page (level %d, index %d) without a dirty parent", l, p.key.idx)
				}
				parent.ent[p.key.idx%m.e] = a
			}
			if p.ver != p.ver0 || stay[p.key.idx] {
				next[p.key.idx/m.e] = true // changed since the snapshot: stays dirty
				continue
			}
			if a.IsZero() {
				m.drop(p)
				continue
			}
			p.dirty, p.addr = false, a
			m.dirty--
			m.insert(p)
		}
		stay = next
	}
	m.top, m.root = root, root
	m.evict()
	m.log.Debug("chunkmap: flushed", "pages", written, "root", root, "dirty", m.dirty)
	return root, nil
}

// FlushParallelism is the number of concurrent Puts of one Flush.
const FlushParallelism = 8

// putAll stores the non-nil buffers, up to FlushParallelism at a time, and
// returns their addresses (zero for a nil buffer). Called without m.mu.
func (m *Map) putAll(ctx context.Context, bufs [][]byte) ([]blocks.Addr, error) {
	addrs := make([]blocks.Addr, len(bufs))
	var (
		next   atomic.Int64
		wg     sync.WaitGroup
		errMu  sync.Mutex
		first  error
		failed atomic.Bool
	)
	work := func() {
		for !failed.Load() {
			i := int(next.Add(1) - 1)
			if i >= len(bufs) {
				return
			}
			if bufs[i] == nil {
				continue
			}
			a, err := m.store.Put(ctx, bufs[i])
			if err != nil {
				errMu.Lock()
				if first == nil {
					first = err
				}
				errMu.Unlock()
				failed.Store(true)
				return
			}
			addrs[i] = a
		}
	}
	for range min(FlushParallelism, len(bufs)) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return addrs, first
}

// Walk calls page for every map page address and chunk for every chunk
// address reachable from root, for the garbage collector's mark phase. Each
// distinct page is read and reported once per Walk (equal subtrees are
// shared); chunk may be called more than once for one address. Walk reads
// through store and neither uses nor fills any Map's cache. An error from
// page or chunk stops the walk and is returned as is; store errors and
// malformed pages (blocks.ErrCorrupt) are wrapped.
func Walk(ctx context.Context, store blocks.Getter, root blocks.Addr, page func(blocks.Addr) error, chunk func(blocks.Addr) error) error {
	if root.IsZero() {
		return nil
	}
	w := walker{store: store, page: page, chunk: chunk, seen: map[blocks.Addr]bool{}}
	return w.walk(ctx, root, -1, 0)
}

type walker struct {
	store       blocks.Getter
	page, chunk func(blocks.Addr) error
	seen        map[blocks.Addr]bool
}

// walk visits the page at a, which must be at level want (-1: any) with e
// entries (0: any).
func (w *walker) walk(ctx context.Context, a blocks.Addr, want, e int) error {
	if w.seen[a] {
		return nil
	}
	w.seen[a] = true
	if err := w.page(a); err != nil {
		return err
	}
	data, err := w.store.Get(ctx, a)
	if err != nil {
		return fmt.Errorf("chunkmap: walk: read page %s: %w", a, err)
	}
	level, ent, err := decodePage(data)
	if err != nil {
		return fmt.Errorf("chunkmap: walk: page %s: %w", a, err)
	}
	if want >= 0 && level != want || e > 0 && len(ent) != e {
		return fmt.Errorf("chunkmap: walk: page %s has level %d and %d entries, want level %d and %d: %w",
			a, level, len(ent), want, e, blocks.ErrCorrupt)
	}
	for _, c := range ent {
		if c.IsZero() {
			continue
		}
		if level == 0 {
			err = w.chunk(c)
		} else {
			err = w.walk(ctx, c, level-1, len(ent))
		}
		if err != nil {
			return err
		}
	}
	return nil
}
