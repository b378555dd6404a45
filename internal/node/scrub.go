package node

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"cairn/blocks"
	"cairn/blocks/redundant"
	"cairn/internal/throttle"
	"cairn/policies"
)

// ScrubStatus reports the anti-entropy pass: every block this node holds a
// piece of is read whole from its holders (as placement names them now),
// verified, and its missing or bad pieces rewritten. A node that left for
// good is healed this way: its blocks get their pieces back on the nodes
// that placement now picks in its place.
type ScrubStatus struct {
	Running    bool
	Passes     int       // passes completed
	LastDone   time.Time // when the last pass ended
	Checked    int64     // blocks checked in the last (or current) pass
	Repaired   int64     // pieces rewritten in the last (or current) pass
	Unreadable int64     // blocks no intact copy of which could be found
	// Progress of the last (or current) pass over this node's silo: the
	// pieces it held when the pass began, and how many of them the pass
	// has looked at. Total-Scanned is what is left to check.
	Total, Scanned int64
	// Dropped counts the pieces this node held for a block without being
	// their holder (a fallback's copy, or a copy made while the holder was
	// away) that it deleted in the last pass, once their holder had them,
	// and the second replicas of a block it holds (see noteDuplicates).
	Dropped int64
	// Moved counts the pieces the last pass copied from a fallback to a
	// holder that lacked them (rather than rebuilt: see slot.getBackground).
	Moved int64
}

type scrubber struct {
	mu     sync.Mutex // guards st
	st     ScrubStatus
	kick   chan struct{}
	period time.Duration
	// turn holds a token while a pass runs: the pass a view change kicks
	// and one asked for with `cairn scrub` run one after the other, not
	// side by side (two passes did the same work twice, and each reset
	// the other's counts in st).
	turn chan struct{}
}

func newScrubber(period time.Duration) scrubber {
	return scrubber{kick: make(chan struct{}, 1), period: period, turn: make(chan struct{}, 1)}
}

// scrubLoop runs a heal pass when kicked (the view lost or gained a
// node) and a full pass every period.
func (c *cluster) scrubLoop(ctx context.Context) {
	t := time.NewTimer(c.scrub.period)
	defer t.Stop()
	for {
		full := false
		select {
		case <-ctx.Done():
			return
		case <-c.scrub.kick:
		case <-t.C:
			full = true
		}
		c.scrubPass(ctx, full)
		t.Reset(c.scrub.period)
	}
}

func (c *cluster) kickScrub() {
	select {
	case c.scrub.kick <- struct{}{}:
	default:
	}
}

func (c *cluster) scrubStatus() ScrubStatus {
	c.scrub.mu.Lock()
	defer c.scrub.mu.Unlock()
	return c.scrub.st
}

// scrubPass checks every block with a piece in this node's silo.
//
// A full pass (periodic, or asked for with `cairn scrub`) reads every
// piece of each block it checks from the block's holders, verifies it and
// rewrites what is missing or bad (redundant.Store.Repair): it finds
// corrupt copies. A heal pass (full false: the one a change of the view
// kicks, after a node left or came back) is after missing pieces only: it
// reads only the blocks whose holders, as placement names them now, do not
// all hold their piece: once, from the nearest copy, to write the missing
// pieces (redundant.Store.RepairMissing). After a node loss most blocks
// lost nothing, and reading and hashing all their pieces was most of what
// healing cost: the reads paid the repair throttle and the CPU the
// clients share.
// benchnbd -single=false -go=false -heal-only -heal-rates 8MiB,0
// -heal-load 60s, with the other changes of syncRepairs' note in every
// build: the rebuild took 1m51s against 2m32s at 8 MiB/s, with the
// client's IOPS during it 0.41x of before the loss against 0.30x;
// unlimited, 1m25s (the tenth session's table: 2m30s) at 0.18x. Writing
// the missing pieces from one read (RepairMissing) instead of reading
// and hashing every piece of an incomplete block (Repair): 1m39s and
// 1m33s at 8 MiB/s (client 0.29x and 0.54x: the client's share moves
// that much between runs of one build), 1m13s unlimited (0.33x).
//
// The pass goes through this node's pieces in windows of scrubWindow
// blocks, and asks each other holder of a window's blocks, in one
// HasPieces call per node (peer op 21, 4096 keys a round trip), which of
// their pieces it has: that decides which node checks a block (see
// scrubsHere) and, in a heal pass, which pieces are missing. What a pass
// holds is its window and the range of keys the silo's walk copied out
// (about 64K: silo.Walk), and what it asks the other nodes grows with
// the blocks this node holds, not with the cluster. (Before, a heal pass fetched every other node's whole key
// list first, 32 bytes a piece: on hundreds of nodes, every node would
// have held, and each pass moved, the keys of the whole cluster.)
func (c *cluster) scrubPass(ctx context.Context, full bool) {
	select {
	case c.scrub.turn <- struct{}{}:
		defer func() { <-c.scrub.turn }()
	case <-ctx.Done():
		return
	}
	c.scrub.mu.Lock()
	c.scrub.st.Running, c.scrub.st.Checked, c.scrub.st.Repaired, c.scrub.st.Unreadable = true, 0, 0, 0
	c.scrub.st.Total, c.scrub.st.Scanned, c.scrub.st.Dropped = c.n.silo.Stats().Pieces, 0, 0
	c.scrub.mu.Unlock()
	// Every piece the pass reads or rewrites pays the repair throttle
	// (see cluster.pace), so that healing leaves room for client I/O. The
	// pieces it rewrites are synced once, at the end (syncRepairs), not
	// each on its own. Every call the pass makes to other nodes carries
	// the background mark, its questions (HasPieces) and syncs too: a
	// node counts unmarked requests as client I/O and throttles its own
	// repair for a second after each, so a pass that asked unmarked kept
	// every node it asked throttled while no client was doing anything.
	bctx := redundant.DeferRepairSyncs(throttle.Background(ctx))
	moved0, wrote0 := c.bg.movedPieces.Load(), c.bg.repairedPieces.Load()
	jobs := make(chan scrubJob)
	var sp surplus
	var wg sync.WaitGroup
	for range scrubWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				var n int
				var err error
				var fixes []redundant.Fix
				known := false
				if !full && j.primary != nil {
					fixes, known = c.missingPieces(bctx, j.st, j.l, j.primary, j.held)
				}
				if known {
					// A heal pass that knows what each holder keeps: one
					// read of the block, only if a piece is missing.
					if len(fixes) > 0 {
						n, err = j.st.RepairMissing(bctx, j.l.Addr, fixes)
					}
				} else {
					n, err = j.st.Repair(bctx, j.l.Addr)
				}
				if err == nil {
					c.findSurplus(bctx, j.l.Addr, j.l, &sp)
				}
				c.scrub.mu.Lock()
				c.scrub.st.Checked++
				c.scrub.st.Repaired += int64(n)
				if err != nil && !errors.Is(err, context.Canceled) {
					c.scrub.st.Unreadable++
				}
				c.scrub.mu.Unlock()
			}
		}()
	}
	var (
		win     []scrubJob
		scanned int64
		hb      [redundant.HeaderSize]byte
		dups    duplicates
	)
	_ = c.n.silo.Walk(ctx, func(k blocks.Addr) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		scanned++
		if scanned%256 == 0 {
			c.scrub.mu.Lock()
			c.scrub.st.Scanned = scanned
			c.scrub.mu.Unlock()
		}
		// The piece's header names its block (and carries its own
		// checksum); Repair reads and verifies the piece itself, so a
		// corrupt local copy is checked and rewritten like any other.
		l, ok := c.peekLayout(ctx, k, hb[:])
		if !ok {
			return nil
		}
		if c.checkedAtLowerPiece(ctx, k, l, hb[:]) {
			c.noteDuplicates(ctx, l, &dups)
			return nil
		}
		st, err := c.n.redundantFor(policies.Redundancy{Replicas: l.Replicas, Data: l.Data, Parity: l.Parity}, tagSpread(l.Tag))
		if err != nil {
			return nil
		}
		win = append(win, scrubJob{l: l, st: st.(*redundant.Store)})
		if len(win) == scrubWindow {
			c.scrubWindow(bctx, ctx, win, jobs)
			win = win[:0]
		}
		return nil
	})
	c.scrubWindow(bctx, ctx, win, jobs)
	close(jobs)
	wg.Wait()
	if c.bg.repairedPieces.Load() != wrote0 {
		// Pieces this pass wrote anywhere: rewritten, moved from a
		// fallback, or repaired by its reads.
		c.syncRepairs(bctx)
	}
	dropped := c.dropSurplus(bctx, &sp) + c.dropDuplicates(bctx, &dups)
	c.scrub.mu.Lock()
	c.scrub.st.Running = false
	if ctx.Err() == nil {
		c.scrub.st.Scanned = max(scanned, c.scrub.st.Total)
		c.scrub.st.Total = c.scrub.st.Scanned
	}
	c.scrub.st.Dropped = dropped
	c.scrub.st.Moved = c.bg.movedPieces.Load() - moved0
	c.scrub.st.Passes++
	c.scrub.st.LastDone = time.Now()
	st := c.scrub.st
	c.scrub.mu.Unlock()
	if st.Repaired > 0 || st.Unreadable > 0 || st.Dropped > 0 || st.Moved > 0 {
		c.log.Info("anti-entropy pass", "checked", st.Checked, "repaired", st.Repaired, "moved", st.Moved, "unreadable", st.Unreadable, "dropped", st.Dropped)
	}
}

// scrubWindow is the number of blocks a pass asks the other holders about
// at once: 16,384 blocks of 3 replicas are 32,768 questions, a few hundred
// per node on a hundred nodes, in one round trip each, and a window's
// state is a few MiB.
const scrubWindow = 16384

// scrubJob is one block a pass checks: its layout and store, its holders
// as placement names them now (nil if it could not tell), and what the
// other holders answered about their pieces (askHolders; shared by the
// jobs of a window, read-only once asked).
type scrubJob struct {
	l       redundant.Layout
	st      *redundant.Store
	primary []string
	held    map[string]map[blocks.Addr]bool
}

// peekLayout reads the header of this node's piece k and returns its
// block's layout; ok is false when the piece is gone or its header does
// not decode (a corrupt piece is then checked through another of the
// block's pieces, by whichever node holds one).
func (c *cluster) peekLayout(ctx context.Context, k blocks.Addr, hb []byte) (redundant.Layout, bool) {
	p, err := c.n.silo.PeekPiece(ctx, k, hb)
	if err != nil {
		return redundant.Layout{}, false
	}
	l, err := redundant.PieceLayout(p)
	return l, err == nil
}

// checkedAtLowerPiece reports whether this node also holds a piece of
// block l with a lower index whose header names the same block: the
// pass checks each block once, at its lowest piece here (a node holds
// more than one piece of a block only as a fallback or after the view
// changed), without a set of the blocks already seen.
func (c *cluster) checkedAtLowerPiece(ctx context.Context, k blocks.Addr, l redundant.Layout, hb []byte) bool {
	for i := range min(l.Index, l.Pieces()) {
		key := blocks.PieceKey(l.Addr, i)
		if key == k {
			continue
		}
		if lo, ok := c.peekLayout(ctx, key, hb); ok && lo.Addr == l.Addr {
			return true
		}
	}
	return false
}

// scrubWindow asks the other holders of the window's blocks which of
// their pieces they have, then sends the blocks this node checks to the
// workers, with the answers. bctx carries the pass's background mark; ctx
// ends the pass.
func (c *cluster) scrubWindow(bctx, ctx context.Context, win []scrubJob, jobs chan<- scrubJob) {
	if len(win) == 0 {
		return
	}
	type ranked struct {
		v       *view
		primary []string
	}
	ranks := make([]ranked, len(win))
	asks := map[string][]blocks.Addr{}
	for i, j := range win {
		v, primary, _, err := c.rank(j.l.Addr, j.l.Pieces(), 0, tagSpread(j.l.Tag))
		if err != nil {
			continue
		}
		ranks[i] = ranked{v, primary}
		for pi, id := range primary {
			if id != c.self.ID && c.usable(v, id) {
				asks[id] = appendKeysOf(asks[id], j.l, pi)
			}
		}
	}
	held := c.askHolders(bctx, asks)
	for i := range win {
		if ctx.Err() != nil {
			return
		}
		j := &win[i]
		r := ranks[i]
		if !c.scrubsHere(bctx, j.l, r.v, r.primary, held) {
			continue
		}
		j.primary, j.held = r.primary, held
		select {
		case jobs <- *j:
		case <-ctx.Done():
			return
		}
	}
}

// keysOf returns the keys under which the holder at rank i may keep its
// piece of block l: the key of its rank, and the keys of the other ranks
// (a holder keeps the piece it had when it moved up a rank, and counts
// for the block with it: see redundant.Store.Plan), its own rank's first.
func keysOf(l redundant.Layout, i int) []blocks.Addr {
	return appendKeysOf(nil, l, i)
}

// appendKeysOf is keysOf appending to keys.
func appendKeysOf(keys []blocks.Addr, l redundant.Layout, i int) []blocks.Addr {
	keys = append(keys, blocks.PieceKey(l.Addr, i))
	for j := range l.Pieces() {
		if j != i {
			keys = append(keys, blocks.PieceKey(l.Addr, j))
		}
	}
	return keys
}

// holdsPiece reports whether node id, the holder at rank i of block l,
// holds a piece of it, under any index (see heldPieces).
func (c *cluster) holdsPiece(ctx context.Context, id string, l redundant.Layout, i int, held map[string]map[blocks.Addr]bool, recheck bool) (bool, error) {
	has, err := c.heldPieces(ctx, id, l, i, held, recheck)
	return len(has) > 0, err
}

// heldPieces returns the indexes of the pieces of block l that node id,
// the holder at rank i, holds (its rank's first; see keysOf). held has
// the answers of the other holders (askHolders); a node left out of it,
// or this node, is asked now (nil, with the error, when it cannot be
// asked); recheck asks a holder again even when held says it has none
// (it may have got one since).
func (c *cluster) heldPieces(ctx context.Context, id string, l redundant.Layout, i int, held map[string]map[blocks.Addr]bool, recheck bool) ([]int, error) {
	keys := keysOf(l, i)
	index := func(x int) int { // keys[x]'s piece index
		switch {
		case x == 0:
			return i
		case x <= i:
			return x - 1
		default:
			return x
		}
	}
	var has []int
	if id == c.self.ID {
		for x, k := range keys {
			ok, err := c.n.silo.HasPiece(ctx, k)
			if err != nil {
				return nil, err
			}
			if ok {
				has = append(has, index(x))
			}
		}
		return has, nil
	}
	if set, ok := held[id]; ok {
		for x, k := range keys {
			if set[k] {
				has = append(has, index(x))
			}
		}
		if len(has) > 0 || !recheck {
			return has, nil
		}
	}
	if len(keys) == 1 {
		ok, err := c.client(id).HasPiece(ctx, keys[0])
		if err != nil || !ok {
			return nil, err
		}
		return []int{i}, nil
	}
	answers, err := c.client(id).HasPieces(ctx, keys)
	if err != nil {
		return nil, err
	}
	for x, ok := range answers {
		if ok {
			has = append(has, index(x))
		}
	}
	return has, nil
}

// askHolders asks each node of asks, a few at a time, which of its keys
// it holds, and returns the keys each one holds. A node whose answer
// could not be had is left out: its blocks are checked by asking it
// again (scrubsHere) and read in full (missingPieces).
func (c *cluster) askHolders(ctx context.Context, asks map[string][]blocks.Addr) map[string]map[blocks.Addr]bool {
	held := make(map[string]map[blocks.Addr]bool, len(asks))
	var mu sync.Mutex
	sem := make(chan struct{}, scrubAsks)
	var wg sync.WaitGroup
	for id, keys := range asks {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			has, err := c.client(id).HasPieces(ctx, keys)
			if err != nil {
				c.log.Warn("anti-entropy: could not ask a node which pieces it holds; its blocks are read in full", "node", id, "err", err)
				return
			}
			set := make(map[blocks.Addr]bool, len(keys))
			for i, k := range keys {
				if has[i] {
					set[k] = true
				}
			}
			mu.Lock()
			held[id] = set
			mu.Unlock()
		}()
	}
	wg.Wait()
	return held
}

// scrubAsks bounds the HasPieces calls a pass has in flight.
const scrubAsks = 8

// syncRepairs syncs every reachable storage node, this one included,
// after a pass whose repairs deferred their syncs
// (redundant.DeferRepairSyncs): the pass ends, and status reports the
// blocks whole, only once what it rewrote is durable. A node that fails
// its sync is marked failed, and the next pass checks its pieces again.
//
// Measured with this, background-marked questions, and reads that repair
// without syncing (benchnbd -single=false -go=false -heal-only
// -heal-rates 8MiB -heal-load 60s, one run each, the same hour): the
// rebuild of 1 GiB after a node loss took 2m32s against 4m39s (the
// throttle now lets go once the client stops), and the client's 4 KiB
// random read+write IOPS during it were 0.30x of before the loss against
// 0.12x. Node logs: a line per pass instead of one per rewritten piece
// (270 bytes each, 90,000 lines per node for that gibibyte).
func (c *cluster) syncRepairs(ctx context.Context) {
	v := c.view()
	for id := range v.nodes { // storage nodes only
		if ctx.Err() != nil {
			return
		}
		if id != c.self.ID && !c.usable(v, id) {
			continue
		}
		if err := c.syncNode(ctx, id); err != nil {
			c.failed(id, err)
			c.log.Warn("anti-entropy: sync after the pass failed", "node", id, "err", err)
		}
	}
}

// scrubWorkers bounds the blocks one node checks at once. A check mostly
// waits (reads from the other holders, then a rewrite and its sync on
// the holder), so more of them overlap those waits: healing 1 GiB after a
// node loss on 4 nodes (benchnbd -heal-only -heal-rates 0) took 2m00s of
// rebuilding with 16 against 2m18s with 4 (one run each, the same hour),
// with client IOPS during the rebuild at 0.17x and 0.14x of before. The
// repair throttle still bounds what they move while clients are active.
const scrubWorkers = 16

// scrubsHere decides which of a block's holders checks it, so that a pass
// costs about one check per block, not one per piece: the first reachable
// node, among the holders placement names now (primary, in v), that holds
// its piece (see holdsPiece). held has the answers of the other holders
// (askHolders); a holder left out of it is asked now (a cheap index
// lookup). A node
// holding a piece without being one of those holders (a fallback, or a
// holder before the view changed) checks it too: it may hold copies the
// rightful holders lack.
func (c *cluster) scrubsHere(ctx context.Context, l redundant.Layout, v *view, primary []string, held map[string]map[blocks.Addr]bool) bool {
	if !slices.Contains(primary, c.self.ID) {
		return true
	}
	for i, id := range primary {
		if id == c.self.ID {
			return true
		}
		if !c.usable(v, id) {
			continue
		}
		if ok, err := c.holdsPiece(ctx, id, l, i, held, false); err == nil && ok {
			return false // it holds its piece, so it checks the block
		}
	}
	return true
}

// missingPieces returns the pieces to write so that block l's holders
// (primary, as placement names them now) keep all of its pieces again
// (st.Plan: a holder keeps what it has, under whatever index): this node
// by its silo's index, the others by their answers in held, and a holder
// that answered it has none is asked again (it may have got one since: a
// client's write, or the pass of another node that checks the block
// too, as one holding a surplus copy does). known is false when it
// cannot tell (a holder whose answer is not in held), and the block is
// then checked in full.
//
// Without asking again, a node's return after a removal (the e2e test
// TestNodeBackAfterRemovalCopiesOnlyWhatItMissed) rewrote 14.3-14.6 MiB
// instead of at most 8: the answers of a window, taken at its start,
// were stale by the time the workers reached its blocks.
func (c *cluster) missingPieces(ctx context.Context, st *redundant.Store, l redundant.Layout, primary []string, held map[string]map[blocks.Addr]bool) (fixes []redundant.Fix, known bool) {
	hold := make([]redundant.Holding, len(primary))
	for i, id := range primary {
		if id != c.self.ID {
			if _, ok := held[id]; !ok {
				return nil, false
			}
		}
		has, err := c.heldPieces(ctx, id, l, i, held, true)
		if err != nil {
			return nil, false
		}
		hold[i] = redundant.Holding{Has: has, Bad: -1}
	}
	return st.Plan(hold), true
}

// duplicates collects the second replicas a pass found in this node's
// silo, of blocks this node holds (see noteDuplicates): key -> layout.
type duplicates struct {
	keys   map[blocks.Addr]redundant.Layout
	hinted map[blocks.Addr]bool // keys this node keeps for give-back, once asked
}

// noteDuplicates notes, for replicated block l of which this node holds
// more than one replica (checkedAtLowerPiece found two), every replica
// but one, when this node is one of the block's holders: the one under
// its rank's key if it has that, else the lowest. A holder whose rank
// moved keeps its copy under its old rank's key (see slot.FindReplica),
// and a later put of the same block (a dedup hit, or the same data
// written again) writes one under the new rank's key too: two copies on
// one node, where one does all a replica can. A copy kept here for
// another node (a hint, to be given back) is left alone, and so are
// shards (a holder may keep two distinct ones: redundant.Store.Plan).
func (c *cluster) noteDuplicates(ctx context.Context, l redundant.Layout, d *duplicates) {
	if l.Replicas < 2 {
		return
	}
	_, primary, _, err := c.rank(l.Addr, l.Replicas, 0, tagSpread(l.Tag))
	if err != nil {
		return
	}
	r := slices.Index(primary, c.self.ID)
	if r < 0 {
		return // not a holder: findSurplus's part
	}
	var held []blocks.Addr
	keep := -1
	for j := range l.Replicas {
		key := blocks.PieceKey(l.Addr, j)
		if ok, err := c.n.silo.HasPiece(ctx, key); err != nil || !ok {
			continue
		}
		held = append(held, key)
		if j == r || keep < 0 {
			keep = len(held) - 1
		}
	}
	if len(held) < 2 {
		return
	}
	if d.hinted == nil {
		d.hinted = c.hintedHere()
	}
	for x, key := range held {
		if x == keep || d.hinted[key] {
			continue
		}
		if d.keys == nil {
			d.keys = map[blocks.Addr]redundant.Layout{}
		}
		d.keys[key] = l
	}
}

// hintedHere returns the keys of the pieces this node keeps for give-back
// to another node.
func (c *cluster) hintedHere() map[blocks.Addr]bool {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	keys := map[blocks.Addr]bool{}
	for h := range c.hints {
		if h.fallback == c.self.ID {
			keys[h.key] = true
		}
	}
	return keys
}

// dropDuplicates deletes the replicas noteDuplicates found, once this
// node's silo has synced (so that the copy kept is durable), each only
// if another replica of its block is still here. It returns how many it
// deleted.
func (c *cluster) dropDuplicates(ctx context.Context, d *duplicates) int64 {
	if len(d.keys) == 0 || ctx.Err() != nil {
		return 0
	}
	if err := c.n.silo.Sync(ctx); err != nil {
		c.log.Warn("anti-entropy: sync before dropping second replicas failed", "err", err)
		return 0
	}
	var dropped int64
	for key, l := range d.keys {
		other := false
		for j := range l.Replicas {
			if k := blocks.PieceKey(l.Addr, j); k != key {
				if ok, err := c.n.silo.HasPiece(ctx, k); err == nil && ok {
					other = true
					break
				}
			}
		}
		if !other {
			continue
		}
		if err := c.n.silo.DeletePiece(ctx, key); err == nil {
			dropped++
			c.bg.droppedPieces.Add(1)
		}
	}
	return dropped
}

// surplus collects the pieces a pass found in this node's silo that
// belong on another node which now holds them too.
type surplus struct {
	mu     sync.Mutex // guards byNode
	byNode map[string][]blocks.Addr
}

// findSurplus notes, after a successful repair of the block at addr, the
// pieces of it this node holds although it is not one of the block's
// holders, when a holder that is reachable has its own copy (for a
// replicated block, the holder of the piece's rank, with any replica;
// for a shard, any holder with that shard): a
// fallback's copy, or a copy made while a holder was away for good and
// has now come back (the holder kept the copies it had, so these became
// surplus).
func (c *cluster) findSurplus(ctx context.Context, addr blocks.Addr, l redundant.Layout, sp *surplus) {
	n := l.Pieces()
	v, primary, _, err := c.rank(addr, n, 0, tagSpread(l.Tag))
	if err != nil || slices.Contains(primary, c.self.ID) {
		// A holder of the block keeps every piece of it it has, even one
		// whose index moved to another node when a node left: when that
		// node comes back, the ranks move back, and the piece is where it
		// belongs again without a copy.
		return
	}
	// The piece's tag names the spread of the volume that wrote it (the
	// first to: a block two volumes share keeps the first writer's
	// header, and pieces written before the tag say "node"): keep it if
	// any spread would make this node a holder.
	for _, spread := range spreadTags {
		if _, hs, _, err := c.rank(addr, n, 0, spread); err == nil && slices.Contains(hs, c.self.ID) {
			return
		}
	}
	asked := make([][]int, len(primary)) // heldPieces of each holder, once asked
	done := make([]bool, len(primary))
	holds := func(r, i int) bool { // whether the holder ranked r keeps piece i
		id := primary[r]
		if id == c.self.ID || !c.usable(v, id) {
			return false
		}
		if !done[r] {
			has, err := c.heldPieces(ctx, id, l, r, nil, true)
			if err != nil {
				return false
			}
			asked[r], done[r] = has, true
		}
		if l.Replicas > 0 {
			return len(asked[r]) > 0 // any replica will do
		}
		return slices.Contains(asked[r], i)
	}
	for i := range n {
		key := blocks.PieceKey(addr, i)
		if ok, err := c.n.silo.HasPiece(ctx, key); err != nil || !ok {
			continue
		}
		// A replica goes once the holder of its rank keeps a replica; a
		// shard, once a holder keeps that shard (holders follow the set:
		// the shard may be on any of them, see redundant.Store.Plan).
		owner := -1
		if l.Replicas > 0 {
			if holds(i, i) {
				owner = i
			}
		} else {
			for r := range primary {
				if holds(r, i) {
					owner = r
					break
				}
			}
		}
		if owner < 0 {
			continue
		}
		id := primary[owner]
		sp.mu.Lock()
		if sp.byNode == nil {
			sp.byNode = map[string][]blocks.Addr{}
		}
		sp.byNode[id] = append(sp.byNode[id], key)
		sp.mu.Unlock()
	}
}

// dropSurplus deletes the surplus pieces found by a pass, once their
// holders have synced (so a holder's copy is durable before this node's
// goes). It returns how many it deleted.
func (c *cluster) dropSurplus(ctx context.Context, sp *surplus) int64 {
	var dropped int64
	for id, keys := range sp.byNode {
		if ctx.Err() != nil {
			break
		}
		if err := c.holder(id).Sync(ctx); err != nil {
			c.failed(id, err)
			continue
		}
		for _, key := range keys {
			if err := c.n.silo.DeletePiece(ctx, key); err == nil {
				dropped++
				c.bg.droppedPieces.Add(1)
			}
		}
	}
	return dropped
}
