package node

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"cairn/blocks"
	"cairn/blocks/redundant"
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
}

type scrubber struct {
	mu     sync.Mutex // guards st
	st     ScrubStatus
	kick   chan struct{}
	period time.Duration
}

// scrubLoop runs a pass when kicked (the view lost or gained a node) and
// at least every period.
func (c *cluster) scrubLoop(ctx context.Context) {
	t := time.NewTimer(c.scrub.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.scrub.kick:
		case <-t.C:
		}
		c.scrubPass(ctx)
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
func (c *cluster) scrubPass(ctx context.Context) {
	c.scrub.mu.Lock()
	c.scrub.st.Running, c.scrub.st.Checked, c.scrub.st.Repaired, c.scrub.st.Unreadable = true, 0, 0, 0
	c.scrub.mu.Unlock()
	seen := map[blocks.Addr]bool{}
	var keys []blocks.Addr
	_ = c.n.silo.Walk(ctx, func(k blocks.Addr) error {
		keys = append(keys, k)
		return nil
	})
	type job struct {
		addr blocks.Addr
		st   *redundant.Store
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range scrubWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				n, err := j.st.Repair(ctx, j.addr)
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
	for _, k := range keys {
		if ctx.Err() != nil {
			break
		}
		p, err := c.n.silo.GetPiece(ctx, k)
		if err != nil {
			continue
		}
		l, err := redundant.PieceLayout(p)
		if err != nil || seen[l.Addr] {
			continue
		}
		seen[l.Addr] = true
		if !c.scrubsHere(ctx, l) {
			continue
		}
		st, err := c.n.redundantFor(policies.Redundancy{Replicas: l.Replicas, Data: l.Data, Parity: l.Parity}, policies.SpreadNode)
		if err != nil {
			continue
		}
		jobs <- job{l.Addr, st.(*redundant.Store)}
	}
	close(jobs)
	wg.Wait()
	c.scrub.mu.Lock()
	c.scrub.st.Running = false
	c.scrub.st.Passes++
	c.scrub.st.LastDone = time.Now()
	st := c.scrub.st
	c.scrub.mu.Unlock()
	if st.Repaired > 0 || st.Unreadable > 0 {
		c.log.Info("anti-entropy pass", "checked", st.Checked, "repaired", st.Repaired, "unreadable", st.Unreadable)
	}
}

// scrubWorkers bounds the blocks one node checks at once.
const scrubWorkers = 4

// scrubsHere decides which of a block's holders checks it, so that a pass
// costs about one check per block, not one per piece: the first reachable
// node, among the holders placement names now, that holds its piece. A node
// asks the holders ranked before it whether they hold theirs (a cheap index
// lookup), and leaves the block to the first that does. A node holding a
// piece without being one of those holders (a fallback, or a holder before
// the view changed) checks it too: it may hold copies the rightful holders
// lack.
func (c *cluster) scrubsHere(ctx context.Context, l redundant.Layout) bool {
	n := l.Replicas
	if n == 0 {
		n = l.Data + l.Parity
	}
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
		if ok, err := c.holder(id).HasPiece(ctx, blocks.PieceKey(l.Addr, i)); err == nil && ok {
			return false // it holds its piece, so it checks the block
		}
	}
	return true
}
