package node

import (
	"context"
	"slices"
	"time"

	"cairn/overlay"
)

// Automatic garbage collection.
//
// Space should come back without anyone running `cairn gc`: every
// Config.GCEvery (`--gc-every`, default an hour) a single node collects,
// if its silo took any write since its last collection, or that
// collection swept something (references move on meanwhile: a journal is
// trimmed only after its checkpoint; a node nobody writes to has nothing
// new to find once a collection found nothing). In a cluster one
// collection covers every node, so only one node runs them, every
// period: the storage member with the smallest ID that gossip sees alive
// (its own silo says nothing of the writes that went elsewhere). Should
// two nodes disagree on that for a moment, both collect, which is safe
// (each collection's sweeps are its own), only wasteful. A collection
// that fails (a member down, say) is logged and tried again at the next
// period.

// gcLoop runs the automatic collections until ctx ends.
func (n *Node) gcLoop(ctx context.Context, every time.Duration) {
	defer close(n.gcDone)
	t := time.NewTicker(every)
	defer t.Stop()
	var last uint64 // the silo's stamp after the last collection
	var swept int64 // what it swept
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n.cluster != nil && !n.cluster.gcLeader() {
			continue
		}
		if n.cluster == nil && n.silo.Stamp() == last && swept == 0 {
			continue // a single node that took no write has nothing new
		}
		start := time.Now()
		res, err := n.collectGarbage(ctx, true)
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("automatic garbage collection failed; trying again later", "err", err, "next", every)
			}
			continue
		}
		last, swept = n.silo.Stamp(), res.Swept // its own deletions and compaction included
		n.log.Info("automatic garbage collection", "marked", res.Marked, "swept", res.Swept,
			"disk_before", res.DiskBytesFrom, "disk_after", res.DiskBytesTo, "took", time.Since(start).Round(time.Millisecond))
	}
}

// gcLeader reports whether this node runs the cluster's automatic
// collections: it is the alive storage member with the smallest ID.
func (c *cluster) gcLeader() bool {
	var ids []string
	for _, m := range c.ml.Members() {
		if m.Node.Storage && (m.State == overlay.Alive || m.Node.ID == c.self.ID) {
			ids = append(ids, m.Node.ID)
		}
	}
	return len(ids) > 0 && slices.Min(ids) == c.self.ID
}
