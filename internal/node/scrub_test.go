package node

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/blocks/redundant"
	"cairn/internal/peer"
	"cairn/policies"
)

// scrubSetup is a two-node cluster in this process: node a (c, its silo
// and its cluster), and node b, a memory store behind a real peer server
// that counts the calls it reads as client activity and the pieces read
// from it. It stores nblocks blocks with replicas = 2 (one piece on each
// node) and returns their addresses.
func scrubSetup(t *testing.T, nblocks int) (c *cluster, b *countingHolder, noted *atomic.Int64, addrs []blocks.Addr) {
	t.Helper()
	b = &countingHolder{Store: memory.New(0)}
	noted = new(atomic.Int64)
	c = testClusterWith(t, peer.ServerOptions{Holder: b, ClientActivity: func() { noted.Add(1) }})
	c.v = viewOf(t, true, "a", "b")
	c.scrub = newScrubber(time.Hour)
	n := c.n
	n.log, n.stores, n.cluster = c.log, map[string]blocks.Store{}, c
	c.setRepairRate(1 << 20) // would bite if the pass were throttled

	st, err := n.redundantFor(policies.Redundancy{Replicas: 2}, policies.SpreadNode)
	if err != nil {
		t.Fatal(err)
	}
	return c, b, noted, putBlocks(t, st, nblocks)
}

// putBlocks stores n blocks of 4 KiB through st, block i filled with the
// byte i, syncs, and returns their addresses.
func putBlocks(t *testing.T, st blocks.Store, n int) []blocks.Addr {
	t.Helper()
	var addrs []blocks.Addr
	for i := range n {
		a, err := st.Put(t.Context(), bytes.Repeat([]byte{byte(i)}, 4096))
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	if err := st.(interface{ Sync(context.Context) error }).Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	return addrs
}

// countingHolder is a memory store that counts the pieces read from it,
// the keys asked about and the walks of its keys.
type countingHolder struct {
	*memory.Store
	gets, has, walks atomic.Int64
}

func (h *countingHolder) HasPiece(ctx context.Context, key blocks.Addr) (bool, error) {
	h.has.Add(1)
	return h.Store.HasPiece(ctx, key)
}

func (h *countingHolder) Walk(ctx context.Context, fn func(blocks.Addr) error) error {
	h.walks.Add(1)
	return h.Store.Walk(ctx, fn)
}

func (h *countingHolder) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	h.gets.Add(1)
	return h.Store.GetPiece(ctx, key)
}

// bPiece returns node b's piece of block a (piece 0 or 1, as the ranks
// put b), or an error if b has neither.
func bPiece(ctx context.Context, b *countingHolder, a blocks.Addr) ([]byte, error) {
	if p, err := b.Store.GetPiece(ctx, blocks.PieceKey(a, 1)); err == nil {
		return p, nil
	}
	return b.Store.GetPiece(ctx, blocks.PieceKey(a, 0))
}

// TestScrubPassIsBackgroundAndSyncsOnce: an anti-entropy pass on node a
// (full or heal) that rewrites the pieces node b lost marks every call it
// makes to b as background work (b notes no client activity, so b's own
// repair stays unthrottled while no client does I/O), and syncs b once at
// the end of the pass rather than once per rewritten piece; b then holds
// every piece again, durably (a power cut of b keeps them).
func TestScrubPassIsBackgroundAndSyncsOnce(t *testing.T) {
	for _, full := range []bool{true, false} {
		t.Run(map[bool]string{true: "full", false: "heal"}[full], func(t *testing.T) {
			ctx := t.Context()
			const nblocks = 40
			c, b, noted, addrs := scrubSetup(t, nblocks)
			lost := 0
			_ = b.Walk(ctx, func(k blocks.Addr) error {
				lost++
				return b.DeletePiece(ctx, k)
			})
			if lost != nblocks {
				t.Fatalf("b held %d pieces, want %d (one of each block)", lost, nblocks)
			}
			noted.Store(0)
			syncs := b.Syncs()

			c.scrubPass(ctx, full)

			ss := c.scrubStatus()
			if ss.Repaired != nblocks || ss.Unreadable != 0 {
				t.Fatalf("the pass repaired %d pieces (%d unreadable), want %d", ss.Repaired, ss.Unreadable, nblocks)
			}
			if k := noted.Load(); k != 0 {
				t.Errorf("b noted %d calls of the pass as client activity, want none", k)
			}
			if k := b.Syncs() - syncs; k != 1 {
				t.Errorf("b synced %d times for %d rewritten pieces, want once, after the pass", k, nblocks)
			}
			b.Crash() // a power cut of b: what it synced stays
			for i, a := range addrs {
				if p, err := bPiece(ctx, b, a); err != nil || len(p) == 0 {
					t.Fatalf("block %d: b lacks its piece after the pass and a power cut: %v", i, err)
				}
			}
		})
	}
}

// TestHealPassReadsOnlyWhatIsMissing: a heal pass reads no piece of a
// block whose holders all list theirs, and rewrites the ones missing;
// a full pass reads every piece of the blocks it checks.
func TestHealPassReadsOnlyWhatIsMissing(t *testing.T) {
	ctx := t.Context()
	const nblocks = 40
	c, b, _, addrs := scrubSetup(t, nblocks)

	// a checks the blocks it ranks first for; b's own pass checks the rest.
	c.scrubPass(ctx, false)
	ss := c.scrubStatus()
	mine := ss.Checked
	if mine == 0 || mine == nblocks || ss.Repaired != 0 || b.gets.Load() != 0 {
		t.Fatalf("heal pass over whole blocks: checked %d of %d, repaired %d, read %d pieces from b; want some, 0, 0",
			mine, nblocks, ss.Repaired, b.gets.Load())
	}
	lose := addrs[:3]
	for _, a := range lose {
		for i := range 2 {
			_ = b.DeletePiece(ctx, blocks.PieceKey(a, i))
		}
	}
	c.scrubPass(ctx, false)
	ss = c.scrubStatus()
	if ss.Repaired != int64(len(lose)) || ss.Unreadable != 0 {
		t.Fatalf("heal pass after b lost %d pieces: repaired %d (%d unreadable)", len(lose), ss.Repaired, ss.Unreadable)
	}
	if k := b.gets.Load(); k > int64(len(lose)) {
		t.Errorf("the heal pass read %d pieces from b, want at most %d (the blocks it rewrote)", k, len(lose))
	}
	for _, a := range lose {
		if _, err := bPiece(ctx, b, a); err != nil {
			t.Fatalf("b still lacks a piece after the heal pass: %v", err)
		}
	}
	b.gets.Store(0)
	c.scrubPass(ctx, true)
	if ss := c.scrubStatus(); ss.Checked != mine || ss.Repaired != 0 || b.gets.Load() < mine {
		t.Fatalf("full pass: checked %d, repaired %d, read %d pieces from b; want %d, 0, at least %d",
			ss.Checked, ss.Repaired, b.gets.Load(), mine, mine)
	}
}

// TestHealPassAsksEachKeyOnce: a heal pass does not walk the other
// node's keys: it asks about each block's keys once (in HasPieces
// windows: the key of b's rank, and, the blocks being replicated, the
// other replica's, which counts as b's copy too), and once more, just
// before rewriting, about each block b answered it lacks.
func TestHealPassAsksEachKeyOnce(t *testing.T) {
	ctx := t.Context()
	const nblocks, replicas = 40, 2
	c, b, _, addrs := scrubSetup(t, nblocks)
	c.scrubPass(ctx, false)
	if w, h := b.walks.Load(), b.has.Load(); w != 0 || h != nblocks*replicas {
		t.Fatalf("heal pass over whole blocks: %d walks of b and %d questions, want 0 and %d", w, h, nblocks*replicas)
	}
	for _, a := range addrs[:5] {
		for i := range 2 {
			_ = b.DeletePiece(ctx, blocks.PieceKey(a, i))
		}
	}
	b.has.Store(0)
	c.scrubPass(ctx, false)
	ss := c.scrubStatus()
	if w, h := b.walks.Load(), b.has.Load(); w != 0 || h != (nblocks+5)*replicas || ss.Repaired != 5 {
		t.Fatalf("heal pass after b lost 5 pieces: %d walks of b, %d questions, %d repaired; want 0, %d, 5", w, h, ss.Repaired, (nblocks+5)*replicas)
	}
}

// TestPassChecksABlockOnce: a node that holds two pieces of a block (its
// own and a copy it keeps for the other) checks the block once, in full
// and heal passes alike.
func TestPassChecksABlockOnce(t *testing.T) {
	ctx := t.Context()
	const nblocks = 40
	c, b, _, addrs := scrubSetup(t, nblocks)
	c.scrubPass(ctx, true)
	mine := c.scrubStatus().Checked
	copied := 0
	for _, a := range addrs {
		for i := range 2 {
			key := blocks.PieceKey(a, i)
			if p, err := b.Store.GetPiece(ctx, key); err == nil {
				if err := c.n.silo.PutPiece(ctx, key, p); err != nil {
					t.Fatal(err)
				}
				// Kept for b, to be given back (else a's pass drops
				// the second copy: TestSecondReplicaDropped).
				c.addHint(hint{key: key, holder: "b", fallback: "a"}, len(p))
				copied++
			}
		}
	}
	if copied != nblocks {
		t.Fatalf("copied %d of b's pieces to a, want %d", copied, nblocks)
	}
	for _, full := range []bool{true, false} {
		c.scrubPass(ctx, full)
		if ss := c.scrubStatus(); ss.Checked != mine || ss.Total != 2*nblocks {
			t.Fatalf("full=%v: a pass over %d pieces checked %d blocks, want %d (as before a held the copies)", full, ss.Total, ss.Checked, mine)
		}
	}
}

// TestPassesTakeTurns: a pass asked for while another runs waits for it
// to end (their counts in the status would mix), and gives up, running
// nothing, if its context ends first.
func TestPassesTakeTurns(t *testing.T) {
	ctx := t.Context()
	c, _, _, _ := scrubSetup(t, 8)
	c.scrub.turn <- struct{}{} // a pass is running
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.scrubPass(ctx, true)
	}()
	select {
	case <-done:
		t.Fatal("a pass ran while another held its turn")
	case <-time.After(200 * time.Millisecond):
	}
	if p := c.scrubStatus().Passes; p != 0 {
		t.Fatalf("%d passes done while the first still ran", p)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	c.scrubPass(short, false) // its context ends while it waits
	<-c.scrub.turn            // the first pass ends
	<-done
	if p := c.scrubStatus().Passes; p != 1 {
		t.Fatalf("%d passes done, want 1 (the waiting one; the one whose context ended runs nothing)", p)
	}
}

// fullHolder is a memory store whose disk is full: every PutPiece fails
// with blocks.ErrNoSpace.
type fullHolder struct{ *memory.Store }

func (fullHolder) PutPiece(context.Context, blocks.Addr, []byte) error {
	return fmt.Errorf("full holder: %w", blocks.ErrNoSpace)
}

// TestFullHolderIsPassedOver: with node b's disk full, writes of a
// replicas = 2 volume still succeed: b's pieces go to a (the last-resort
// fallback), noted for give-back, and every block reads back; b is never
// marked failed (it still serves reads), by the writes or by a give-back
// that finds it still full.
func TestFullHolderIsPassedOver(t *testing.T) {
	ctx := t.Context()
	b := fullHolder{memory.New(0)}
	c := testClusterWith(t, peer.ServerOptions{Holder: b})
	c.v = viewOf(t, true, "a", "b")
	n := c.n
	n.log, n.stores, n.cluster = c.log, map[string]blocks.Store{}, c
	st, err := n.redundantFor(policies.Redundancy{Replicas: 2}, policies.SpreadNode)
	if err != nil {
		t.Fatal(err)
	}
	var addrs []blocks.Addr
	for i := range 20 {
		a, err := st.Put(ctx, bytes.Repeat([]byte{byte(i)}, 4096))
		if err != nil {
			t.Fatalf("Put %d with b's disk full: %v", i, err)
		}
		addrs = append(addrs, a)
	}
	if h := c.pendingHints(); h != 20 {
		t.Errorf("%d pieces noted for give-back to b, want 20 (one per block)", h)
	}
	if !c.usable(c.view(), "b") {
		t.Error("b is marked failed for a full disk; it still serves reads")
	}
	for i, a := range addrs {
		got, err := st.Get(ctx, a)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("block %d does not read back: %v", i, err)
		}
	}
	// Give-back finds b still full: the pieces stay on a, noted, and b
	// is not marked failed.
	c.giveBack(ctx)
	if h := c.pendingHints(); h != 20 || !c.usable(c.view(), "b") {
		t.Errorf("after a give-back to a full b: %d pieces noted (want 20), b usable %v", h, c.usable(c.view(), "b"))
	}
}

// threeNodes is scrubSetup's two nodes and a third, x (a memory store
// behind its own peer server), with the view of the nodes named in
// view, and a replicas = 2 store over them.
func threeNodes(t *testing.T, view ...string) (c *cluster, b *countingHolder, x *memory.Store, st blocks.Store) {
	t.Helper()
	c, b, more, st := nodesWith(t, policies.Redundancy{Replicas: 2}, []string{"x"}, view...)
	return c, b, more["x"], st
}

// nodesWith is scrubSetup's two nodes and more, one memory store behind
// its own peer server for each name in extra, with the view of the nodes
// named in view, and a store of redundancy red over them.
func nodesWith(t *testing.T, red policies.Redundancy, extra []string, view ...string) (c *cluster, b *countingHolder, more map[string]*memory.Store, st blocks.Store) {
	t.Helper()
	b = &countingHolder{Store: memory.New(0)}
	c = testClusterWith(t, peer.ServerOptions{Holder: b})
	more = map[string]*memory.Store{}
	secret := bytes.Repeat([]byte{7}, peer.MinSecret)
	for _, id := range extra {
		m := memory.New(0)
		addr := servePeerWith(t, peer.ServerOptions{Holder: m, Secret: secret, NodeID: id})
		cl := peer.NewClient(addr, peer.ClientOptions{Secret: secret, NodeID: "a", Timeout: 30 * time.Second})
		t.Cleanup(func() { cl.Close() })
		c.clients[id] = cl
		more[id] = m
	}
	c.v = viewOf(t, true, view...)
	c.scrub = newScrubber(time.Hour)
	n := c.n
	n.log, n.stores, n.cluster = c.log, map[string]blocks.Store{}, c
	st, err := n.redundantFor(red, policies.SpreadNode)
	if err != nil {
		t.Fatal(err)
	}
	return c, b, more, st
}

// TestHealFollowsTheSet: 3 nodes, replicas = 2; x leaves for good. On
// the blocks a and x held, a moves up a rank where x ranked first, and
// keeps the copy it has under its old rank's key. a's heal pass writes
// one piece per such block, on b, the one x took with it, and no second
// copy under the survivor's new rank (docs/placement.md: "set" against
// "positional" movement); every block reads back, and a second pass
// finds nothing to do.
func TestHealFollowsTheSet(t *testing.T) {
	ctx := t.Context()
	c, b, _, st := threeNodes(t, "a", "b", "x")
	n := c.n
	const nblocks = 60
	addrs := putBlocks(t, st, nblocks)
	mine := map[blocks.Addr]bool{}
	affected, shifted := 0, 0
	for _, a := range addrs {
		_, primary, _, err := c.rank(a, 2, 0, policies.SpreadNode)
		if err != nil {
			t.Fatal(err)
		}
		// a's pass checks the blocks a holds a piece of (b's own pass,
		// which this test does not run, would check the others).
		if slices.Contains(primary, "x") && slices.Contains(primary, "a") {
			affected++
			mine[a] = true
			if primary[0] == "x" {
				shifted++ // a moves from rank 1 to rank 0
			}
		}
	}
	if shifted == 0 || shifted == affected {
		t.Fatalf("placement put x first on %d of the %d blocks it holds: the test needs some of each", shifted, affected)
	}

	c.v = viewOf(t, true, "a", "b") // x is gone for good
	c.scrubPass(ctx, false)
	ss := c.scrubStatus()
	if ss.Repaired != int64(affected) || ss.Unreadable != 0 {
		t.Fatalf("heal pass after x left: %d pieces rewritten (%d unreadable), want %d: one per block a and x held (on %d of them a moved up a rank)",
			ss.Repaired, ss.Unreadable, affected, shifted)
	}
	for i, a := range addrs {
		got, err := st.Get(ctx, a)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("block %d does not read back after the heal: %v", i, err)
		}
		if !mine[a] {
			continue
		}
		// Both nodes hold a replica, each under one key only.
		for _, h := range []blocks.Holder{n.silo, b} {
			held := 0
			for r := range 2 {
				if ok, _ := h.HasPiece(ctx, blocks.PieceKey(a, r)); ok {
					held++
				}
			}
			if held != 1 {
				t.Fatalf("block %d: a holder keeps %d replicas of it, want 1", i, held)
			}
		}
	}
	// Batched reads (an NBD read's path) find a's copies too, under
	// whichever key a keeps them: none falls to a read of its own.
	var held []blocks.Addr
	for _, a := range addrs {
		if mine[a] {
			held = append(held, a)
		}
	}
	views := make([][]byte, len(held))
	release := st.(blocks.Viewer).ViewMany(ctx, held, views)
	got, errs := st.(blocks.ManyGetter).GetMany(ctx, held, new([]byte))
	for k, a := range held {
		want := bytes.Repeat([]byte{byte(slices.Index(addrs, a))}, 4096)
		if !bytes.Equal(views[k], want) {
			t.Errorf("block %v: ViewMany gave %d bytes, want its 4096 from a's silo", a, len(views[k]))
		}
		if errs[k] != nil || !bytes.Equal(got[k], want) {
			t.Errorf("block %v: GetMany: %v", a, errs[k])
		}
	}
	release()
	nothingLeft(t, c)
}

// nothingLeft runs a heal pass and a full pass on c and fails unless
// neither writes a piece or finds a block unreadable.
func nothingLeft(t *testing.T, c *cluster) {
	t.Helper()
	for _, full := range []bool{false, true} {
		c.scrubPass(t.Context(), full)
		if ss := c.scrubStatus(); ss.Repaired != 0 || ss.Unreadable != 0 {
			t.Fatalf("a later pass (full %v) wrote %d pieces (%d unreadable), want 0", full, ss.Repaired, ss.Unreadable)
		}
	}
}

// TestHealFollowsTheSetErasure: 4 nodes, data = 2, parity = 1; x leaves
// for good. On each block x held a shard of, the two other holders keep
// theirs, under whatever rank they now have, and the node that was no
// holder gets x's shard: one piece per block, where by ranks every
// holder that moved up got its new rank's shard too (3 pieces for each
// one lost with 4+2). Blocks read back before the heal (from the shards
// left, wherever they now rank) and after it, each node keeps one shard
// of each block it holds, and later passes find nothing to do.
func TestHealFollowsTheSetErasure(t *testing.T) {
	ctx := t.Context()
	const n = 3
	c, b, more, st := nodesWith(t, policies.Redundancy{Data: 2, Parity: 1}, []string{"x", "y"}, "a", "b", "x", "y")
	nodes := map[string]blocks.Holder{"a": c.n.silo, "b": b, "x": more["x"], "y": more["y"]}
	const nblocks = 80
	addrs := putBlocks(t, st, nblocks)
	before := map[blocks.Addr][]string{}
	for _, a := range addrs {
		_, primary, _, err := c.rank(a, n, 0, policies.SpreadNode)
		if err != nil {
			t.Fatal(err)
		}
		before[a] = primary
	}
	c.v = viewOf(t, true, "a", "b", "y") // x is gone for good
	readAll := func(when string, skip map[blocks.Addr]bool) {
		t.Helper()
		for i, a := range addrs {
			if skip[a] {
				continue
			}
			got, err := st.Get(ctx, a)
			if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 4096)) {
				t.Fatalf("block %d does not read back %s: %v", i, when, err)
			}
		}
	}
	// a's pass checks the blocks of which a is the first holder (as
	// placement ranks them now) keeping a piece; the others' passes,
	// not run here, check the rest.
	mine := map[blocks.Addr]bool{}
	shifted := 0
	for _, a := range addrs {
		p0 := before[a]
		if !slices.Contains(p0, "x") {
			continue
		}
		_, p1, _, _ := c.rank(a, n, 0, policies.SpreadNode)
		for _, id := range p1 {
			if slices.Contains(p0, id) {
				if id == "a" {
					mine[a] = true
				}
				break
			}
		}
		if !mine[a] {
			continue
		}
		for r, id := range p1 {
			if j := slices.Index(p0, id); j >= 0 && j != r {
				shifted++
				break
			}
		}
	}
	if len(mine) == 0 || shifted == 0 {
		t.Fatalf("a checks %d blocks x held, on %d of them a holder moved rank: the test needs some", len(mine), shifted)
	}
	// The others read back before any heal (a read that must decode
	// repairs what it found missing: not a's blocks, so that the pass
	// below finds all of theirs to do).
	readAll("before the heal", mine)
	c.scrubPass(ctx, false)
	ss := c.scrubStatus()
	if ss.Repaired != int64(len(mine)) || ss.Unreadable != 0 {
		t.Fatalf("heal pass after x left: %d pieces written (%d unreadable), want %d: one per block a checks that x held (on %d of them a holder moved rank)",
			ss.Repaired, ss.Unreadable, len(mine), shifted)
	}
	readAll("after the heal", nil)
	for a := range mine {
		p0 := before[a]
		_, p1, _, _ := c.rank(a, n, 0, policies.SpreadNode)
		for _, id := range p1 {
			want := slices.Index(p0, id) // the shard it held
			if want < 0 {
				want = slices.Index(p0, "x") // the newcomer: x's shard
			}
			var keeps []int
			for j := range n {
				if ok, _ := nodes[id].HasPiece(ctx, blocks.PieceKey(a, j)); ok {
					keeps = append(keeps, j)
				}
			}
			if len(keeps) != 1 || keeps[0] != want {
				t.Fatalf("block %v (holders %v, before %v): %s keeps shards %v, want [%d]", a, p1, p0, id, keeps, want)
			}
		}
	}
	nothingLeft(t, c)
}

// TestHealFollowsTheZones: 4 nodes in 2 zones (a, b in z1; x, y in z2),
// replicas = 2, spread = zone: each block has a copy in each zone. x
// leaves for good; on the blocks a and x held, a's pass writes x's copy
// on y, the only node left in z2, as the volume's placement ranks them
// (the pieces carry their spread), never on b, which ranking by node
// alone picks for some of them and which would leave both copies in z1.
func TestHealFollowsTheZones(t *testing.T) {
	ctx := t.Context()
	zones := map[string]string{"a": "z1", "b": "z1", "x": "z2", "y": "z2"}
	c, b, more, _ := nodesWith(t, policies.Redundancy{Replicas: 2}, []string{"x", "y"}, "a", "b", "x", "y")
	c.v = viewIn(t, true, zones, "a", "b", "x", "y")
	st, err := c.n.redundantFor(policies.Redundancy{Replicas: 2}, policies.SpreadZone)
	if err != nil {
		t.Fatal(err)
	}
	addrs := putBlocks(t, st, 80)
	var ours []blocks.Addr
	for _, a := range addrs {
		if _, primary, _, _ := c.rank(a, 2, 0, policies.SpreadZone); slices.Contains(primary, "a") && slices.Contains(primary, "x") {
			ours = append(ours, a)
		}
	}
	c.v = viewIn(t, true, zones, "a", "b", "y") // x is gone for good
	byNode := 0
	for _, a := range ours {
		if _, primary, _, _ := c.rank(a, 2, 0, policies.SpreadNode); slices.Contains(primary, "b") {
			byNode++
		}
	}
	if len(ours) == 0 || byNode == 0 {
		t.Fatalf("%d blocks on a and x, %d of them ranked on b by node: the test needs some of each", len(ours), byNode)
	}
	c.scrubPass(ctx, false)
	if ss := c.scrubStatus(); ss.Repaired != int64(len(ours)) || ss.Unreadable != 0 {
		t.Fatalf("heal pass: %d pieces written (%d unreadable), want %d (x's copies, on y)", ss.Repaired, ss.Unreadable, len(ours))
	}
	for _, a := range ours {
		onY, onB := false, false
		for j := range 2 {
			if ok, _ := more["y"].HasPiece(ctx, blocks.PieceKey(a, j)); ok {
				onY = true
			}
			if ok, _ := b.Store.HasPiece(ctx, blocks.PieceKey(a, j)); ok {
				onB = true
			}
		}
		if !onY || onB {
			t.Fatalf("block %v: a copy on y %v, on b %v; want y's and not b's", a, onY, onB)
		}
	}
	for i, a := range addrs {
		got, err := st.Get(ctx, a)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("block %d does not read back: %v", i, err)
		}
	}
	nothingLeft(t, c)
}

// TestSecondReplicaDropped: after x left, a keeps its copy of the
// blocks where it moved up a rank under its old rank's key; putting the
// same blocks again (a dedup hit) writes a second copy under the new
// rank's key. a's next pass deletes the second copies, keeping the one
// under its rank's key, and every block reads back.
func TestSecondReplicaDropped(t *testing.T) {
	ctx := t.Context()
	c, _, _, st := threeNodes(t, "a", "b", "x")
	const nblocks = 60
	addrs := putBlocks(t, st, nblocks)
	c.v = viewOf(t, true, "a", "b") // x is gone for good
	c.scrubPass(ctx, false)
	putBlocks(t, st, nblocks) // the same blocks again
	keys := func(a blocks.Addr) []int {
		var held []int
		for j := range 2 {
			if ok, _ := c.n.silo.HasPiece(ctx, blocks.PieceKey(a, j)); ok {
				held = append(held, j)
			}
		}
		return held
	}
	twice := 0
	for _, a := range addrs {
		if len(keys(a)) == 2 {
			twice++
		}
	}
	if twice == 0 {
		t.Fatal("no block has two copies on a: the test needs some")
	}
	c.scrubPass(ctx, false)
	if ss := c.scrubStatus(); ss.Dropped != int64(twice) {
		t.Fatalf("the pass dropped %d pieces, want %d (a's second copies)", ss.Dropped, twice)
	}
	for i, a := range addrs {
		_, primary, _, _ := c.rank(a, 2, 0, policies.SpreadNode)
		if got := keys(a); len(got) != 1 || got[0] != slices.Index(primary, "a") {
			t.Fatalf("block %d: a keeps replicas %v, want the one of its rank %d", i, got, slices.Index(primary, "a"))
		}
		got, err := st.Get(ctx, a)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("block %d does not read back: %v", i, err)
		}
	}
}

// TestSlotDeleteSparesOtherHolders: a slot's delete (a repair replacing
// a bad piece deletes it first) reaches the slot's node, not the block's
// other holders: the copy one of them keeps under that key is its own
// replica when its rank moved (TestHealFollowsTheSet).
func TestSlotDeleteSparesOtherHolders(t *testing.T) {
	ctx := t.Context()
	b := memory.New(0)
	c := testClusterWith(t, peer.ServerOptions{Holder: b})
	c.v = viewOf(t, true, "a", "b")
	c.n.log, c.n.cluster = c.log, c
	addr := blocks.Sum([]byte("a block"))
	key := blocks.PieceKey(addr, 1)
	for _, h := range c.holders(policies.SpreadNode)(addr, 2) {
		if slotOf(h).primary != "a" {
			continue
		}
		if err := b.PutPiece(ctx, key, []byte("b's replica")); err != nil {
			t.Fatal(err)
		}
		if err := c.n.silo.PutPiece(ctx, key, []byte("a's copy")); err != nil {
			t.Fatal(err)
		}
		if err := h.DeletePiece(ctx, key); err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.n.silo.HasPiece(ctx, key); ok {
			t.Error("the slot's delete left the piece on its own node")
		}
		if ok, _ := b.HasPiece(ctx, key); !ok {
			t.Error("the delete of a's slot took b's copy too")
		}
		return
	}
	t.Fatal("no slot of the block is a's")
}

// TestJoinFollowsTheSet: 2 nodes, replicas = 2; x joins. On the blocks x
// now ranks among the holders of, one holder ranks lower than before or
// drops out. a's heal pass writes one piece per such block, on x; where
// a dropped out, its copy is surplus once x and b hold theirs, and goes.
// Every block reads back, and nothing is left to do.
func TestJoinFollowsTheSet(t *testing.T) {
	ctx := t.Context()
	c, b, x, st := threeNodes(t, "a", "b")
	n := c.n
	const nblocks = 60
	addrs := putBlocks(t, st, nblocks)

	c.v = viewOf(t, true, "a", "b", "x") // x joins
	joined, aOut := 0, 0
	for _, a := range addrs {
		_, primary, _, err := c.rank(a, 2, 0, policies.SpreadNode)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(primary, "x") {
			joined++
			if !slices.Contains(primary, "a") {
				aOut++
			}
		}
	}
	if aOut == 0 || aOut == joined {
		t.Fatalf("x joined the holders of %d blocks, a left %d of them: the test needs some of each", joined, aOut)
	}
	c.scrubPass(ctx, false)
	ss := c.scrubStatus()
	if ss.Repaired != int64(joined) || ss.Dropped != int64(aOut) || ss.Unreadable != 0 {
		t.Fatalf("heal pass after x joined: %d pieces written, %d surplus dropped (%d unreadable); want %d (one per block x now holds) and %d (a's copies where a is no holder now)",
			ss.Repaired, ss.Dropped, ss.Unreadable, joined, aOut)
	}
	for i, a := range addrs {
		got, err := st.Get(ctx, a)
		if err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 4096)) {
			t.Fatalf("block %d does not read back after x joined: %v", i, err)
		}
		_, primary, _, _ := c.rank(a, 2, 0, policies.SpreadNode)
		for _, h := range []struct {
			id string
			h  blocks.Holder
		}{{"a", n.silo}, {"b", b}, {"x", x}} {
			held := 0
			for r := range 2 {
				if ok, _ := h.h.HasPiece(ctx, blocks.PieceKey(a, r)); ok {
					held++
				}
			}
			in := slices.Contains(primary, h.id)
			if !in && h.id == "b" {
				continue // b's own pass, not run here, drops its surplus
			}
			if want := map[bool]int{true: 1, false: 0}[in]; held != want {
				t.Fatalf("block %d: %s keeps %d replicas of it, want %d (holders %v)", i, h.id, held, want, primary)
			}
		}
	}
	c.scrubPass(ctx, false)
	if ss := c.scrubStatus(); ss.Repaired != 0 || ss.Dropped != 0 {
		t.Fatalf("a second heal pass wrote %d pieces and dropped %d, want 0 and 0", ss.Repaired, ss.Dropped)
	}
}

// TestFindReplicaAsksOnce: where b moved up a rank when x left, the slot
// of b's new rank finds b's copy under its old rank's key in one call
// to b (GetAnyPiece: the rank's key, then the other), not in a
// HasPieces round trip and a read.
func TestFindReplicaAsksOnce(t *testing.T) {
	ctx := t.Context()
	c, b, _, st := threeNodes(t, "a", "b", "x")
	addrs := putBlocks(t, st, 40)
	var moved []blocks.Addr
	for _, a := range addrs {
		if _, primary, _, _ := c.rank(a, 2, 0, policies.SpreadNode); primary[0] == "x" && primary[1] == "b" {
			moved = append(moved, a)
		}
	}
	c.v = viewOf(t, true, "a", "b") // x is gone
	found := 0
	for _, a := range moved {
		for _, h := range c.holders(policies.SpreadNode)(a, 2) {
			sl := slotOf(h)
			if sl.primary != "b" || sl.idx != 0 {
				continue
			}
			has, gets := b.has.Load(), b.gets.Load()
			p, j, err := sl.FindReplica(ctx, a, 2, 0)
			if err != nil || j != 1 {
				t.Fatalf("FindReplica on b's new rank: index %d, %v; want b's copy under index 1", j, err)
			}
			if l, err := redundant.PieceLayout(p); err != nil || l.Addr != a || l.Index != 1 {
				t.Fatalf("FindReplica returned a piece of %v index %d (%v)", l.Addr, l.Index, err)
			}
			if dh, dg := b.has.Load()-has, b.gets.Load()-gets; dh != 0 || dg != 2 {
				t.Fatalf("FindReplica asked b %d questions and read %d keys, want 0 and 2 (in one call)", dh, dg)
			}
			found++
		}
	}
	if found == 0 {
		t.Fatal("no block had b move up to rank 0")
	}
}

// TestReplicaKeysFitOneCall: slot.FindReplica asks another node about
// all of a block's piece keys (replicas or shards) in one GetAnyPiece
// call.
func TestReplicaKeysFitOneCall(t *testing.T) {
	if policies.MaxReplicas > peer.MaxAnyPiece {
		t.Fatalf("a policy allows %d replicas, GetAnyPiece takes %d keys", policies.MaxReplicas, peer.MaxAnyPiece)
	}
	if policies.MaxPieces > peer.MaxAnyPiece {
		t.Fatalf("a policy allows %d shards, GetAnyPiece takes %d keys", policies.MaxPieces, peer.MaxAnyPiece)
	}
}
