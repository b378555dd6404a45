package chunkmap

import (
	"unsafe"

	"cairn/blocks"
)

// Geometry of the leaf index.
const (
	// leafGroupBits: a group holds the slots of 256 consecutive leaves
	// (16 bytes each: 4 KiB), allocated while one of them is in memory.
	leafGroupBits = 8
	leafGroup     = 1 << leafGroupBits
)

// maxLeafDirs bounds the directory (16 bytes a slot: 512 KiB), so the
// index covers the first 2^23 leaves of a map: 32 TiB of 4 KiB chunks at
// the default 1024 entries per page. Leaves beyond it are found in the
// pages[0] hash map only, so huge thin maps cost nothing extra. (A
// variable for tests.)
var maxLeafDirs uint64 = 1 << 15

// leafIndex finds a leaf page in memory by its index with two array loads
// (a two-level radix of pointer arrays), where a Go map lookup hashed the
// index and read the map's header, directory, table and group, and did
// two 64-bit divisions. It mirrors pages[0] (which stays the one source
// the slow paths iterate, and the only home of leaves beyond the index's
// reach): for every idx it covers, get(idx) is pages[0][idx], kept so by
// Map.keep and Map.drop and rebuilt by Resize. It is guarded by Map.mu.
//
// A profile of a volume's 4 KiB random read (BenchmarkVolume/RandRead4K)
// shows that with the map lookup gone almost all of a Get's time is the
// load of the 32-byte entry itself: a cache (and TLB) miss into the
// leaf's 32 KiB of entries that no index can save.
//
// Memory: the directory is allocated for the map's size (16 bytes per 256
// leaves: 16 KiB for a 1 TiB map at the defaults), a group only while one
// of its leaves is in memory. A cached leaf holds at most one 4 KiB group
// (1/8 of its 32 KiB page at the default 1024 entries), and neighbouring
// leaves share theirs. CacheStats.IndexBytes reports it.
type leafIndex struct {
	dir    []leafDir
	groups int // groups allocated
}

// leafDir is a directory slot: the group of leaves [i*256, (i+1)*256) and
// how many of them are in memory (the group is freed at zero).
type leafDir struct {
	g *[leafGroup]leafSlot
	n int
}

// leafSlot is a leaf in memory: its page and its first entry (&p.ent[0];
// a page's ent is never replaced). With the entries' address at hand a Get
// loads the entry and the page (for its CLOCK bit) side by side; through
// the page alone the entry's miss waited for the page's.
type leafSlot struct {
	ent *blocks.Addr
	p   *page
}

// get returns the leaf idx and true when the index covers idx (a zero
// slot when the leaf is not in memory); false when idx is beyond the
// index.
func (x *leafIndex) get(idx uint64) (leafSlot, bool) {
	d := idx >> leafGroupBits
	if d >= uint64(len(x.dir)) {
		return leafSlot{}, false
	}
	g := x.dir[d].g
	if g == nil {
		return leafSlot{}, true
	}
	return g[idx&(leafGroup-1)], true
}

// set makes p (nil: none) the leaf idx in memory; beyond the index it does
// nothing.
func (x *leafIndex) set(idx uint64, p *page) {
	d := idx >> leafGroupBits
	if d >= uint64(len(x.dir)) {
		return
	}
	dir := &x.dir[d]
	slot := idx & (leafGroup - 1)
	if dir.g == nil {
		if p == nil {
			return
		}
		dir.g = new([leafGroup]leafSlot)
		x.groups++
	}
	switch old := dir.g[slot].p; {
	case old == nil && p != nil:
		dir.n++
	case old != nil && p == nil:
		dir.n--
	}
	dir.g[slot] = leafSlot{}
	if p != nil {
		dir.g[slot] = leafSlot{ent: &p.ent[0], p: p}
	}
	if dir.n == 0 {
		dir.g = nil
		x.groups--
	}
}

// reset makes the index cover the first min(leaves, its limit) leaves and
// fills it from pages (the leaves in memory, by index).
func (x *leafIndex) reset(leaves uint64, pages map[uint64]*page) {
	// leaves <= 2^63 (E >= 2), so the sum does not overflow.
	dirs := min((leaves+leafGroup-1)/leafGroup, maxLeafDirs)
	*x = leafIndex{dir: make([]leafDir, dirs)}
	for idx, p := range pages {
		x.set(idx, p)
	}
}

// bytes returns the index's memory.
func (x *leafIndex) bytes() int64 {
	return int64(len(x.dir))*int64(unsafe.Sizeof(leafDir{})) + int64(x.groups)*int64(unsafe.Sizeof([leafGroup]leafSlot{}))
}
