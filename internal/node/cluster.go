package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"cairn/blocks"
	"cairn/blocks/redundant"
	"cairn/internal/peer"
	"cairn/internal/throttle"
	"cairn/overlay"
	"cairn/overlay/placement"
	"cairn/policies"
)

// view is the cluster as placement sees it: every storage node that is
// alive, suspect, or dead for less than RemoveAfter. A node that dies keeps
// its place in the view for a while, so that the holders of a block do not
// shuffle at the first missed heartbeat: its pieces are handed to fallback
// nodes meanwhile (hints), and given back when it returns. Only a node gone
// longer than RemoveAfter leaves the view, and then its pieces are rebuilt
// elsewhere.
type view struct {
	placer *placement.Placer
	nodes  map[string]overlay.Node // by ID, every node in the view
	alive  map[string]bool         // gossip says Alive or Suspect

	// sets caches the holder sets cluster.holders built in this view
	// (see holderSets); nil in views made without newView (tests).
	sets *holderSets
}

// newView returns an empty view with a holder-set cache.
func newView() *view {
	return &view{nodes: map[string]overlay.Node{}, alive: map[string]bool{}, sets: &holderSets{m: map[uint64][]blocks.Holder{}}}
}

// holderSets caches, for one view, the holders cluster.holders returns
// for each distinct ranking of nodes.
//
// Every read and write of a block asks the redundancy layer for the
// block's holders, and building them (a slot per piece, the candidate
// list, the slice) cost four allocations, about 400 bytes per call: on a
// 3-node cluster serving 4K random reads at QD32 through one node, 12%
// of that node's CPU went there (pprof), most of it the allocator
// getting fresh spans and the kernel faulting their pages in, against
// 1% for the placement hashing itself. Yet a view yields few distinct
// holder sets: a set depends only on the view, the piece count and the
// ranked candidates (the primaries, then the fallbacks), and slots are
// never changed once built; on 3 nodes there are 6 rankings in all. So
// the set is built once per ranking and view and shared; the hashing
// still runs per call. The redundancy layer only reads the slice.
type holderSets struct {
	mu sync.RWMutex
	m  map[uint64][]blocks.Holder // by holderKey
	// idx numbers the view's nodes from 1 for holderKey (set on the first
	// call, under mu).
	idx map[string]uint64
}

// maxHolderSets bounds the sets cached per view (large clusters have
// many rankings; past the bound, sets are built per call as before).
const maxHolderSets = 4096

// holderKey packs a ranking into a map key: n (4 bits), the number of
// candidates (4 bits), then each candidate's node number (8 bits each,
// up to 7). ok is false when the ranking does not fit; it is then not
// cached.
func (hs *holderSets) key(n int, cands []string) (k uint64, ok bool) {
	if n > 15 || len(cands) > 7 {
		return 0, false
	}
	k = uint64(n) | uint64(len(cands))<<4
	for i, id := range cands {
		x := hs.idx[id]
		if x == 0 || x > 255 {
			return 0, false
		}
		k |= x << (8 + 8*i)
	}
	return k, true
}

// get returns the cached set for the ranking, if any.
func (hs *holderSets) get(n int, cands []string) ([]blocks.Holder, bool) {
	hs.mu.RLock()
	defer hs.mu.RUnlock()
	if hs.idx == nil {
		return nil, false
	}
	k, ok := hs.key(n, cands)
	if !ok {
		return nil, false
	}
	set, ok := hs.m[k]
	return set, ok
}

// put caches set for the ranking (unless the cache is full).
func (hs *holderSets) put(v *view, n int, cands []string, set []blocks.Holder) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.idx == nil {
		hs.idx = make(map[string]uint64, len(v.nodes))
		ids := make([]string, 0, len(v.nodes))
		for id := range v.nodes {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for i, id := range ids {
			hs.idx[id] = uint64(i + 1)
		}
	}
	if len(hs.m) >= maxHolderSets {
		return
	}
	if k, ok := hs.key(n, cands); ok {
		hs.m[k] = set
	}
}

// cluster is a node's membership, its peer clients and the data path that
// spreads pieces and journals over the other nodes.
type cluster struct {
	n      *Node
	log    *slog.Logger
	self   overlay.Node
	secret []byte
	ml     *overlay.Membership
	server *peer.Server

	removeAfter time.Duration
	known       []string  // gossip addresses of the members last saved
	lastContact time.Time // when remembered members were last called

	mu      sync.Mutex // guards clients, v, suspect
	clients map[string]*peer.Client
	v       *view
	suspect map[string]time.Time // node ID -> until when this node avoids it after a failed call

	scrub scrubber

	hmu   sync.Mutex // guards hints
	hints map[hint]struct{}

	syncs sync.Map // node ID -> *nodeSync: puts there and the syncs that covered them

	handedOff, handedBack atomic.Int64 // bytes
	givenBack             atomic.Int64 // pieces given back
	underReplicated       atomic.Int64 // shards led here that lack desired replicas

	bg background
}

// background paces and counts the node's background copies: anti-entropy
// repair (which runs its calls with a throttle.Background context, so the
// slots below pay the limiter) and give-back. Client I/O through the slots
// notes activity, so background copies run unthrottled while clients are
// idle.
type background struct {
	once sync.Once
	lim  *throttle.Limiter // see limiter

	rate           atomic.Int64 // bytes per second wanted before the limiter exists; see setRepairRate
	rateSet        atomic.Bool
	repairedPieces atomic.Int64 // pieces anti-entropy rewrote (or wrote to a new holder), since start
	movedPieces    atomic.Int64 // of which copied from a fallback to a holder that lacked them
	droppedPieces  atomic.Int64 // surplus copies deleted once their holder had them, since start
	repairedBytes  atomic.Int64
}

// limiter returns the node's repair throttle, made on first use at the
// rate setRepairRate gave (throttle.DefaultRate if none).
func (c *cluster) limiter() *throttle.Limiter {
	c.bg.once.Do(func() {
		rate := int64(throttle.DefaultRate)
		if c.bg.rateSet.Load() {
			rate = c.bg.rate.Load()
		}
		c.bg.lim = throttle.New(throttle.Options{Rate: rate})
	})
	return c.bg.lim
}

// setRepairRate sets the byte rate of background copies while clients
// are active (0: unlimited).
func (c *cluster) setRepairRate(rate int64) {
	c.bg.rate.Store(rate)
	c.bg.rateSet.Store(true)
	c.limiter().SetRate(rate)
}

// pace makes a background call pay the limiter for n bytes, and notes a
// client call as activity. It returns ctx's error if ctx ends while a
// background call waits.
func (c *cluster) pace(ctx context.Context, n int) error {
	if throttle.IsBackground(ctx) {
		return c.limiter().Wait(ctx, n)
	}
	c.limiter().Note()
	return nil
}

// hint records a piece written to a fallback node because its holder was
// unreachable; it goes back to the holder when the holder returns.
type hint struct {
	key      blocks.Addr
	holder   string // node ID the piece belongs on
	fallback string // node ID it was written to
}

// rebuild recomputes the view from the membership.
func (c *cluster) rebuild() error {
	now := time.Now()
	var pn []placement.Node
	v := newView()
	members := c.ml.Members()
	for _, m := range members {
		if !m.Node.Storage {
			continue
		}
		switch m.State {
		case overlay.Alive, overlay.Suspect:
			v.alive[m.Node.ID] = true
		case overlay.Dead:
			if now.Sub(m.Since) > c.removeAfter {
				continue
			}
		default: // Left: gone for good
			continue
		}
		v.nodes[m.Node.ID] = m.Node
		w := 1.0
		if m.Node.Capacity > 0 {
			w = float64(m.Node.Capacity) / float64(1<<40)
		}
		pn = append(pn, placement.Node{ID: m.Node.ID, Zone: m.Node.Zone, Weight: w, Storage: true})
	}
	p, err := placement.NewPlacer(pn)
	if err != nil {
		return err
	}
	v.placer = p
	c.mu.Lock()
	old := c.v
	c.v = v
	for _, m := range members {
		// A node gossip saw come back after a call to it failed is worth
		// calling again at once (a restart, not a crash).
		if until, ok := c.suspect[m.Node.ID]; ok && m.State == overlay.Alive && m.Since.After(until.Add(-suspectFor)) {
			delete(c.suspect, m.Node.ID)
		}
	}
	c.mu.Unlock()
	if old != nil && !sameNodes(old, v) {
		c.kickScrub()
	}
	return nil
}

func sameNodes(a, b *view) bool {
	if len(a.nodes) != len(b.nodes) {
		return false
	}
	for id := range a.nodes {
		if _, ok := b.nodes[id]; !ok {
			return false
		}
	}
	return true
}

func (c *cluster) view() *view {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.v
}

// holder returns the holder for node id: the silo for this node, a peer
// client for the others.
func (c *cluster) holder(id string) peer.Local {
	if id == c.self.ID {
		return c.n.silo
	}
	return c.client(id)
}

// client returns the peer client of node id (not this node), made at its
// first use.
func (c *cluster) client(id string) *peer.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.clients[id]
	if cl == nil {
		nd := c.v.nodes[id]
		cl = peer.NewClient(nd.DataAddr, peer.ClientOptions{Secret: c.secret, NodeID: c.self.ID, Timeout: 5 * time.Second, Logger: c.log})
		c.clients[id] = cl
	}
	return cl
}

// nodeSync tracks, for one node, the pieces this node put there and the
// syncs of it that returned, so that a sync group can skip a node that
// has already synced every piece put there (a volume's FLUSH syncs its
// journal holders with the last record: AppendSync). A Sync covers every
// put that returned before it was called; so a sync that read puts = p
// before it was sent, and succeeded, covers the first p puts.
type nodeSync struct {
	puts    atomic.Uint64 // PutPiece calls to the node that returned (failed ones too)
	covered atomic.Uint64 // puts covered by a successful sync
	at      atomic.Int64  // when the last successful sync returned (UnixNano)
}

// syncState returns node id's nodeSync.
func (c *cluster) syncState(id string) *nodeSync {
	if ns, ok := c.syncs.Load(id); ok {
		return ns.(*nodeSync)
	}
	ns, _ := c.syncs.LoadOrStore(id, &nodeSync{})
	return ns.(*nodeSync)
}

// putPiece puts a piece on node id and counts the put (see nodeSync).
func (c *cluster) putPiece(ctx context.Context, id string, key blocks.Addr, data []byte) error {
	err := c.holder(id).PutPiece(ctx, key, data)
	c.syncState(id).puts.Add(1)
	return err
}

// synced runs sync, a call that syncs node id (Sync, or an append with a
// sync), and notes what it covered if it succeeds.
func (c *cluster) synced(id string, sync func() error) error {
	ns := c.syncState(id)
	p := ns.puts.Load()
	if err := sync(); err != nil {
		return err
	}
	for {
		cur := ns.covered.Load()
		if cur >= p || ns.covered.CompareAndSwap(cur, p) {
			break
		}
	}
	ns.at.Store(time.Now().UnixNano())
	return nil
}

// syncNode syncs node id and notes what the sync covered.
func (c *cluster) syncNode(ctx context.Context, id string) error {
	return c.synced(id, func() error { return c.holder(id).Sync(ctx) })
}

// coveredFresh is how recently a node must have synced for a sync group
// to count it without calling it: its sync confirmed both our pieces and
// that the node was reachable, and the latter is only worth so much.
const coveredFresh = time.Second

// isCovered reports whether every piece put on node id has been synced,
// by a sync that returned within coveredFresh.
func (c *cluster) isCovered(id string) bool {
	ns := c.syncState(id)
	at := ns.at.Load()
	return ns.covered.Load() >= ns.puts.Load() && at != 0 && time.Since(time.Unix(0, at)) < coveredFresh
}

// usable reports whether calls to node id are worth trying now.
func (c *cluster) usable(v *view, id string) bool {
	if !v.alive[id] {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().After(c.suspect[id])
}

// suspectFor is how long a node is avoided after a call to it failed
// (unless gossip sees it come back sooner).
const suspectFor = 5 * time.Second

// failed notes a failed call to id: the node is avoided for a few seconds.
func (c *cluster) failed(id string, err error) {
	if !errors.Is(err, blocks.ErrUnavailable) || id == c.self.ID {
		return
	}
	c.mu.Lock()
	c.suspect[id] = time.Now().Add(suspectFor)
	c.mu.Unlock()
}

// rank returns the n holders of key and up to extra fallbacks after them.
func (c *cluster) rank(key blocks.Addr, n, extra int, spread policies.Spread) (*view, []string, []string, error) {
	v, ranked, err := c.rankAll(key, n, extra, spread)
	if err != nil {
		return v, nil, nil, err
	}
	return v, ranked[:n:n], ranked[n:], nil
}

// rankAll is rank with the holders and the fallbacks in one slice.
func (c *cluster) rankAll(key blocks.Addr, n, extra int, spread policies.Spread) (*view, []string, error) {
	v := c.view()
	ranked, err := rankInto(v, key, n, extra, spread, make([]string, 0, n+extra))
	return v, ranked, err
}

// rankInto is rankAll in view v, appending to ranked (empty, with room
// for n+extra IDs: then it allocates nothing).
func rankInto(v *view, key blocks.Addr, n, extra int, spread policies.Spread, ranked []string) ([]string, error) {
	// Every read and write ranks its block: placement's result goes
	// through a pooled scratch slice, and only the IDs are kept.
	sp, _ := rankScratch.Get().(*[]placement.Node)
	if sp == nil {
		sp = new([]placement.Node)
	}
	defer rankScratch.Put(sp)
	hs, err := v.placer.Holders(key, n, spread, (*sp)[:0])
	*sp = hs[:0]
	if err != nil {
		return nil, err
	}
	if len(hs) != n {
		return nil, fmt.Errorf("node: placement gave %d holders for %d pieces: %w", len(hs), n, blocks.ErrUnavailable)
	}
	all := len(v.placer.StorageNodes())
	// One array for both: primary, then fallbacks (a few IDs, searched
	// linearly: cheaper than a map on every read and write).
	for _, h := range hs {
		ranked = append(ranked, h.ID)
	}
	if m := min(all, n+extra); m > n {
		wide, err := v.placer.Holders(key, m, policies.SpreadNone, (*sp)[:0])
		*sp = wide[:0]
		if err == nil {
			for _, h := range wide {
				if !slices.Contains(ranked, h.ID) {
					ranked = append(ranked, h.ID)
				}
			}
		}
	}
	return ranked, nil
}

// rankScratch holds *[]placement.Node for rankAll.
var rankScratch sync.Pool

// holders returns the n piece holders of a block for the redundancy layer.
func (c *cluster) holders(spread policies.Spread) func(blocks.Addr, int) []blocks.Holder {
	const extra = 2
	return func(addr blocks.Addr, n int) []blocks.Holder {
		v := c.view()
		var buf [8]string // the ranking, on the stack when it fits
		ranked, err := rankInto(v, addr, n, extra, spread, buf[:0])
		if err == nil && v.sets != nil {
			if set, ok := v.sets.get(n, ranked); ok {
				return set // shared: see holderSets
			}
		}
		cands := slices.Clone(ranked) // kept by the slots
		out := make([]blocks.Holder, n)
		if err != nil {
			for i := range out {
				out[i] = failing{err}
			}
			return out
		}
		// A node cut off from most of the cluster must not complete a
		// write the others cannot see: a piece is written only while a
		// majority of the block's pieces can land on distinct reachable
		// nodes (slot.PutPiece). Reads need no majority: any intact copy
		// serves, verified.
		slots := make([]slot, n)
		for i := range out {
			sl := &slots[i]
			*sl = slot{c: c, v: v, idx: i, primary: cands[i], cands: cands, nprim: n, need: n/2 + 1}
			if cands[i] == c.self.ID {
				out[i] = &localSlot{sl}
			} else {
				out[i] = sl
			}
		}
		if v.sets != nil {
			v.sets.put(v, n, cands, out)
		}
		return out
	}
}

// allHolders returns the holder the redundancy layer syncs: every usable
// storage node at once (see syncGroup).
func (c *cluster) allHolders() []blocks.Holder {
	return []blocks.Holder{syncGroup{c}}
}

// syncGroup is a holder whose Sync syncs every reachable storage node in
// parallel and succeeds only if a majority of the nodes in the view did:
// a FLUSH on a node cut off from most of the cluster fails, even when the
// pieces it wrote before the cut had reached the others. A node that
// already synced every piece put there, within the last coveredFresh
// (a volume's journal holders, which the FLUSH synced with its last
// record), is counted without a call (see nodeSync). Its other methods
// are never called by the redundancy layer.
type syncGroup struct{ c *cluster }

func (g syncGroup) Sync(ctx context.Context) error {
	c := g.c
	v := c.view()
	var ids []string
	ok := 0
	for id := range v.nodes {
		if id != c.self.ID && !c.usable(v, id) {
			continue
		}
		if c.isCovered(id) {
			ok++
			continue
		}
		ids = append(ids, id)
	}
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = c.syncNode(ctx, id); errs[i] != nil {
				c.failed(id, errs[i])
			}
		}()
	}
	wg.Wait()
	var firstErr error
	for _, err := range errs {
		if err == nil {
			ok++
		} else if firstErr == nil {
			firstErr = err
		}
	}
	if need := len(v.nodes)/2 + 1; ok < need {
		if firstErr == nil {
			firstErr = blocks.ErrUnavailable
		}
		return fmt.Errorf("node: only %d of %d nodes confirmed a sync (need %d): %w", ok, len(v.nodes), need, firstErr)
	}
	return nil
}

func (g syncGroup) PutPiece(context.Context, blocks.Addr, []byte) error { return errNotAHolder }
func (g syncGroup) GetPiece(context.Context, blocks.Addr) ([]byte, error) {
	return nil, errNotAHolder
}
func (g syncGroup) HasPiece(context.Context, blocks.Addr) (bool, error) { return false, errNotAHolder }
func (g syncGroup) DeletePiece(context.Context, blocks.Addr) error      { return errNotAHolder }

var errNotAHolder = errors.New("node: the sync group holds no pieces")

// failing is a holder that fails every call (no placement possible).
type failing struct{ err error }

func (f failing) PutPiece(context.Context, blocks.Addr, []byte) error { return f.err }
func (f failing) GetPiece(context.Context, blocks.Addr) ([]byte, error) {
	return nil, f.err
}
func (f failing) HasPiece(context.Context, blocks.Addr) (bool, error) { return false, f.err }
func (f failing) DeletePiece(context.Context, blocks.Addr) error      { return f.err }
func (f failing) Sync(context.Context) error                          { return f.err }

// slot is one piece position of a block: its holder, and the fallback
// nodes that take the piece while the holder is unreachable.
type slot struct {
	c       *cluster
	v       *view
	idx     int // the piece's index
	primary string
	cands   []string // every node this block's pieces may go to: the nprim primaries, then fallbacks (shared by the block's slots)
	nprim   int
	need    int // distinct reachable nodes a write needs (0: no check)
}

// fallbacks returns the nodes that take the piece while its holder is
// unreachable, in order: the block's fallback nodes, then, as the last
// resort, the nodes that hold its other pieces (fewer distinct nodes, but
// every piece still written: pieces never collide, they have their own
// keys; and given back when the holder returns). Made on demand: reads
// and writes that find their holder need none.
func (s *slot) fallbacks() []string {
	fb := make([]string, 0, len(s.cands))
	fb = append(fb, s.cands[s.nprim:]...)
	for j, p := range s.cands[:s.nprim] {
		if j != s.idx && p != s.primary {
			fb = append(fb, p)
		}
	}
	return fb
}

// quorate reports whether at least need of ids (distinct) are alive as
// gossip sees them. It ignores this node's short-lived marks of failed
// calls (a node that just restarted is not cut off); that a majority
// really took the data is checked by the sync (syncGroup) and the journal.
func (c *cluster) quorate(v *view, ids []string, need int) bool {
	seen := map[string]bool{}
	for _, id := range ids {
		if !seen[id] && (id == c.self.ID || v.alive[id]) {
			seen[id] = true
		}
	}
	return len(seen) >= need
}

// BorrowsOnly implements redundant.Borrower: a slot passes data to the
// silo or to peer clients, neither of which keeps it once PutPiece
// returns (a client has written or copied the frame by then).
func (s *slot) BorrowsOnly() bool { return true }

var _ redundant.Borrower = (*slot)(nil)

func (s *slot) PutPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	if err := s.c.pace(ctx, len(data)); err != nil {
		return fmt.Errorf("node: put piece %v: %w", key, err)
	}
	if cr := carryFrom(ctx); cr != nil && s.carried(cr, key, data) {
		return nil // goes with the journal's append (carry.go)
	}
	err := s.putPiece(ctx, key, data)
	if err == nil && throttle.IsBackground(ctx) {
		s.c.bg.repairedPieces.Add(1)
		s.c.bg.repairedBytes.Add(int64(len(data)))
	}
	return err
}

// carried reports whether cr took the piece, to send it with the FLUSH's
// append to the piece's holder: only while the holder is usable and the
// block's nodes are quorate (else putPiece does what it always does).
func (s *slot) carried(cr *carry, key blocks.Addr, data []byte) bool {
	if s.primary == s.c.self.ID || !s.c.usable(s.v, s.primary) {
		return false
	}
	if s.need > 0 && !s.c.quorate(s.v, s.cands, s.need) {
		return false
	}
	return cr.hold(s, s.primary, key, data)
}

func (s *slot) putPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	if s.need > 0 && !s.c.quorate(s.v, s.cands, s.need) {
		return fmt.Errorf("node: fewer than %d of the nodes for this block are reachable (is this node cut off from the cluster?): %w", s.need, blocks.ErrUnavailable)
	}
	var err error
	if s.c.usable(s.v, s.primary) || s.primary == s.c.self.ID {
		// A holder whose disk is full (ErrNoSpace) is passed over like
		// one that is down (failed does not mark it: it still serves
		// reads): the piece goes to a fallback, and back to the holder
		// once it has room (giveBack). Otherwise one full node failed
		// every write of a block with a piece on it.
		if err = s.c.putPiece(ctx, s.primary, key, data); err == nil || !passOver(err) {
			return err
		}
		s.c.failed(s.primary, err)
	} else {
		err = fmt.Errorf("node %s is down: %w", s.primary, blocks.ErrUnavailable)
	}
	if s.need > 0 && !s.c.quorate(s.v, s.cands, s.need) {
		return fmt.Errorf("node: fewer than %d of the nodes for this block are reachable: %w", s.need, err)
	}
	for _, f := range s.fallbacks() {
		if !s.c.usable(s.v, f) && f != s.c.self.ID {
			continue
		}
		if ferr := s.c.putPiece(ctx, f, key, data); ferr != nil {
			s.c.failed(f, ferr)
			continue
		}
		s.c.addHint(hint{key: key, holder: s.primary, fallback: f}, len(data))
		return nil
	}
	return err
}

// passOver reports whether a put's error sends the piece to a fallback:
// the holder is unreachable, or its disk is full.
func passOver(err error) bool {
	return errors.Is(err, blocks.ErrUnavailable) || errors.Is(err, blocks.ErrNoSpace)
}

// GetPiece reads the piece from its holder, or a fallback. A client read
// notes client activity; a background read (anti-entropy checking a
// block) is getBackground.
func (s *slot) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	if throttle.IsBackground(ctx) {
		return s.getBackground(ctx, key)
	}
	s.c.limiter().Note()
	return s.getPiece(ctx, key)
}

func (s *slot) getPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	p, err := s.c.holder(s.primary).GetPiece(ctx, key)
	if err == nil {
		return p, nil
	}
	s.c.failed(s.primary, err)
	if fp, ferr := s.fromFallbacks(ctx, key); ferr == nil {
		return fp, nil
	}
	return nil, err
}

// getBackground is GetPiece for anti-entropy. A holder that answers
// without the piece while a fallback has an intact copy (the holder came
// back after its pieces were rebuilt elsewhere, or the ranks shifted when
// a node left) gets that copy now, so the block's pieces end up where
// placement names them and not on fallbacks for ever; the fallback's
// copy becomes surplus (see findSurplus). A piece is not moved to a
// holder that keeps another piece of the block, nor a shard that another
// holder keeps (shouldMove): when the ranks shift, the holders' pieces
// count as a set. Every piece
// read or copied pays the limiter, after the read: the bucket goes into
// debt, and the next background call waits it off.
func (s *slot) getBackground(ctx context.Context, key blocks.Addr) ([]byte, error) {
	p, err := s.c.holder(s.primary).GetPiece(ctx, key)
	switch {
	case err == nil:
	case errors.Is(err, blocks.ErrUnavailable):
		s.c.failed(s.primary, err)
		if fp, ferr := s.fromFallbacks(ctx, key); ferr == nil {
			p, err = fp, nil
		}
	case errors.Is(err, blocks.ErrNotFound):
		fp, from, ferr := s.fromFallbacksAt(ctx, key)
		if ferr != nil {
			return nil, err
		}
		if (s.c.usable(s.v, s.primary) || s.primary == s.c.self.ID) && s.shouldMove(ctx, fp, from) {
			if addr, i, perr := redundant.ParsePiece(fp); perr == nil && blocks.PieceKey(addr, i) == key {
				if werr := s.c.limiter().Wait(ctx, len(fp)); werr != nil {
					return nil, fmt.Errorf("node: move piece %v: %w", key, werr)
				}
				if perr := s.c.putPiece(ctx, s.primary, key, fp); perr == nil {
					s.c.bg.movedPieces.Add(1)
					s.c.bg.repairedPieces.Add(1)
					s.c.bg.repairedBytes.Add(int64(len(fp)))
				} else {
					s.c.failed(s.primary, perr)
				}
			}
		}
		p, err = fp, nil
	}
	if err != nil {
		return nil, err
	}
	if werr := s.c.limiter().Wait(ctx, len(p)); werr != nil {
		return nil, fmt.Errorf("node: get piece %v: %w", key, werr)
	}
	return p, nil
}

// GetFallback implements redundant.FallbackGetter: the piece from the
// slot's fallbacks alone, for a read whose FindReplica found the slot's
// node unreachable (GetPiece would wait for that node a second time, a
// client timeout when it is cut off rather than gone). A background read
// pays the limiter, as getBackground does.
func (s *slot) GetFallback(ctx context.Context, key blocks.Addr) ([]byte, error) {
	bg := throttle.IsBackground(ctx)
	if !bg {
		s.c.limiter().Note()
	}
	p, err := s.fromFallbacks(ctx, key)
	if err != nil {
		return nil, err
	}
	if bg {
		if werr := s.c.limiter().Wait(ctx, len(p)); werr != nil {
			return nil, fmt.Errorf("node: get piece %v: %w", key, werr)
		}
	}
	return p, nil
}

var _ redundant.FallbackGetter = (*slot)(nil)

// shouldMove reports whether p, a piece found on node from (a fallback
// of this slot, or another holder of the block) for this slot's node,
// which lacks its rank's key, is to be copied there. Not when that node
// keeps another piece of the block (under another index: holders count
// as a set, see FindReplica), and not a shard from another holder of the
// block: there the shard counts already, and a second copy of it would
// leave the index the slot's node is missing still missing
// (redundant.Store.Plan gives it one).
func (s *slot) shouldMove(ctx context.Context, p []byte, from string) bool {
	l, err := redundant.PieceLayout(p)
	if err != nil {
		return false
	}
	if l.Replicas == 0 && slices.Contains(s.cands[:s.nprim], from) {
		return false
	}
	ok, err := s.c.holdsPiece(ctx, s.primary, l, l.Index, nil, true)
	return err == nil && !ok
}

// FindReplica implements redundant.ReplicaFinder: the piece (a replica,
// or a shard) of the block at addr that the slot's node keeps, under
// index i if it keeps that one, else under another, and its index. When
// a node ranked before it leaves, a holder moves up a rank and keeps the
// piece it had under its old rank's key; that piece counts for the block (see
// redundant.ReplicaFinder), so neither a read nor anti-entropy writes a
// second one under the new rank's key. Only the slot's own node is asked
// (its silo here; another node in one GetAnyPiece round trip, the rank's
// key first): fallbacks hold copies by key, which GetPiece finds. A
// client read notes client activity, a background one pays the limiter,
// as GetPiece does.
func (s *slot) FindReplica(ctx context.Context, addr blocks.Addr, n, i int) ([]byte, int, error) {
	if s.primary != s.c.self.ID && !s.c.usable(s.v, s.primary) {
		return nil, 0, fmt.Errorf("node %s is down: %w", s.primary, blocks.ErrUnavailable)
	}
	bg := throttle.IsBackground(ctx)
	if !bg {
		s.c.limiter().Note()
	}
	keys := keysOf(redundant.Layout{Addr: addr, Index: i, Replicas: n}, i)
	var p []byte
	var err error
	if s.primary == s.c.self.ID {
		for _, k := range keys { // the rank's key first: keys is never empty
			if p, err = s.c.n.silo.GetPiece(ctx, k); !errors.Is(err, blocks.ErrNotFound) {
				break
			}
		}
	} else {
		// At most policies.MaxPieces keys (or MaxReplicas), within peer.MaxAnyPiece.
		p, err = s.c.client(s.primary).GetAnyPiece(ctx, keys)
	}
	if err != nil {
		if !errors.Is(err, blocks.ErrNotFound) {
			s.c.failed(s.primary, err)
		}
		return nil, 0, err
	}
	if bg {
		if werr := s.c.limiter().Wait(ctx, len(p)); werr != nil {
			return nil, 0, fmt.Errorf("node: get piece %v: %w", addr, werr)
		}
	}
	// The piece's header names its index (the redundancy layer checks it
	// against the index returned, and the block against addr).
	j := i
	if l, perr := redundant.PieceLayout(p); perr == nil && l.Index >= 0 && l.Index < n {
		j = l.Index
	}
	return p, j, nil
}

var _ redundant.ReplicaFinder = (*slot)(nil)

// fromFallbacks reads the piece from the first usable fallback that has it.
func (s *slot) fromFallbacks(ctx context.Context, key blocks.Addr) ([]byte, error) {
	p, _, err := s.fromFallbacksAt(ctx, key)
	return p, err
}

// fromFallbacksAt is fromFallbacks that also names the node the piece
// came from.
func (s *slot) fromFallbacksAt(ctx context.Context, key blocks.Addr) ([]byte, string, error) {
	err := fmt.Errorf("node: no fallback holds piece %v: %w", key, blocks.ErrNotFound)
	for _, f := range s.fallbacks() {
		if !s.c.usable(s.v, f) && f != s.c.self.ID {
			continue
		}
		fp, ferr := s.c.holder(f).GetPiece(ctx, key)
		if ferr == nil {
			return fp, f, nil
		}
		err = ferr
	}
	return nil, "", err
}

// localSlot is a slot whose holder is this node. Its reads come from
// this node's silo alone, never from a fallback on another node, so it
// keeps the promises of blocks.Local (see IsLocal): the redundancy layer
// reads a replica from it first, without rehashing, and batches nearby
// pieces (GetPieces). A piece the silo lacks is read by the redundancy
// layer from the block's other pieces and repaired here. Background reads
// (anti-entropy) are the slot's, fallbacks included: they verify in full
// (redundant.Store.Repair hashes every piece), never on trust. Writes,
// Has, Delete and Sync are the slot's (quorum check, pacing, fallbacks).
type localSlot struct{ *slot }

var (
	_ blocks.Local           = (*localSlot)(nil)
	_ blocks.PieceGetterInto = (*localSlot)(nil)
	_ blocks.PiecesGetter    = (*localSlot)(nil)
)

// IsLocal implements blocks.Local. Its writes go to the silo, or, should
// the silo refuse them as unavailable, to peer clients, which send the
// bytes before they return and keep nothing: the slices are not retained.
func (s *localSlot) IsLocal() bool { return true }

// PieceSource names the holder every read of s goes to (the silo), so that
// the redundancy layer can batch the pieces of blocks whose slots differ.
func (s *localSlot) PieceSource() blocks.Holder { return s.c.n.silo }

// GetPiece reads the piece from the silo.
func (s *localSlot) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	if throttle.IsBackground(ctx) {
		// Anti-entropy: the slot's way (moves a piece a fallback holds
		// back here, and pays the limiter).
		return s.getBackground(ctx, key)
	}
	s.c.limiter().Note()
	return s.c.n.silo.GetPiece(ctx, key)
}

// GetPieceInto implements blocks.PieceGetterInto: the silo's.
func (s *localSlot) GetPieceInto(ctx context.Context, key blocks.Addr, dst []byte) ([]byte, error) {
	if throttle.IsBackground(ctx) {
		return s.getBackground(ctx, key)
	}
	s.c.limiter().Note()
	return s.c.n.silo.GetPieceInto(ctx, key, dst)
}

// GetPieces implements blocks.PiecesGetter: the silo's.
func (s *localSlot) GetPieces(ctx context.Context, keys []blocks.Addr, buf *[]byte) ([][]byte, []error) {
	if throttle.IsBackground(ctx) {
		out := make([][]byte, len(keys))
		errs := make([]error, len(keys))
		for i, k := range keys {
			out[i], errs[i] = s.getBackground(ctx, k)
		}
		return out, errs
	}
	s.c.limiter().Note()
	return s.c.n.silo.GetPieces(ctx, keys, buf)
}

func (s *slot) HasPiece(ctx context.Context, key blocks.Addr) (bool, error) {
	ok, err := s.c.holder(s.primary).HasPiece(ctx, key)
	if ok {
		return true, nil
	}
	for _, f := range s.fallbacks() {
		if s.c.usable(s.v, f) || f == s.c.self.ID {
			if fok, ferr := s.c.holder(f).HasPiece(ctx, key); ferr == nil && fok {
				return true, nil
			}
		}
	}
	return false, err
}

// DeletePiece deletes the piece on the slot's node and on the block's
// fallback nodes; unreachable nodes keep their copy as garbage for their
// own collection. It leaves the block's other holders alone: the copy one
// of them keeps under this slot's key is its own replica when its rank
// moved (see FindReplica), and a repair that replaces a bad piece here
// (redundant's rewrite) must not delete a good copy there. (Their
// collection takes any piece of a deleted block.)
func (s *slot) DeletePiece(ctx context.Context, key blocks.Addr) error {
	for _, id := range append([]string{s.primary}, s.cands[s.nprim:]...) {
		if err := s.c.holder(id).DeletePiece(ctx, key); err != nil && !errors.Is(err, blocks.ErrUnavailable) {
			return err
		}
	}
	return nil
}

func (s *slot) Sync(ctx context.Context) error {
	err := s.c.syncNode(ctx, s.primary)
	if err != nil {
		s.c.failed(s.primary, err)
		if errors.Is(err, blocks.ErrUnavailable) && s.primary != s.c.self.ID {
			// Its pieces went to fallbacks (which All() syncs); a node
			// that is down has nothing of ours to sync.
			return nil
		}
	}
	return err
}

func (c *cluster) addHint(h hint, size int) {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if _, ok := c.hints[h]; !ok {
		c.hints[h] = struct{}{}
		c.handedOff.Add(int64(size))
	}
}

// giveBack moves handed-off pieces to their holders once they are back:
// a node that was away gets exactly what changed meanwhile, never a full
// copy. Pieces go back in batches: each holder is synced once per batch
// before the fallback copies are deleted. Each piece pays the repair
// throttle, so client I/O keeps going; a call copies for about a second
// (giveBackBudget), so the loop that calls it keeps its pace.
func (c *cluster) giveBack(ctx context.Context) {
	deadline := time.Now().Add(giveBackBudget)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		if c.giveBackBatch(ctx, deadline) == 0 {
			return
		}
	}
}

// giveBackBudget is how long one giveBack call keeps copying.
const giveBackBudget = time.Second

// giveBackBatch gives back up to a batch of pieces, copying until
// deadline, and returns how many it gave back.
func (c *cluster) giveBackBatch(ctx context.Context, deadline time.Time) int {
	const batch = 2048
	c.hmu.Lock()
	var todo []hint
	for h := range c.hints {
		if len(todo) == batch {
			break
		}
		todo = append(todo, h)
	}
	c.hmu.Unlock()
	v := c.view()
	type done struct {
		hint
		size int
	}
	var moved []done
	synced := map[string]error{}
	// Holders whose disk is full: their other pieces are not read from
	// the fallbacks only to be refused; the next call tries again.
	full := map[string]bool{}
	bctx := throttle.Background(ctx)
	wctx, cancel := context.WithDeadline(bctx, deadline)
	defer cancel()
	for _, h := range todo {
		if _, ok := v.nodes[h.holder]; !ok {
			// The holder left for good: anti-entropy rebuilds its pieces
			// where placement now wants them.
			c.dropHint(h)
			continue
		}
		if !c.usable(v, h.holder) || full[h.holder] {
			continue
		}
		data, err := c.holder(h.fallback).GetPiece(bctx, h.key)
		if err == nil {
			if c.limiter().Wait(wctx, len(data)) != nil {
				break // out of time (or stopping): the rest waits for the next call
			}
			err = c.putPiece(bctx, h.holder, h.key, data)
		}
		switch {
		case err == nil:
			moved = append(moved, done{h, len(data)})
		case errors.Is(err, blocks.ErrNotFound):
			c.dropHint(h) // deleted meanwhile (garbage collected)
		case errors.Is(err, blocks.ErrNoSpace):
			full[h.holder] = true
		default:
			c.failed(h.holder, err)
		}
	}
	n := 0
	for _, h := range moved {
		err, ok := synced[h.holder]
		if !ok {
			err = c.syncNode(bctx, h.holder)
			synced[h.holder] = err
		}
		if err != nil {
			continue
		}
		if err := c.holder(h.fallback).DeletePiece(bctx, h.key); err != nil && !errors.Is(err, blocks.ErrUnavailable) {
			continue
		}
		c.dropHint(h.hint)
		c.handedBack.Add(int64(h.size))
		c.givenBack.Add(1)
		n++
	}
	return n
}

func (c *cluster) dropHint(h hint) {
	c.hmu.Lock()
	delete(c.hints, h)
	c.hmu.Unlock()
}

// pendingHints counts pieces waiting to go back to their holders.
func (c *cluster) pendingHints() int {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	return len(c.hints)
}
