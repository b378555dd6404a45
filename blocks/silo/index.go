package silo

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"syscall"
	"unsafe"

	"cairn/blocks"
)

// The silo's index: an open-addressing hash table built for its keys
// (32-byte hashes) and entries.
//
// A Go map lookup of a random key touches a directory, a control word and
// a 56-byte slot, in different cache lines and 4 KiB pages: about 0.6 µs
// when the caches are cold, a third of a random 4 KiB read's CPU time. The
// table here keeps key and entry together in one 64-byte slot aligned to a
// cache line, found by linear probing from the key's home slot, so a
// lookup usually touches one line, the next few at most (the hardware
// prefetches them, they are contiguous). Large tables live in anonymous
// mappings advised for transparent huge pages, so that a lookup misses the
// TLB less often too.
//
// Load factor: a table doubles when an insert would take it past 0.8. With
// linear probing a lookup of a present key then probes 3 slots on average
// at worst (0.5·(1+1/(1-α)); 1.75 at the mean load of about 0.6), and an
// insert of a new key 13 at worst (0.5·(1+1/(1-α)²); 3.6 at 0.6), all
// contiguous. Memory is 64/α bytes per entry: 80 to 160, about 111 on
// average over sizes. The Go map it replaced costs the same on the heap
// (128, 89.5 and 107 bytes per entry at 1M, 1.5M and 10M entries, both),
// more in RSS (see BenchmarkIndexMemory). A higher load would save memory
// but lengthen the probes of inserts steeply.
//
// Deletion shifts the following slots of the probe chain back (no
// tombstones), so a table never fills with dead slots. Tables never
// shrink (the Go map did not either).
//
// Growth is incremental: rehashing in one go stalled an insert for 3.2 s
// when a table of 10M entries doubled (8M slots into 16M, the new table's
// 1 GiB faulted in on the spot; BenchmarkIndexGrow). The new table (twice
// the size) takes every insert while the old one is consulted too, and
// each insert moves up to migrateBatch of the old table's slots over. The
// longest insert is then bounded by page faults (a huge page's first
// touch, about 1 ms here, rarely tens of ms when the kernel compacts
// memory for it), not by the table's size.
//
// A mapped table's pages are faulted in before it is needed. A huge page's
// first touch makes the kernel find 2 MiB of free contiguous memory, and
// with the page cache holding most of it (this project's development VM,
// transparent huge pages on madvise, the default) each took 4.5 ms of
// compaction: when the silo's table grew from 256Ki to 512Ki slots (about
// 210,000 pieces, 800 MiB of 4 KiB blocks), the new table's 16 huge pages
// were faulted in one by one by the inserts that first touched them,
// under the silo's lock, and internal/node's WriteFlush4K saw 16 write +
// flush pairs in a row take 5 ms each (78 ms in all, against 0.1 ms a
// pair) while every reader waited too; a table of 10M entries has 512 of
// them. So once the table passes prepLoad, the silo has the next table
// made in the background (prepare: mapped, advised, its pages populated
// with MADV_POPULATE_WRITE, or touched where that is missing), and grow
// takes it (adoptPrep) instead of a fresh mapping. The memory is taken a
// little earlier (at 0.75 load instead of 0.8), the same amount.

const (
	// slotSize is a slot's size: one cache line.
	slotSize = 64
	// minSlots is the size of a new index's table.
	minSlots = 16
	// mapBytes is the table size from which tables are allocated as
	// anonymous mappings advised for huge pages (one huge page).
	mapBytes = 2 << 20
	// hugePage is the alignment of mapped tables.
	hugePage = 2 << 20
	// madvHugepage is MADV_HUGEPAGE (package syscall lacks it).
	madvHugepage = 14
	// migrateBatch is how many of the old table's slots an insert migrates
	// while a migration runs. A migration takes one pass over the old
	// table (see migrate): at most 1.8·len(old) steps, and the new table,
	// at load 0.4 when it starts, would grow 0.8·len(old) inserts later, so
	// any batch over 2.25 finishes in time. Lookups of keys not yet moved
	// probe both tables (two cache misses) and memory is 1.5 times the new
	// table's while a migration runs, so a larger batch keeps it short: 64
	// slots (4 KiB read, at most 64 entries moved, a few microseconds per
	// insert) end it within 0.03·len(old) inserts.
	migrateBatch = 64
	// prepLoad is the load from which the next, twice larger table is
	// prepared in the background (see prepWanted). Between it and the
	// growth at 0.8 a table of n slots takes 0.05·n inserts: 26,000 for
	// the 512Ki-slot table, whose successor (64 MiB, 32 huge pages)
	// takes about 150 ms to prepare on a fragmented memory. A prepared
	// table is held from there (twice the current table's memory, which
	// the growth takes anyway); an index whose deletions take it back
	// under prepDrop lets it go, so that one hovering below the growth
	// does not hold it for good.
	prepLoad = 0.75
	prepDrop = 0.65
	// oneShotSlots is the size up to which a table is rehashed at once
	// rather than incrementally (a few microseconds).
	oneShotSlots = 4096
)

// Slot flags.
const (
	slotUsed  = 1 << iota // the slot holds an entry
	slotBad               // entry.bad
	slotMoved             // entry.moved
)

// slot is one cell of a table: a key, its hash and its entry, in one
// 64-byte cache line. It holds no pointers, so tables can live outside the
// Go heap.
type slot struct {
	key         blocks.Addr
	hash        uint64 // the key's hash: its home is hash >> table.shift
	stamp       uint64
	seg, off, n uint32
	flags       uint32
}

// Compile-time check that a slot is exactly one cache line.
var _ [slotSize - unsafe.Sizeof(slot{})]struct{}
var _ [unsafe.Sizeof(slot{}) - slotSize]struct{}

// entry returns the slot's entry.
func (s *slot) entry() entry {
	return entry{loc: loc{seg: s.seg, off: s.off, n: s.n}, bad: s.flags&slotBad != 0, moved: s.flags&slotMoved != 0, stamp: s.stamp}
}

// put stores e in the slot (its key and hash already set) and marks it
// used.
func (s *slot) put(e entry) {
	s.seg, s.off, s.n, s.stamp = e.seg, e.off, e.n, e.stamp
	s.flags = slotUsed
	if e.bad {
		s.flags |= slotBad
	}
	if e.moved {
		s.flags |= slotMoved
	}
}

// region is an anonymous mapping holding a table. A cleanup unmaps it if
// it becomes unreachable without free (a silo dropped without Close).
type region struct {
	mem     []byte // the mapping as Mmap returned it
	cleanup runtime.Cleanup
}

// table is a linear-probing hash table with a power-of-two number of
// slots.
type table struct {
	slots []slot
	shift uint    // 64 - log2(len(slots)): a hash's top bits are its home
	n     int     // used slots
	reg   *region // the mapping holding slots, or nil (Go heap)
}

// newTable returns an empty table of n slots (a power of two): in a mapping
// advised for huge pages if it is large, else on the Go heap.
func newTable(n int) table {
	t := table{shift: 64 - uint(bits.Len(uint(n-1)))}
	if n*slotSize >= mapBytes {
		if reg, slots := mapSlots(n); reg != nil {
			t.slots, t.reg = slots, reg
			return t
		}
	}
	t.slots = make([]slot, n)
	return t
}

// adviseHuge tells mapSlots to advise huge pages (a test hook).
var adviseHuge = true

// mapSlots allocates n slots in an anonymous private mapping aligned to a
// huge page and advised for huge pages. It returns nil if the mapping
// fails (the caller falls back to the Go heap).
func mapSlots(n int) (*region, []slot) {
	size := n * slotSize
	mem, err := syscall.Mmap(-1, 0, size+hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return nil, nil
	}
	skip := int(-uintptr(unsafe.Pointer(&mem[0])) & (hugePage - 1))
	body := mem[skip : skip+size]
	// Best effort: without THP (EINVAL) the table works on small pages.
	if adviseHuge {
		_ = syscall.Madvise(body, madvHugepage)
	}
	reg := &region{mem: mem}
	reg.cleanup = runtime.AddCleanup(reg, func(m []byte) { _ = syscall.Munmap(m) }, mem)
	return reg, unsafe.Slice((*slot)(unsafe.Pointer(&body[0])), n)
}

// free releases the table's memory and leaves it empty, with no slots.
func (t *table) free() {
	if t.reg != nil {
		t.reg.cleanup.Stop()
		_ = syscall.Munmap(t.reg.mem)
	}
	*t = table{}
}

// find returns the slot of key (with hash h), or -1.
func (t *table) find(key *blocks.Addr, h uint64) int {
	if t.n == 0 {
		return -1
	}
	mask := len(t.slots) - 1
	for i := int(h >> t.shift); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.flags&slotUsed == 0 {
			return -1
		}
		if s.hash == h && s.key == *key {
			return i
		}
	}
}

// insert stores a copy of src, whose key the table does not hold, in the
// first free slot from its home. The table must have a free slot.
func (t *table) insert(src *slot) {
	mask := len(t.slots) - 1
	i := int(src.hash >> t.shift)
	for t.slots[i].flags&slotUsed != 0 {
		i = (i + 1) & mask
	}
	t.slots[i] = *src
	t.n++
}

// remove empties slot i, shifting back the later slots of its probe chain
// that may move closer to their homes (backward-shift deletion), so that
// every entry stays reachable from its home without tombstones.
func (t *table) remove(i int) {
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j].flags&slotUsed != 0; j = (j + 1) & mask {
		home := int(t.slots[j].hash >> t.shift)
		// Slot j's entry may move to i if i lies in [home, j) cyclically.
		if (j-home)&mask >= (j-i)&mask {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = slot{}
	t.n--
}

// full reports whether the table would pass its maximum load (0.8) with
// n entries.
func (t *table) full(n int) bool {
	return n*5 > len(t.slots)*4
}

// index maps piece keys to their entries (see the top of this file). It is
// not safe for concurrent use: the silo calls get, len and all under s.mu
// held shared or exclusively, set and del under s.mu held exclusively.
// The zero value is not usable: make one with newIndex.
type index struct {
	cur  table  // the table taking inserts
	old  table  // the table being migrated into cur; no slots when none
	next int    // old's next slot to migrate
	seed uint64 // mixed into every hash
	// prep is an empty table of twice cur's slots, its pages faulted in,
	// for grow to take; no slots when none. preparing is set while the
	// silo has one made (prepWanted, adoptPrep).
	prep      table
	preparing bool
	adopted   int // grows that took a prepared table (tests)
	// oneShot is the table size up to which growth rehashes at once
	// (oneShotSlots; tests change it).
	oneShot int
	// hashFn, when set (tests only), replaces the seeded hash.
	hashFn func(key blocks.Addr) uint64
}

// newIndex returns an empty index.
func newIndex() *index {
	return &index{cur: newTable(minSlots), seed: rand.Uint64(), oneShot: oneShotSlots}
}

// hash returns key's hash: its first 8 bytes (the keys are hashes
// themselves) xor the index's random seed, mixed by the finalizer of
// MurmurHash3, so that a set of keys crafted to share a home in one process
// spreads in another.
func (ix *index) hash(key *blocks.Addr) uint64 {
	if ix.hashFn != nil {
		return ix.hashFn(*key)
	}
	h := binary.LittleEndian.Uint64(key[:8]) ^ ix.seed
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// len returns the number of entries.
func (ix *index) len() int { return ix.cur.n + ix.old.n }

// get returns key's entry and whether it is present.
func (ix *index) get(key blocks.Addr) (entry, bool) {
	h := ix.hash(&key)
	if i := ix.cur.find(&key, h); i >= 0 {
		return ix.cur.slots[i].entry(), true
	}
	if i := ix.old.find(&key, h); i >= 0 {
		return ix.old.slots[i].entry(), true
	}
	return entry{}, false
}

// set makes e key's entry.
func (ix *index) set(key blocks.Addr, e entry) {
	h := ix.hash(&key)
	if i := ix.cur.find(&key, h); i >= 0 {
		ix.cur.slots[i].put(e)
		return
	}
	if i := ix.old.find(&key, h); i >= 0 {
		ix.old.slots[i].put(e) // it moves when the migration reaches it
		return
	}
	if ix.cur.slots == nil {
		ix.cur = newTable(minSlots) // set after free
	}
	if ix.cur.full(ix.len() + 1) {
		ix.grow()
	}
	s := slot{key: key, hash: h}
	s.put(e)
	ix.cur.insert(&s)
	if ix.old.n > 0 {
		ix.migrate(migrateBatch)
	}
}

// del removes key's entry, if any.
func (ix *index) del(key blocks.Addr) {
	h := ix.hash(&key)
	if i := ix.cur.find(&key, h); i >= 0 {
		ix.cur.remove(i)
	} else if i := ix.old.find(&key, h); i >= 0 {
		ix.old.remove(i)
		if ix.old.n == 0 {
			ix.endMigration()
		}
	}
	if ix.prep.slots != nil && float64(ix.len()) < prepDrop*float64(len(ix.cur.slots)) {
		ix.prep.free() // back well under the growth (see prepLoad)
	}
}

// grow replaces the current table with one twice its size and starts
// migrating the entries over (finishing an unfinished migration first; a
// small table migrates at once).
func (ix *index) grow() {
	if ix.old.slots != nil {
		ix.migrate(-1)
	}
	next := ix.prep
	ix.prep = table{}
	if len(next.slots) == 2*len(ix.cur.slots) {
		ix.adopted++
	} else {
		next.free()
		next = newTable(2 * len(ix.cur.slots))
	}
	ix.old, ix.cur = ix.cur, next
	ix.next = 0
	if len(ix.old.slots) <= ix.oneShot {
		ix.migrate(-1)
	}
}

// migrate moves entries of the old table to the current one, examining up
// to budget of its slots (all of them if budget < 0), and frees the old
// table once it is empty. It scans the old table from ix.next on; a slot
// it empties may receive the next entry of the probe chain (backward
// shift), so it examines the slot again. The slots before ix.next are
// empty (the old table takes no inserts, and a backward shift, by a
// migration or a del, moves entries only within a probe chain, which ends
// at the first empty slot), so one pass moves every entry: len(old)
// examined slots plus old.n moves, done long before the new table fills.
func (ix *index) migrate(budget int) {
	old := &ix.old
	for ; budget != 0 && old.n > 0; budget-- {
		s := &old.slots[ix.next]
		if s.flags&slotUsed == 0 {
			ix.next++
			continue
		}
		ix.cur.insert(s)
		old.remove(ix.next)
	}
	if old.n == 0 && old.slots != nil {
		ix.endMigration()
	}
}

// endMigration frees the old table, which the migration emptied.
func (ix *index) endMigration() {
	ix.old.free()
	ix.next = 0
}

// all iterates over the entries, in no particular order. The index must
// not change during the iteration (none of the silo's loops changes it).
func (ix *index) all() iter.Seq2[blocks.Addr, entry] {
	return func(yield func(blocks.Addr, entry) bool) {
		for _, t := range []*table{&ix.cur, &ix.old} {
			for i := range t.slots {
				if s := &t.slots[i]; s.flags&slotUsed != 0 && !yield(s.key, s.entry()) {
					return
				}
			}
		}
	}
}

// appendRange appends to keys every key whose hash lies in [lo, hi] and
// whose entry's stamp is at most since, in no particular order. Hash
// ranges stay put while the index grows and migrates, and compaction
// keeps an entry's stamp, so a walk that takes the hash space range by
// range, letting the index change between ranges, sees each key that
// stays in it once, and none put after it began (Silo.Walk).
func (ix *index) appendRange(keys []blocks.Addr, lo, hi, since uint64) []blocks.Addr {
	keys = ix.cur.appendRange(keys, lo, hi, since)
	return ix.old.appendRange(keys, lo, hi, since)
}

// appendRange is index.appendRange over one table. A key whose home lies
// in the range's homes sits at its home or after it, with no empty slot
// between (linear probing), so the scan goes from the first home through
// the last and on to the next empty slot, wrapping around the end.
func (t *table) appendRange(keys []blocks.Addr, lo, hi, since uint64) []blocks.Addr {
	if t.n == 0 {
		return keys
	}
	mask := len(t.slots) - 1
	first, span := int(lo>>t.shift), int(hi>>t.shift)-int(lo>>t.shift)
	for i, step := first, 0; step < len(t.slots); i, step = (i+1)&mask, step+1 {
		s := &t.slots[i]
		if s.flags&slotUsed == 0 {
			if step > span {
				break
			}
			continue
		}
		if s.hash >= lo && s.hash <= hi && s.stamp <= since {
			keys = append(keys, s.key)
		}
	}
	return keys
}

// free releases the index's memory and leaves it empty. The silo frees its
// index when it closes (or fails to open); a get after free finds nothing,
// and a set allocates a new table.
func (ix *index) free() {
	ix.cur.free()
	ix.old.free()
	ix.prep.free()
	ix.next = 0
}

// prepWanted returns the slot count of a table to prepare in the
// background now, or 0: when the current table has passed prepLoad, no
// migration runs, its successor will be a mapping, and none is ready or
// being made. A nonzero answer marks one as being made: the caller makes
// it (prepare) and hands it to adoptPrep.
func (ix *index) prepWanted() int {
	n := 2 * len(ix.cur.slots)
	if ix.preparing || ix.prep.slots != nil || ix.old.slots != nil || n*slotSize < mapBytes ||
		float64(ix.cur.n) < prepLoad*float64(len(ix.cur.slots)) {
		return 0
	}
	ix.preparing = true
	return n
}

// adoptPrep ends what prepWanted started: it keeps t, a table prepare
// made, for the next grow if it still fits (twice the current table) and
// reports whether it did; else the caller frees t.
func (ix *index) adoptPrep(t table) bool {
	ix.preparing = false
	if ix.prep.slots != nil || len(t.slots) != 2*len(ix.cur.slots) {
		return false
	}
	ix.prep = t
	return true
}

// madvPopulateWrite is MADV_POPULATE_WRITE (Linux 5.14; package syscall
// lacks it).
const madvPopulateWrite = 23

// prepChunk is how much of a table prepare faults in between two looks at
// stop.
const prepChunk = 32 << 20

// prepare returns an empty table of n slots with its pages faulted in
// (for a mapped table: populated, or each small page touched where the
// kernel lacks MADV_POPULATE_WRITE). It runs without the silo's lock; stop
// is asked between chunks, and a stopped preparation returns the table
// as far as it got (a table is usable whatever is faulted in).
func prepare(n int, stop func() bool) table {
	t := newTable(n)
	if t.reg == nil {
		return t // on the Go heap, zeroed by make
	}
	mem := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(t.slots))), len(t.slots)*slotSize)
	for off := 0; off < len(mem) && !stop(); off += prepChunk {
		part := mem[off:min(off+prepChunk, len(mem))]
		if syscall.Madvise(part, madvPopulateWrite) != nil {
			for i := 0; i < len(part); i += 4096 {
				part[i] = 0 // a write fault; the page stays zero
			}
		}
	}
	return t
}
