package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"cairn/blocks"
	"cairn/blocks/redundant"
	"cairn/blocks/silo"
	"cairn/internal/admin"
	"cairn/internal/bloom"
	"cairn/internal/peer"
	"cairn/overlay"
)

// Garbage collection across a cluster.
//
// Any node can run it (`cairn gc`): it is the collector for that run. No
// node has the whole picture: the roots and the catalogue live in raft,
// the journals on their holders, the chunks a writer pushed but has not
// journalled yet in that writer's memory, and every node's silo holds
// pieces of blocks of every volume. So the collector:
//
//  1. asks every member to begin a sweep of its silo (GCBegin): from then
//     on the silo remembers which pieces are new or were put again;
//  2. gathers from every member what its open volumes reference from
//     memory only (GCLive: map pages written out since the last
//     checkpoint, map changes not yet journalled), taken under each
//     volume's flush lock, which covers every Put of the volume together
//     with the change that records it;
//  3. reads every root, its kept versions and its journal on every holder
//     (volume.Catalogue.MarkStored), consistently: a root that moved while
//     it was read is read again, and volumes created meanwhile are read
//     too;
//  4. sends every member a Bloom filter of all that (GCSweep); each deletes
//     its pieces of blocks the filter does not contain that it held
//     before step 1 and nobody put again since, then compacts its silo.
//
// Why that loses nothing: a block in use at the end was either put after
// step 1 on every node holding it (the sweep spares it), or put before,
// and then its reference was, at step 2, in its writer's memory (marked
// there) or already in a journal or root, from which references only move
// forward (journal record -> checkpointed root) while step 3 reads them
// later; a clone or snapshot taken meanwhile references blocks that were
// reachable from its source when step 3 read it, or new ones. A false
// positive of the filter keeps a piece of garbage until a later run (each
// run draws a new seed).
//
// It refuses to run while a member is unreachable (its memory and its
// silo cannot be asked): a node down for less than --remove-after is
// waited for; one down longer is gone for good (its pieces were rebuilt
// elsewhere, its leases long expired) and is left out. A member that
// restarts during the run loses its sweep, and the run fails at step 4
// for it (the others are swept). Sweeps left open by a collector that
// died expire after sweepTTL.

// sweepTTL is how long an open sweep waits for its GCSweep.
const sweepTTL = time.Hour

// gcBitsPerBlock sizes the filter: about 0.05% false positives.
const gcBitsPerBlock = 16

// sweeps are the sweeps open on this node, by ID.
type sweeps struct {
	mu   sync.Mutex
	next uint64
	open map[uint64]*openSweep
}

type openSweep struct {
	sw *silo.Sweep
	at time.Time
}

// gcServer is a node's side of a cluster collection (peer.Collector).
type gcServer struct{ n *Node }

var _ peer.Collector = gcServer{}

// BeginSweep implements peer.Collector.
func (g gcServer) BeginSweep(ctx context.Context) (uint64, error) {
	sw, err := g.n.silo.BeginSweep()
	if err != nil {
		return 0, err
	}
	s := &g.n.sweeps
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[uint64]*openSweep{}
	}
	for id, o := range s.open {
		if time.Since(o.at) > sweepTTL {
			o.sw.End()
			delete(s.open, id)
		}
	}
	s.next++
	s.open[s.next] = &openSweep{sw: sw, at: time.Now()}
	return s.next, nil
}

// LiveRefs implements peer.Collector.
func (g gcServer) LiveRefs(ctx context.Context, mark func(blocks.Addr) error) error {
	return g.n.catalog.LiveRefs(ctx, mark)
}

// Sweep implements peer.Collector: it deletes the pieces of this node's
// silo whose block the filter does not contain, if the sweep allows (see
// silo.Sweep), then syncs and compacts the silo.
func (g gcServer) Sweep(ctx context.Context, id uint64, filter *bloom.Filter, progress func(checked, swept int64) error) (peer.SweepResult, error) {
	var res peer.SweepResult
	s := &g.n.sweeps
	s.mu.Lock()
	o := s.open[id]
	delete(s.open, id)
	s.mu.Unlock()
	if o == nil {
		return res, fmt.Errorf("node: no open sweep %d here (the node restarted since, or the sweep expired): %w", id, blocks.ErrNotFound)
	}
	defer o.sw.End()
	if filter == nil {
		return res, nil
	}
	si := g.n.silo
	res.DiskBefore = si.Stats().DiskBytes
	unreadable := 0
	hb := make([]byte, redundant.HeaderSize)
	// Piece by piece as the walk gives them (the walk holds a range of
	// keys at a time, not the silo's whole list).
	err := si.Walk(ctx, func(key blocks.Addr) error {
		if progress != nil {
			// Every piece, deleted or not: a long run of live pieces
			// must keep the collector's stream alive too.
			if err := progress(res.Checked, res.Swept); err != nil {
				return err
			}
		}
		res.Checked++
		// The piece's header says which block it is of (it has its own
		// checksum): the sweep reads that, not the block.
		p, err := si.PeekPiece(ctx, key, hb)
		switch {
		case errors.Is(err, blocks.ErrNotFound):
			return nil
		case errors.Is(err, blocks.ErrCorrupt):
			unreadable++ // anti-entropy repairs or reports it
			return nil
		case err != nil:
			return err
		}
		addr, i, err := redundant.PieceHeader(p)
		if err != nil || blocks.PieceKey(addr, i) != key {
			unreadable++
			return nil
		}
		if filter.Has(addr) {
			return nil
		}
		ok, err := o.sw.DeleteStale(ctx, key)
		if err != nil {
			return err
		}
		if ok {
			res.Swept++
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	if unreadable > 0 {
		g.n.log.Warn("gc: pieces left alone, unreadable or not pieces of a block", "count", unreadable)
	}
	// Sync and compact, still sending progress: compacting a large silo
	// takes longer than the collector waits for a silent stream.
	done := make(chan error, 1)
	go func() {
		err := si.Sync(ctx)
		if err == nil {
			err = si.Compact(ctx)
		}
		done <- err
	}()
	tick := time.NewTicker(progressTick)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return res, err
			}
			res.DiskAfter = si.Stats().DiskBytes
			return res, nil
		case <-tick.C:
			if progress != nil {
				_ = progress(res.Checked, res.Swept) // a dead stream ends ctx, which stops the compaction
			}
		}
	}
}

// progressTick is how often a sweep that is compacting offers progress
// (the stream sends at most one item a second).
const progressTick = 250 * time.Millisecond

// gcMember is one member's side as the collector calls it: a peer client,
// or this node's own gcServer.
type gcMember interface {
	GCBegin(ctx context.Context) (uint64, error)
	GCLive(ctx context.Context, mark func(blocks.Addr) error) error
	GCSweep(ctx context.Context, id uint64, filter []byte) (peer.SweepResult, error)
}

// localMember is this node as a gcMember.
type localMember struct{ g gcServer }

func (l localMember) GCBegin(ctx context.Context) (uint64, error) { return l.g.BeginSweep(ctx) }
func (l localMember) GCLive(ctx context.Context, mark func(blocks.Addr) error) error {
	return l.g.LiveRefs(ctx, mark)
}
func (l localMember) GCSweep(ctx context.Context, id uint64, filter []byte) (peer.SweepResult, error) {
	var f *bloom.Filter
	if filter != nil {
		var err error
		if f, err = bloom.Decode(filter); err != nil {
			return peer.SweepResult{}, err
		}
	}
	return l.g.Sweep(ctx, id, f, nil)
}

// gcMembers returns the members a collection involves, by node ID, or an
// error naming a member it must wait for.
func (c *cluster) gcMembers() (map[string]gcMember, error) {
	out := map[string]gcMember{}
	now := time.Now()
	for _, m := range c.ml.Members() {
		id := m.Node.ID
		switch {
		case id == c.self.ID:
			out[id] = localMember{gcServer{c.n}}
		case m.State == overlay.Alive || m.State == overlay.Suspect:
			out[id] = c.gcClient(m.Node)
		case m.State == overlay.Dead && now.Sub(m.Since) <= c.removeAfter:
			return nil, fmt.Errorf("node: garbage collection needs every member: %s is down since %s (it is waited for until it returns, or for --remove-after, %v, after which it counts as gone): %w",
				id, m.Since.Format(time.RFC3339), c.removeAfter, blocks.ErrUnavailable)
		}
	}
	return out, nil
}

// gcClient returns a peer client for a member's collection calls: its
// own, not the holders' (frontends take part too, and a member's first
// reply may wait for its volumes' maps to be written out, longer than a
// holder call's timeout).
func (c *cluster) gcClient(nd overlay.Node) *peer.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := "gc:" + nd.ID + "@" + nd.DataAddr
	cl := c.clients[key]
	if cl == nil {
		cl = peer.NewClient(nd.DataAddr, peer.ClientOptions{Secret: c.secret, NodeID: c.self.ID, Timeout: 30 * time.Second, Logger: c.log})
		c.clients[key] = cl
	}
	return cl
}

// collectGarbage runs a collection across the cluster (see above).
func (c *cluster) collectGarbage(ctx context.Context) (admin.GCResult, error) {
	var res admin.GCResult
	members, err := c.gcMembers()
	if err != nil {
		return res, err
	}
	began := map[string]uint64{}
	done := false
	defer func() {
		if done {
			return
		}
		// End the sweeps begun, without sweeping.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for id, sw := range began {
			if _, err := members[id].GCSweep(actx, sw, nil); err != nil {
				c.log.Warn("gc: could not end a sweep", "member", id, "err", err)
			}
		}
	}()
	for id, m := range members {
		sw, err := m.GCBegin(ctx)
		if err != nil {
			return res, fmt.Errorf("node: gc: begin on %s: %w", id, err)
		}
		began[id] = sw
	}
	marked := map[blocks.Addr]struct{}{}
	mark := func(a blocks.Addr) error {
		if !a.IsZero() {
			marked[a] = struct{}{}
		}
		return nil
	}
	for id, m := range members {
		if err := m.GCLive(ctx, mark); err != nil {
			return res, fmt.Errorf("node: gc: live blocks of %s: %w", id, err)
		}
	}
	if err := c.n.catalog.MarkStored(ctx, mark); err != nil {
		return res, fmt.Errorf("node: gc: %w", err)
	}
	res.Marked = int64(len(marked))
	bits := float64(gcBitsPerBlock)
	if n := float64(len(marked)); n*bits > peer.MaxFilterBits {
		bits = peer.MaxFilterBits / n // more garbage kept, none lost
	}
	f := bloom.New(len(marked), bits, rand.Uint64())
	for a := range marked {
		f.Add(a)
	}
	marked = nil
	enc := f.Encode()
	done = true // from here on every sweep runs, and ends, on its member
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		errs  []error
		swept int
	)
	for id, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.GCSweep(ctx, began[id], enc)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("node: gc: sweep on %s: %w", id, err))
				return
			}
			swept++
			res.Swept += r.Swept
			res.DiskBytesFrom += r.DiskBefore
			res.DiskBytesTo += r.DiskAfter
		}()
	}
	wg.Wait()
	res.Nodes = swept
	c.log.Info("garbage collected across the cluster", "marked", res.Marked, "swept", res.Swept, "nodes", swept, "filter_bits", f.Bits())
	return res, errors.Join(errs...)
}
