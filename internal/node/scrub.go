package node

import (
	"bytes"
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
	// away) that it deleted in the last pass, once their holder had them.
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
// fetches the piece keys of every other node once (Walk), and reads only
// the blocks whose holders, as placement names them now, do not all list
// their piece: once, from the nearest copy, to write the missing pieces
// (redundant.Store.RepairMissing). After a node loss most blocks lost
// nothing, and reading and hashing all their pieces was most of what
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
func (c *cluster) scrubPass(ctx context.Context, full bool) {
	c.scrub.mu.Lock()
	c.scrub.st.Running, c.scrub.st.Checked, c.scrub.st.Repaired, c.scrub.st.Unreadable = true, 0, 0, 0
	c.scrub.st.Total, c.scrub.st.Scanned, c.scrub.st.Dropped = 0, 0, 0
	c.scrub.mu.Unlock()
	seen := map[blocks.Addr]bool{}
	var keys []blocks.Addr
	_ = c.n.silo.Walk(ctx, func(k blocks.Addr) error {
		keys = append(keys, k)
		return nil
	})
	c.scrub.mu.Lock()
	c.scrub.st.Total = int64(len(keys))
	c.scrub.mu.Unlock()
	var held map[string]keySet
	if !full {
		held = c.holdings(throttle.Background(ctx))
	}
	// Every piece the pass reads or rewrites pays the repair throttle
	// (see cluster.pace), so that healing leaves room for client I/O. The
	// pieces it rewrites are synced once, at the end (syncRepairs), not
	// each on its own. Every call the pass makes to other nodes carries
	// the background mark, its questions (HasPiece) and syncs too: a
	// node counts unmarked requests as client I/O and throttles its own
	// repair for a second after each, so a pass that asked unmarked kept
	// every node it asked throttled while no client was doing anything.
	bctx := redundant.DeferRepairSyncs(throttle.Background(ctx))
	moved0, wrote0 := c.bg.movedPieces.Load(), c.bg.repairedPieces.Load()
	type job struct {
		addr blocks.Addr
		l    redundant.Layout
		st   *redundant.Store
	}
	jobs := make(chan job)
	var sp surplus
	var wg sync.WaitGroup
	for range scrubWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				var n int
				var err error
				if missing, known := c.missingPieces(bctx, j.l, held); known {
					// A heal pass that knows which holders lack their
					// piece: one read of the block, only if one does.
					if len(missing) > 0 {
						n, err = j.st.RepairMissing(bctx, j.addr, missing)
					}
				} else {
					n, err = j.st.Repair(bctx, j.addr)
				}
				if err == nil {
					c.findSurplus(bctx, j.addr, j.l, &sp)
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
	var hb [redundant.HeaderSize]byte
	for i, k := range keys {
		if ctx.Err() != nil {
			break
		}
		if i%256 == 0 {
			c.scrub.mu.Lock()
			c.scrub.st.Scanned = int64(i)
			c.scrub.mu.Unlock()
		}
		// The piece's header names its block (and carries its own
		// checksum); Repair reads and verifies the piece itself, so a
		// corrupt local copy is checked and rewritten like any other.
		p, err := c.n.silo.PeekPiece(ctx, k, hb[:])
		if err != nil {
			continue
		}
		l, err := redundant.PieceLayout(p)
		if err != nil || seen[l.Addr] {
			continue
		}
		seen[l.Addr] = true
		if !c.scrubsHere(bctx, l, held) {
			continue
		}
		st, err := c.n.redundantFor(policies.Redundancy{Replicas: l.Replicas, Data: l.Data, Parity: l.Parity}, policies.SpreadNode)
		if err != nil {
			continue
		}
		jobs <- job{l.Addr, l, st.(*redundant.Store)}
	}
	close(jobs)
	wg.Wait()
	if c.bg.repairedPieces.Load() != wrote0 {
		// Pieces this pass wrote anywhere: rewritten, moved from a
		// fallback, or repaired by its reads.
		c.syncRepairs(bctx)
	}
	dropped := c.dropSurplus(bctx, &sp)
	c.scrub.mu.Lock()
	c.scrub.st.Running = false
	if ctx.Err() == nil {
		c.scrub.st.Scanned = c.scrub.st.Total
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
// node, among the holders placement names now, that holds its piece. A node
// asks the holders ranked before it whether they hold theirs (a cheap index
// lookup), and leaves the block to the first that does. A node holding a
// piece without being one of those holders (a fallback, or a holder before
// the view changed) checks it too: it may hold copies the rightful holders
// lack.
func (c *cluster) scrubsHere(ctx context.Context, l redundant.Layout, held map[string]keySet) bool {
	n := l.Pieces()
	v, primary, _, err := c.rank(l.Addr, n, 0, policies.SpreadNode)
	if err != nil || !slices.Contains(primary, c.self.ID) {
		return true
	}
	for i, id := range primary {
		if id == c.self.ID {
			return true
		}
		if !c.usable(v, id) {
			continue
		}
		key := blocks.PieceKey(l.Addr, i)
		if ks, ok := held[id]; ok && ks.has(key) {
			return false // it holds its piece, so it checks the block
		}
		// Not in its list (a heal pass): it may have got the piece since
		// (its own pass, checking the block first); ask.
		if ok, err := c.holder(id).HasPiece(ctx, key); err == nil && ok {
			return false
		}
	}
	return true
}

// keySet is a node's piece keys, sorted, for a heal pass's lookups: 32
// bytes a piece, where a Go map would take more than twice that.
type keySet []blocks.Addr

func (ks keySet) has(k blocks.Addr) bool {
	_, ok := slices.BinarySearchFunc(ks, k, compareAddr)
	return ok
}

func compareAddr(a, b blocks.Addr) int { return bytes.Compare(a[:], b[:]) }

// holdings fetches the piece keys of every other usable node in the view
// (Walk), for a heal pass. A node whose keys could not all be fetched is
// left out: blocks with a piece there are checked by asking it, and read
// in full.
func (c *cluster) holdings(ctx context.Context) map[string]keySet {
	v := c.view()
	held := map[string]keySet{}
	for id := range v.nodes {
		if id == c.self.ID || !c.usable(v, id) {
			continue
		}
		var ks keySet
		err := c.holder(id).Walk(ctx, func(k blocks.Addr) error {
			ks = append(ks, k)
			return nil
		})
		if err != nil {
			c.log.Warn("anti-entropy: could not list a node's pieces; its blocks are read in full", "node", id, "err", err)
			continue
		}
		slices.SortFunc(ks, compareAddr)
		held[id] = ks
	}
	return held
}

// missingPieces returns the indexes of block l's pieces whose holders,
// as placement names them now, lack them: this node by its silo's
// index, the others by their keys in held. known is false when it
// cannot tell (no held: a full pass; a holder whose keys are not in
// held; no placement), and the block is then checked in full.
func (c *cluster) missingPieces(ctx context.Context, l redundant.Layout, held map[string]keySet) (missing []int, known bool) {
	if held == nil {
		return nil, false
	}
	n := l.Pieces()
	_, primary, _, err := c.rank(l.Addr, n, 0, policies.SpreadNode)
	if err != nil {
		return nil, false
	}
	for i, id := range primary {
		key := blocks.PieceKey(l.Addr, i)
		if id == c.self.ID {
			ok, err := c.n.silo.HasPiece(ctx, key)
			if err != nil {
				return nil, false
			}
			if !ok {
				missing = append(missing, i)
			}
			continue
		}
		ks, ok := held[id]
		if !ok {
			return nil, false
		}
		if ks.has(key) {
			continue
		}
		// Missing from its list, taken when the pass began: ask, as the
		// node may have got it since (a client's write, another node's
		// pass that checked the block too).
		ok, err := c.holder(id).HasPiece(ctx, key)
		if err != nil {
			return nil, false
		}
		if !ok {
			missing = append(missing, i)
		}
	}
	return missing, true
}

// surplus collects the pieces a pass found in this node's silo that
// belong on another node which now holds them too.
type surplus struct {
	mu     sync.Mutex // guards byNode
	byNode map[string][]blocks.Addr
}

// findSurplus notes, after a successful repair of the block at addr, the
// pieces of it this node holds although it is not one of the block's
// holders, when their holder is reachable and has its own copy: a
// fallback's copy, or a copy made while a holder was away for good and
// has now come back (the holder kept the copies it had, so these became
// surplus).
func (c *cluster) findSurplus(ctx context.Context, addr blocks.Addr, l redundant.Layout, sp *surplus) {
	n := l.Pieces()
	v, primary, _, err := c.rank(addr, n, 0, policies.SpreadNode)
	if err != nil || slices.Contains(primary, c.self.ID) {
		// A holder of the block keeps every piece of it it has, even one
		// whose index moved to another node when a node left: when that
		// node comes back, the ranks move back, and the piece is where it
		// belongs again without a copy.
		return
	}
	// The piece does not say which spread its volume asked for (the pass
	// checks blocks as spread "node" places them): keep it if any spread
	// would make this node a holder.
	for _, spread := range []policies.Spread{policies.SpreadZone, policies.SpreadNone} {
		if _, hs, _, err := c.rank(addr, n, 0, spread); err == nil && slices.Contains(hs, c.self.ID) {
			return
		}
	}
	for i, id := range primary {
		key := blocks.PieceKey(addr, i)
		if id == c.self.ID || !c.usable(v, id) {
			continue
		}
		if ok, err := c.n.silo.HasPiece(ctx, key); err != nil || !ok {
			continue
		}
		if ok, err := c.holder(id).HasPiece(ctx, key); err != nil || !ok {
			continue
		}
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
