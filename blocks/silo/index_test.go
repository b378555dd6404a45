package silo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"cairn/blocks"
)

// Hash hooks that force the table's hard cases.
var indexHashes = map[string]func(blocks.Addr) uint64{
	// seeded: the index's own hash.
	"seeded": nil,
	// clustered: 64 homes spread over the table, and equal hashes for
	// keys that differ only after byte 1, so chains are long and merge.
	"clustered": func(k blocks.Addr) uint64 {
		return uint64(k[0]&63)<<58 | uint64(k[1]&3)
	},
	// wrap: a quarter of the keys home at the last slot, a quarter at the
	// first, so chains wrap around the table's end into others.
	"wrap": func(k blocks.Addr) uint64 {
		switch k[0] % 4 {
		case 0:
			return ^uint64(k[1] & 1)
		case 1:
			return uint64(k[1] & 1)
		case 2:
			return 1<<63 | uint64(k[1]&1)
		}
		return binary.LittleEndian.Uint64(k[:8])
	},
}

// randKey returns a random key.
func randKey(rng *rand.Rand) blocks.Addr {
	var k blocks.Addr
	for i := 0; i < len(k); i += 8 {
		binary.LittleEndian.PutUint64(k[i:], rng.Uint64())
	}
	return k
}

// randEntry returns a random entry.
func randEntry(rng *rand.Rand) entry {
	return entry{loc: loc{seg: rng.Uint32(), off: rng.Uint32(), n: rng.Uint32()}, bad: rng.IntN(8) == 0, stamp: rng.Uint64()}
}

// checkIndex verifies ix against the model m: the same entries by get and
// by iteration, no key twice, the counts right, and every slot of each
// table reachable from its home with no empty slot between.
func checkIndex(t testing.TB, ix *index, m map[blocks.Addr]entry) {
	t.Helper()
	if ix.len() != len(m) {
		t.Fatalf("len %d, model %d", ix.len(), len(m))
	}
	seen := make(map[blocks.Addr]bool, len(m))
	for k, e := range ix.all() {
		if seen[k] {
			t.Fatalf("key %x iterated twice", k[:8])
		}
		seen[k] = true
		if want, ok := m[k]; !ok || want != e {
			t.Fatalf("iterated %x = %+v, model %+v (present %v)", k[:8], e, want, ok)
		}
	}
	if len(seen) != len(m) {
		t.Fatalf("iterated %d entries, model %d", len(seen), len(m))
	}
	for k, want := range m {
		if e, ok := ix.get(k); !ok || e != want {
			t.Fatalf("get %x = %+v, %v; model %+v", k[:8], e, ok, want)
		}
	}
	// The hash ranges Walk takes one at a time give every key once.
	for _, parts := range []int{1, 2, 16, 256} {
		got := make(map[blocks.Addr]bool, len(m))
		var keys []blocks.Addr
		for p := range parts {
			lo, hi := hashRange(p, parts)
			keys = ix.appendRange(keys[:0], lo, hi, ^uint64(0))
			for _, k := range keys {
				if got[k] {
					t.Fatalf("%d ranges: key %x in two", parts, k[:8])
				}
				if _, ok := m[k]; !ok {
					t.Fatalf("%d ranges: key %x not in the model", parts, k[:8])
				}
				if h := ix.hash(&k); h < lo || h > hi {
					t.Fatalf("%d ranges: key %x (hash %x) in range %d [%x, %x]", parts, k[:8], h, p, lo, hi)
				}
				got[k] = true
			}
		}
		if len(got) != len(m) {
			t.Fatalf("%d ranges gave %d keys, model %d", parts, len(got), len(m))
		}
	}
	for i := range ix.next {
		if ix.old.slots[i].flags&slotUsed != 0 {
			t.Fatalf("old slot %d, behind the migration at %d, is used", i, ix.next)
		}
	}
	for _, tb := range []*table{&ix.cur, &ix.old} {
		used := 0
		mask := len(tb.slots) - 1
		for i := range tb.slots {
			s := &tb.slots[i]
			if s.flags&slotUsed == 0 {
				continue
			}
			used++
			if s.hash != ix.hash(&s.key) {
				t.Fatalf("slot %d: stale hash", i)
			}
			for j := int(s.hash >> tb.shift); j != i; j = (j + 1) & mask {
				if tb.slots[j].flags&slotUsed == 0 {
					t.Fatalf("slot %d: empty slot %d between it and its home", i, j)
				}
			}
		}
		if used != tb.n {
			t.Fatalf("table counts %d entries, holds %d", tb.n, used)
		}
	}
}

// runModel applies ops random operations to ix and a Go map over a pool of
// keys, checking every result, and the whole table every checkEvery
// operations. It returns the number of growths and whether an incremental
// migration was ever under way.
func runModel(t *testing.T, ix *index, rng *rand.Rand, pool, ops, checkEvery int) (grows int, migrated bool) {
	keys := make([]blocks.Addr, pool)
	for i := range keys {
		keys[i] = randKey(rng)
	}
	m := map[blocks.Addr]entry{}
	slots := len(ix.cur.slots)
	// Phases: mostly inserts (growth), then mixed, then mostly deletes.
	for op := range ops {
		k := keys[rng.IntN(pool)]
		pSet, pDel := 50, 20
		switch phase := op * 3 / ops; phase {
		case 0:
			pSet, pDel = 70, 5
		case 2:
			pSet, pDel = 20, 50
		}
		switch r := rng.IntN(100); {
		case r < pSet:
			e := randEntry(rng)
			ix.set(k, e)
			m[k] = e
			migrated = migrated || ix.old.n > 0
		case r < pSet+pDel:
			ix.del(k)
			delete(m, k)
		default:
			e, ok := ix.get(k)
			if want, has := m[k]; ok != has || e != want {
				t.Fatalf("op %d: get = %+v, %v; model %+v, %v", op, e, ok, want, has)
			}
		}
		if len(ix.cur.slots) != slots {
			slots = len(ix.cur.slots)
			grows++
		}
		if op%checkEvery == 0 || op == ops-1 {
			checkIndex(t, ix, m)
		}
	}
	return grows, migrated
}

// TestIndexModel checks the table against a Go map through hundreds of
// thousands of operations across many growths, with the hash forced into
// long chains and around the table's end, and with incremental migration
// for every growth.
func TestIndexModel(t *testing.T) {
	cases := []struct {
		hash          string
		pool, ops     int
		oneShot       int
		checkEvery    int
		wantMigration bool
	}{
		{hash: "seeded", pool: 40000, ops: 300000, oneShot: oneShotSlots, checkEvery: 20000, wantMigration: true},
		{hash: "seeded", pool: 3000, ops: 100000, oneShot: 0, checkEvery: 5000, wantMigration: true},
		{hash: "clustered", pool: 3000, ops: 100000, oneShot: 0, checkEvery: 5000, wantMigration: true},
		{hash: "wrap", pool: 1500, ops: 60000, oneShot: 0, checkEvery: 3000, wantMigration: true},
		{hash: "wrap", pool: 1500, ops: 60000, oneShot: 1 << 30, checkEvery: 3000},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%s/%d", c.hash, i), func(t *testing.T) {
			ix := newIndex()
			defer ix.free()
			ix.hashFn, ix.oneShot, ix.seed = indexHashes[c.hash], c.oneShot, uint64(i)
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			grows, migrated := runModel(t, ix, rng, c.pool, c.ops, c.checkEvery)
			if grows < 3 {
				t.Errorf("only %d growths", grows)
			}
			if c.wantMigration && !migrated {
				t.Error("no incremental migration observed")
			}
		})
	}
}

// TestIndexFree checks that a freed index is empty and usable, and that a
// large table is mapped and unmapped.
func TestIndexFree(t *testing.T) {
	ix := newIndex()
	rng := rand.New(rand.NewPCG(1, 1))
	m := map[blocks.Addr]entry{}
	for len(ix.cur.slots)*slotSize < 2*mapBytes {
		k, e := randKey(rng), randEntry(rng)
		ix.set(k, e)
		m[k] = e
	}
	if ix.cur.reg == nil {
		t.Fatalf("a table of %d bytes is not mapped", len(ix.cur.slots)*slotSize)
	}
	checkIndex(t, ix, m)
	ix.free()
	if ix.len() != 0 || ix.cur.slots != nil || ix.old.slots != nil {
		t.Fatal("free left entries")
	}
	for k := range m {
		if _, ok := ix.get(k); ok {
			t.Fatal("a freed index found a key")
		}
		break
	}
	k, e := randKey(rng), randEntry(rng)
	ix.set(k, e)
	checkIndex(t, ix, map[blocks.Addr]entry{k: e})
	ix.free()
}

// FuzzIndex runs operation sequences against a Go map: each pair of bytes
// is an operation (set, del, get, check) and a key from a pool of 64,
// under one of the hash hooks (the first byte) and incremental migration
// from the first growth.
func FuzzIndex(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0, 2, 1, 3, 2, 4})
	f.Add([]byte{1, 0, 1, 4, 1, 8, 1, 12, 1, 16, 2, 4, 2, 8, 1, 20, 3})
	f.Add([]byte{2, 0, 0, 4, 0, 8, 0, 12, 0, 16, 0, 20, 0, 24, 0, 28, 0, 32, 0, 36, 0, 40, 0, 44, 0, 48, 0, 52, 0, 56, 0, 60, 0, 1, 4, 1, 4, 3})
	names := []string{"seeded", "clustered", "wrap"}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		ix := newIndex()
		defer ix.free()
		ix.hashFn, ix.oneShot = indexHashes[names[int(data[0])%len(names)]], 0
		var keys [64]blocks.Addr
		for i := range keys {
			// Keys spread over the hooks' cases: byte 0 picks the home,
			// byte 1 the hash's low bits, byte 2 tells keys apart.
			keys[i][0], keys[i][1], keys[i][2] = byte(i), byte(i>>2), byte(i)
		}
		m := map[blocks.Addr]entry{}
		for i := 1; i+1 < len(data); i += 2 {
			k := keys[data[i+1]%64]
			switch data[i] % 4 {
			case 0:
				e := entry{loc: loc{seg: uint32(i), off: uint32(data[i+1])}, bad: data[i]&4 != 0, stamp: uint64(i)}
				ix.set(k, e)
				m[k] = e
			case 1:
				ix.del(k)
				delete(m, k)
			case 2:
				e, ok := ix.get(k)
				if want, has := m[k]; ok != has || e != want {
					t.Fatalf("get = %+v, %v; model %+v, %v", e, ok, want, has)
				}
			case 3:
				checkIndex(t, ix, m)
			}
		}
		checkIndex(t, ix, m)
	})
}

// BenchmarkIndexGet measures the lookup of a random key among 1M entries
// with a cache-polluting access (a random line of a 256 MiB buffer)
// between lookups: the table (on huge pages and on small pages) against a
// Go map, and the pollution alone.
func BenchmarkIndexGet(b *testing.B) {
	const n = 1 << 20
	rng := rand.New(rand.NewPCG(3, 4))
	keys := make([]blocks.Addr, n)
	for i := range keys {
		keys[i] = randKey(rng)
	}
	junk := make([]byte, 256<<20)
	for i := 0; i < len(junk); i += 4096 {
		junk[i] = 1
	}
	pollute := func(r uint64) byte { return junk[(r*64)%uint64(len(junk))] }
	order := make([]uint32, 1<<16)
	for i := range order {
		order[i] = uint32(rng.IntN(n))
	}
	var sink byte
	b.Run("pollute", func(b *testing.B) {
		for i := range b.N {
			sink += pollute(rng.Uint64())
			sink += keys[order[i&(len(order)-1)]][0]
		}
	})
	for _, c := range []struct {
		name string
		huge bool
	}{{"table-smallpages", false}, {"table", true}} {
		b.Run(c.name, func(b *testing.B) {
			defer func(h bool) { adviseHuge = h }(adviseHuge)
			adviseHuge = c.huge
			ix := newIndex()
			defer ix.free()
			for i, k := range keys {
				ix.set(k, entry{stamp: uint64(i)})
			}
			b.ResetTimer()
			for i := range b.N {
				sink += pollute(rng.Uint64())
				e, _ := ix.get(keys[order[i&(len(order)-1)]])
				sink += byte(e.stamp)
			}
		})
	}
	b.Run("map", func(b *testing.B) {
		m := make(map[blocks.Addr]entry)
		for i, k := range keys {
			m[k] = entry{stamp: uint64(i)}
		}
		b.ResetTimer()
		for i := range b.N {
			sink += pollute(rng.Uint64())
			e := m[keys[order[i&(len(order)-1)]]]
			sink += byte(e.stamp)
		}
	})
	_ = sink
}

// rss returns the process's resident set and its anonymous huge pages in
// bytes (Linux; 0 elsewhere).
func rss() (resident, huge int64) {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			resident = v << 10
		case "AnonHugePages:":
			huge = v << 10
		}
	}
	return resident, huge
}

// BenchmarkIndexMemory reports the memory per entry of 1M entries (and of
// other counts: -bench 'IndexMemory/.*'), the table's against a Go map's,
// as the RSS growth and, for the map, the Go heap's too. Run it with
// -benchtime 1x.
func BenchmarkIndexMemory(b *testing.B) {
	for _, n := range []int{1 << 20, 1_500_000, 10_000_000} {
		rng := rand.New(rand.NewPCG(5, 6))
		keys := make([]blocks.Addr, n)
		for i := range keys {
			keys[i] = randKey(rng)
		}
		b.Run(fmt.Sprintf("table/%d", n), func(b *testing.B) {
			for range b.N {
				runtime.GC()
				r0, h0 := rss()
				ix := newIndex()
				for i, k := range keys {
					ix.set(k, entry{stamp: uint64(i)})
				}
				r1, h1 := rss()
				b.ReportMetric(float64(r1-r0)/float64(n), "rss-B/entry")
				b.ReportMetric(float64(len(ix.cur.slots)*slotSize)/float64(n), "table-B/entry")
				b.ReportMetric(float64(h1-h0)/float64(len(ix.cur.slots)*slotSize), "huge-fraction")
				ix.free()
			}
		})
		b.Run(fmt.Sprintf("map/%d", n), func(b *testing.B) {
			for range b.N {
				var m0, m1 runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&m0)
				r0, _ := rss()
				m := make(map[blocks.Addr]entry)
				for i, k := range keys {
					m[k] = entry{stamp: uint64(i)}
				}
				runtime.GC()
				runtime.ReadMemStats(&m1)
				r1, _ := rss()
				b.ReportMetric(float64(r1-r0)/float64(n), "rss-B/entry")
				b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n), "heap-B/entry")
				runtime.KeepAlive(m)
			}
		})
	}
}

// BenchmarkIndexGrow fills an index to 10M entries and reports the longest
// single insert (the growth stall a writer sees under the silo's lock),
// with incremental migration and with one-shot rehashing. Run it with
// -benchtime 1x.
func BenchmarkIndexGrow(b *testing.B) {
	const n = 10_000_000
	for _, mode := range []string{"incremental", "incremental-smallpages", "oneshot"} {
		b.Run(mode, func(b *testing.B) {
			defer func(h bool) { adviseHuge = h }(adviseHuge)
			adviseHuge = mode != "incremental-smallpages"
			rng := rand.New(rand.NewPCG(8, 9))
			for range b.N {
				ix := newIndex()
				if mode == "oneshot" {
					ix.oneShot = 1 << 40
				}
				var worst time.Duration
				slow := 0
				for i := range n {
					k := randKey(rng)
					t0 := time.Now()
					ix.set(k, entry{stamp: uint64(i)})
					d := time.Since(t0)
					worst = max(worst, d)
					if d > time.Millisecond {
						slow++
					}
				}
				b.ReportMetric(float64(worst.Microseconds()), "max-insert-µs")
				b.ReportMetric(float64(slow), "inserts-over-1ms")
				ix.free()
			}
		})
	}
}

// TestIndexFreedAtClose checks that Close frees the silo's index and that
// the readers that may still run after it find the silo closed (or, for
// GetPieceSplit, nothing) instead of reading a freed table.
func TestIndexFreedAtClose(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{})
	const n = 5000 // several growths
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 16)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 3 {
		if err := s.DeletePiece(ctx, keyOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := s.Stats().Pieces, int64(n-(n+2)/3); got != want {
		t.Fatalf("%d pieces, want %d", got, want)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.index.len() != 0 || s.index.cur.slots != nil || s.index.old.slots != nil {
		t.Fatal("Close left the index allocated")
	}
	if _, err := s.GetPiece(ctx, keyOf(1)); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("GetPiece after Close: %v", err)
	}
	if ok, err := s.HasPiece(ctx, keyOf(1)); ok || !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("HasPiece after Close: %v, %v", ok, err)
	}
	if s.GetPieceSplit(ctx, keyOf(1), make([]byte, 8), make([]byte, 8), make([]byte, hdrSize)) {
		t.Fatal("GetPieceSplit after Close read a piece")
	}
}

// TestWalkInRanges: a Walk that takes its keys a few dozen at a time
// (many hash ranges) calls fn once for every key held throughout, never
// twice for any, and never for one put during the walk, while fn deletes
// and puts pieces under it.
func TestWalkInRanges(t *testing.T) {
	defer func(b int) { walkBatch = b }(walkBatch)
	walkBatch = 32
	ctx := t.Context()
	s := openT(t, t.TempDir(), Options{})
	const n = 2000
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	held := map[blocks.Addr]bool{}
	for i := range n {
		held[keyOf(i)] = true
	}
	seen := map[blocks.Addr]int{}
	deleted := map[blocks.Addr]bool{}
	calls := 0
	err := s.Walk(ctx, func(k blocks.Addr) error {
		seen[k]++
		calls++
		if calls%10 == 0 { // delete a key (seen or not) and put a new one
			d := keyOf(calls * 7 % n)
			if err := s.DeletePiece(ctx, d); err != nil {
				t.Fatal(err)
			}
			deleted[d] = true
			if err := s.PutPiece(ctx, keyOf(n+calls), pieceData(calls, 100)); err != nil {
				t.Fatal(err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("key %x walked %d times", k[:8], c)
		}
		if !held[k] {
			t.Fatalf("key %x, put during the walk, was walked", k[:8])
		}
	}
	for i := range n {
		if k := keyOf(i); seen[k] == 0 && !deleted[k] {
			t.Fatalf("piece %d, held throughout, was not walked", i)
		}
	}
	if calls < n/2 {
		t.Fatalf("%d calls for %d pieces", calls, n)
	}
}

// TestIndexPrepared: past prepLoad the index asks for its next table
// once (not while one is being made or ready, nor for a successor that
// would not be a mapping); grow takes the table handed to adoptPrep, and
// every entry stays reachable through the migration; a table of the
// wrong size is refused; free releases a prepared table.
func TestIndexPrepared(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	ix := newIndex()
	var keys []blocks.Addr
	add := func() {
		k := randKey(rng)
		ix.set(k, entry{stamp: uint64(len(keys) + 1)})
		keys = append(keys, k)
	}
	const small = mapBytes / slotSize / 2 // the largest table whose successor is on the heap
	for len(ix.cur.slots) <= small || float64(ix.cur.n) < prepLoad*float64(len(ix.cur.slots)) {
		if ix.old.slots == nil && len(ix.cur.slots) < small && ix.prepWanted() != 0 {
			t.Fatalf("a table of %d slots asked for a prepared successor", len(ix.cur.slots))
		}
		add()
	}
	for ix.old.slots != nil { // a migration runs: no preparing yet
		if ix.prepWanted() != 0 {
			t.Fatal("prepWanted during a migration")
		}
		add()
	}
	for float64(ix.cur.n) < prepLoad*float64(len(ix.cur.slots)) {
		add()
	}
	n := ix.prepWanted()
	if n != 2*len(ix.cur.slots) {
		t.Fatalf("prepWanted at load %.2f of %d slots = %d, want %d", float64(ix.cur.n)/float64(len(ix.cur.slots)), len(ix.cur.slots), n, 2*len(ix.cur.slots))
	}
	if ix.prepWanted() != 0 {
		t.Fatal("prepWanted again while one is being made")
	}
	wrong := prepare(n/2, func() bool { return false })
	if ix.adoptPrep(wrong) {
		t.Fatal("adoptPrep took a table of the wrong size")
	}
	wrong.free()
	ix.preparing = true // as prepWanted left it
	stops := 0
	tab := prepare(n, func() bool { stops++; return false })
	if stops == 0 || tab.reg == nil || len(tab.slots) != n || tab.n != 0 {
		t.Fatalf("prepare: %d slots, %d used, mapped %v, stop asked %d times", len(tab.slots), tab.n, tab.reg != nil, stops)
	}
	first := &tab.slots[0]
	if !ix.adoptPrep(tab) {
		t.Fatal("adoptPrep refused the prepared table")
	}
	if ix.prepWanted() != 0 {
		t.Fatal("prepWanted with a table ready")
	}
	for ix.old.slots == nil {
		add()
	}
	if ix.adopted != 1 || &ix.cur.slots[0] != first || ix.prep.slots != nil {
		t.Fatalf("the growth did not take the prepared table (adopted %d)", ix.adopted)
	}
	for i, k := range keys {
		if e, ok := ix.get(k); !ok || e.stamp != uint64(i+1) {
			t.Fatalf("key %d after the growth: %v, %v", i, e, ok)
		}
	}
	// Deletions back under prepDrop let a prepared table go.
	ix.preparing = true
	if !ix.adoptPrep(prepare(2*len(ix.cur.slots), func() bool { return false })) {
		t.Fatal("adoptPrep refused the prepared table")
	}
	// (The growth just left the table at 0.4: one deletion is enough.)
	ix.del(keys[len(keys)-1])
	keys = keys[:len(keys)-1]
	if ix.prep.slots != nil {
		t.Fatalf("the prepared table stayed at load %.2f", float64(ix.len())/float64(len(ix.cur.slots)))
	}
	// A preparation stopped at once still gives a usable table.
	half := prepare(n, func() bool { return true })
	half.insert(&slot{key: keys[0], hash: 1, flags: slotUsed})
	if half.find(&keys[0], 1) < 0 {
		t.Fatal("a stopped preparation's table lost an insert")
	}
	half.free()
	ix.prep = prepare(4*n, func() bool { return false })
	ix.free()
	if ix.prep.slots != nil || ix.cur.slots != nil {
		t.Fatal("free left a table allocated")
	}
}

// TestSiloPreparesIndex: a silo whose index passes prepLoad has its next
// table prepared in the background, and the growth takes it; every piece
// reads back, and Close waits for a preparation under way.
func TestSiloPreparesIndex(t *testing.T) {
	ctx := context.Background()
	s := openT(t, t.TempDir(), Options{})
	const n = 30_000 // past 0.8 of 32Ki slots: a growth into a 2 MiB mapping
	for i := range n {
		if err := s.PutPiece(ctx, keyOf(i), pieceData(i, 16)); err != nil {
			t.Fatal(err)
		}
		if i%500 == 0 {
			// Let any preparation finish: each growth comes at least
			// 800 inserts after its table was asked for.
			s.prepWG.Wait()
		}
	}
	s.prepWG.Wait()
	s.mu.RLock()
	adopted := s.index.adopted
	s.mu.RUnlock()
	if adopted != 2 { // 16Ki to 32Ki slots (2 MiB), 32Ki to 64Ki
		t.Fatalf("%d growths took a prepared table, want 2", adopted)
	}
	for i := range n {
		got, err := s.GetPiece(ctx, keyOf(i))
		if err != nil || string(got) != string(pieceData(i, 16)) {
			t.Fatalf("piece %d: %q, %v", i, got, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
