package node

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cairn/blocks"
	"cairn/internal/peer"
	"cairn/policies"
	"cairn/volume"
)

// journals places a volume's journal on the nodes placement picks for the
// volume's ID: as many copies as the policy survives losses, plus one.
func (c *cluster) journals(id blocks.ID, p policies.Policy) ([]volume.JournalHolder, error) {
	n := p.Redundancy.Tolerates() + 1
	v := c.view()
	if total := len(v.placer.StorageNodes()); n > total {
		n = total
	}
	v, primary, fallbacks, err := c.rank(blocks.Addr(id), n, 2, p.Spread)
	if err != nil {
		return nil, err
	}
	group := &journalGroup{c: c, log: id}
	out := make([]volume.JournalHolder, n)
	for i := range out {
		js := &journalSlot{g: group, node: primary[i], spare: fallbacks}
		group.slots = append(group.slots, js)
		out[i] = js
	}
	_ = v
	return out, nil
}

// journalGroup is the set of slots that hold copies of one volume's journal.
type journalGroup struct {
	c     *cluster
	log   blocks.ID
	mu    sync.Mutex // guards slots' node and spare
	slots []*journalSlot
}

// journalSlot is one copy of a volume's journal. When its node becomes
// unreachable it moves to a spare node, first copying the log (seal and
// records) from a healthy copy, so that every copy stays whole.
type journalSlot struct {
	g     *journalGroup
	node  string
	spare []string
	// down: the node is unreachable and no spare could take the copy; the
	// journal goes on with the other copies (degraded) and this copy is
	// rebuilt when its node is back.
	down bool
}

func (s *journalSlot) current() string {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	return s.node
}

// move re-homes the slot on a spare node after err from its node.
func (s *journalSlot) move(ctx context.Context, bad string, cause error) (string, error) {
	g := s.g
	c := g.c
	c.failed(bad, cause)
	g.mu.Lock()
	defer g.mu.Unlock()
	if s.node != bad {
		return s.node, nil // another caller moved it already
	}
	used := map[string]bool{}
	for _, o := range g.slots {
		used[o.node] = true
	}
	v := c.view()
	for _, cand := range s.spare {
		if used[cand] || (!c.usable(v, cand) && cand != c.self.ID) {
			continue
		}
		if err := g.copyTo(ctx, cand, s); err != nil {
			c.failed(cand, err)
			continue
		}
		c.log.Warn("journal copy moved", "log", g.log.String()[:12], "from", bad, "to", cand)
		s.node = cand
		return cand, nil
	}
	// No spare: go on degraded while a majority of the copies is up, so
	// that a node cut off from the others cannot keep a journal alone.
	up := 0
	for _, o := range g.slots {
		if o != s && !o.down {
			up++
		}
	}
	if up >= len(g.slots)/2+1 {
		c.log.Warn("journal copy lost, no spare node: going on with fewer copies until it is back", "log", g.log.String()[:12], "node", bad)
		s.down = true
		return "", errDown
	}
	return "", fmt.Errorf("node: journal copy on %s lost, no spare node can take it, and too few copies are left (%d of %d): %w", bad, up, len(g.slots), cause)
}

// errDown: the slot is down and its operations are skipped.
var errDown = errors.New("node: journal copy down")

// restore brings a down slot back once its node answers: the log is copied
// to it from a healthy copy first.
func (s *journalSlot) restore(ctx context.Context) bool {
	g := s.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if !s.down {
		return true
	}
	if !g.c.usable(g.c.view(), s.node) {
		return false
	}
	if err := g.copyTo(ctx, s.node, s); err != nil {
		g.c.failed(s.node, err)
		return false
	}
	g.c.log.Info("journal copy restored", "log", g.log.String()[:12], "node", s.node)
	s.down = false
	return true
}

// copyTo copies the log from a healthy slot other than skip onto node.
func (g *journalGroup) copyTo(ctx context.Context, node string, skip *journalSlot) error {
	dst := g.c.holder(node)
	for _, src := range g.slots {
		if src == skip || src.down {
			continue
		}
		h := g.c.holder(src.node)
		var maxEpoch blocks.Epoch
		err := h.Replay(ctx, g.log, 0, func(e blocks.Epoch, seq uint64, rec []byte) error {
			maxEpoch = max(maxEpoch, e)
			return dst.Append(ctx, g.log, e, seq, rec)
		})
		if err != nil {
			continue
		}
		if maxEpoch > 0 {
			if err := dst.Seal(ctx, g.log, maxEpoch); err != nil {
				return err
			}
		}
		return dst.Sync(ctx)
	}
	if len(g.slots) == 1 {
		return nil // the only copy was lost: the new one starts empty
	}
	return fmt.Errorf("node: no healthy journal copy to copy from: %w", blocks.ErrUnavailable)
}

// do runs fn on the slot's node, moving the slot once if the node is down
// (the log is copied to the new node first, so records appended since the
// last Sync, which may be gone with the old node, are there too). A slot
// that is down (degraded) skips fn until its node is back.
func (s *journalSlot) do(ctx context.Context, fn func(h peer.Local) error) error {
	return s.doOn(ctx, func(_ string, h peer.Local) error { return fn(h) })
}

// doOn is do for an fn that also needs the node's ID.
func (s *journalSlot) doOn(ctx context.Context, fn func(id string, h peer.Local) error) error {
	if s.isDown() && !s.restore(ctx) {
		return nil
	}
	node := s.current()
	err := fn(node, s.g.c.holder(node))
	if err == nil || !errors.Is(err, blocks.ErrUnavailable) {
		return err
	}
	node, merr := s.move(ctx, node, err)
	if errors.Is(merr, errDown) {
		return nil
	}
	if merr != nil {
		return merr
	}
	return fn(node, s.g.c.holder(node))
}

func (s *journalSlot) isDown() bool {
	s.g.mu.Lock()
	defer s.g.mu.Unlock()
	return s.down
}

func (s *journalSlot) Append(ctx context.Context, log blocks.ID, e blocks.Epoch, seq uint64, rec []byte) error {
	return s.do(ctx, func(h peer.Local) error { return h.Append(ctx, log, e, seq, rec) })
}

// appendSyncer is a holder that appends and syncs in one call, and puts
// pieces with it (a peer client: one round trip).
type appendSyncer interface {
	AppendSync(ctx context.Context, log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte) error
	PutAppendSync(ctx context.Context, pieces []peer.Piece, log blocks.ID, epoch blocks.Epoch, seq uint64, rec []byte) ([]error, error)
}

var (
	_ volume.AppendSyncer = (*journalSlot)(nil)
	_ appendSyncer        = (*peer.Client)(nil)
)

// AppendSync implements volume.AppendSyncer: the record is appended on
// the slot's node, which then syncs (one round trip to a remote node,
// peer.Client.AppendSync; Append then Sync on this node's silo). The
// sync also covers the pieces put on that node before, so the cluster's
// sync group need not sync it again (see nodeSync). Under a FLUSH's
// carry (carry.go), the pieces held back for the node go in the same
// request (PutAppendSync). A slot that is down skips it, as it skips
// Append and Sync.
func (s *journalSlot) AppendSync(ctx context.Context, log blocks.ID, e blocks.Epoch, seq uint64, rec []byte) error {
	c := s.g.c
	cr := carryFrom(ctx)
	return s.doOn(ctx, func(id string, h peer.Local) error {
		var held *carried
		if cr != nil {
			held = cr.take(id)
		}
		if held != nil {
			// Counted before the sync reads the count: it covers them.
			c.syncState(id).puts.Add(uint64(len(held.pieces)))
		}
		return c.synced(id, func() error {
			as, ok := h.(appendSyncer)
			if held != nil {
				if !ok {
					held.done(nil, errNotCarried) // finish puts them
				} else {
					errs, err := as.PutAppendSync(ctx, held.pieces, log, e, seq, rec)
					held.done(errs, err)
					return err
				}
			}
			if ok {
				return as.AppendSync(ctx, log, e, seq, rec)
			}
			if err := h.Append(ctx, log, e, seq, rec); err != nil {
				return err
			}
			return h.Sync(ctx)
		})
	})
}

// errNotCarried: the pieces held for a node went unsent (its holder
// cannot carry them); finish puts them.
var errNotCarried = errors.New("node: carried pieces not sent")

func (s *journalSlot) Seal(ctx context.Context, log blocks.ID, e blocks.Epoch) error {
	return s.do(ctx, func(h peer.Local) error { return h.Seal(ctx, log, e) })
}

func (s *journalSlot) Replay(ctx context.Context, log blocks.ID, from uint64, fn func(blocks.Epoch, uint64, []byte) error) error {
	return s.do(ctx, func(h peer.Local) error { return h.Replay(ctx, log, from, fn) })
}

func (s *journalSlot) Trim(ctx context.Context, log blocks.ID, before uint64) error {
	return s.do(ctx, func(h peer.Local) error { return h.Trim(ctx, log, before) })
}

func (s *journalSlot) Sync(ctx context.Context) error {
	return s.doOn(ctx, func(id string, _ peer.Local) error { return s.g.c.syncNode(ctx, id) })
}
