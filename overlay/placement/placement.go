// Package placement decides which nodes hold the pieces of a block: weighted
// rendezvous (highest-random-weight) hashing over a membership view, with the
// pieces spread over nodes or zones as a policy says. It is pure logic: no
// I/O, no clocks, no randomness. Any node that has the same view computes the
// same holders for the same key.
//
// # Scoring
//
// Every storage node gets a 128-bit seed, the first 16 bytes of
// SHA-256("cairn/placement\x00" + node ID), computed once per view. A key
// (a [blocks.Addr]) is folded to two 64-bit words once per call. The node's
// hash for the key is
//
//	h = fmix64(hi ^ lo)  where  hi, lo = k0^seed0 × k1^seed1  (128-bit product)
//
// and its score is the weighted rendezvous score -weight / ln(u), with
// u = (h>>11 + 0.5) / 2^53 in (0, 1). A node of weight 2 is thus the best
// node for twice as many keys as a node of weight 1, and the n best nodes
// for a key change only where a joining or leaving node enters or leaves
// them. Nodes of equal weight are compared by h alone (the score is monotone
// in h), so a view where all weights are equal uses no floating point at
// all; ties in h are broken by node ID. The scan over the view computes one
// hash per node and keeps, per weight class (and per zone, for spread
// "zone"), only the n best by h; logarithms are taken for those few
// candidates only.
//
// # Positions
//
// Holders returns the holders in rank order. No function of the holder set
// alone can keep every surviving holder at its position when one holder is
// replaced (replacing a by d in {a,b,c} and then b by a would have to give a
// two positions), so a layer that stores piece i on holder i must remember
// where pieces are, or look for a piece on every holder, rather than assume
// that piece i always sits at position i of the current ranking. The set,
// however, is stable: see docs/placement.md for the measured movement.
package placement

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync"

	"cairn/blocks"
	"cairn/policies"
)

// ErrUnsatisfiable marks every "this view cannot meet that placement" error:
// too few storage nodes for the pieces and spread asked for, or zones too
// small to spread the pieces evenly. Test it with errors.Is.
var ErrUnsatisfiable = errors.New("placement: cannot place")

// ErrInvalidView marks a membership view that cannot be used: an empty or
// duplicated node ID, or a weight that is negative, NaN or infinite.
var ErrInvalidView = errors.New("placement: invalid membership view")

// Node is one member of a membership view, as placement sees it.
type Node struct {
	ID      string  // unique, stable identity; the hash is keyed by it
	Zone    string  // failure domain (datacenter, rack); "" is a zone too
	Weight  float64 // capacity share; 0 means 1; must be finite and >= 0
	Storage bool    // false: a frontend-only node, never a holder
}

// Holders returns the n holders of key among nodes, spread as spread says.
// It builds a [Placer] for this one call; build one Placer per membership
// view instead when placing many keys. The result is a new slice owned by
// the caller. Errors wrap [ErrInvalidView] or [ErrUnsatisfiable].
func Holders(key blocks.Addr, n int, spread policies.Spread, nodes []Node) ([]Node, error) {
	p, err := NewPlacer(nodes)
	if err != nil {
		return nil, err
	}
	return p.Holders(key, n, spread, nil)
}

// member is a storage node as the hot loop sees it.
type member struct {
	s0, s1 uint64 // hash seed
	node   int32  // bucket for spread none and node: the weight class
	zone   int32  // bucket for spread zone: zone*classes + class
}

// Placer places keys over one membership view. Build it once per view with
// [NewPlacer]; it is immutable afterwards and safe for concurrent use.
type Placer struct {
	nodes   []Node   // storage nodes, sorted by ID
	members []member // parallel to nodes
	weights []float64
	classes int      // distinct weights
	zones   []string // distinct zones of storage nodes, sorted
	zoneOf  []int32  // parallel to nodes
	perZone []int    // storage nodes per zone
	all     int      // members of the view, storage or not
	pool    sync.Pool
}

// NewPlacer builds a Placer over the view nodes. Nodes with Storage false
// are remembered only in the count; they never hold pieces. The order of
// nodes does not matter, and NewPlacer keeps no reference to the slice.
// Errors wrap [ErrInvalidView].
func NewPlacer(nodes []Node) (*Placer, error) {
	p := &Placer{all: len(nodes)}
	seen := make(map[string]bool, len(nodes))
	for _, nd := range nodes {
		if nd.ID == "" {
			return nil, fmt.Errorf("%w: a node has an empty ID", ErrInvalidView)
		}
		if seen[nd.ID] {
			return nil, fmt.Errorf("%w: node ID %q appears twice", ErrInvalidView, nd.ID)
		}
		seen[nd.ID] = true
		if math.IsNaN(nd.Weight) || math.IsInf(nd.Weight, 0) || nd.Weight < 0 {
			return nil, fmt.Errorf("%w: node %q has weight %v; want a finite number >= 0 (0 means 1)", ErrInvalidView, nd.ID, nd.Weight)
		}
		if !nd.Storage {
			continue
		}
		if nd.Weight == 0 {
			nd.Weight = 1
		}
		p.nodes = append(p.nodes, nd)
	}
	slices.SortFunc(p.nodes, func(a, b Node) int { return cmp.Compare(a.ID, b.ID) })

	zoneIdx := map[string]int32{}
	for _, nd := range p.nodes {
		if _, ok := zoneIdx[nd.Zone]; !ok {
			zoneIdx[nd.Zone] = 0
			p.zones = append(p.zones, nd.Zone)
		}
		if !slices.Contains(p.weights, nd.Weight) {
			p.weights = append(p.weights, nd.Weight)
		}
	}
	slices.Sort(p.zones)
	slices.Sort(p.weights)
	for i, z := range p.zones {
		zoneIdx[z] = int32(i)
	}
	p.classes = len(p.weights)
	p.perZone = make([]int, len(p.zones))
	p.members = make([]member, len(p.nodes))
	p.zoneOf = make([]int32, len(p.nodes))
	for i, nd := range p.nodes {
		sum := sha256.Sum256([]byte("cairn/placement\x00" + nd.ID))
		class, _ := slices.BinarySearch(p.weights, nd.Weight)
		z := zoneIdx[nd.Zone]
		p.zoneOf[i] = z
		p.perZone[z]++
		p.members[i] = member{
			s0:   binary.LittleEndian.Uint64(sum[0:8]),
			s1:   binary.LittleEndian.Uint64(sum[8:16]),
			node: int32(class),
			zone: z*int32(p.classes) + int32(class),
		}
	}
	return p, nil
}

// StorageNodes returns the storage nodes of the view, sorted by ID, weights
// defaulted. The caller must not modify the slice.
func (p *Placer) StorageNodes() []Node { return p.nodes }

// Zones returns the distinct zones of the storage nodes, sorted. The caller
// must not modify the slice.
func (p *Placer) Zones() []string { return p.zones }

// Facts describes the view for [policies.Policy.Check]: its storage nodes
// and their distinct zones.
func (p *Placer) Facts() policies.Facts {
	return policies.Facts{StorageNodes: len(p.nodes), Zones: len(p.zones)}
}

// Check reports whether n pieces with this spread can be placed on the view,
// as volume creation must before it accepts a policy (together with
// [policies.Policy.Check] on [Placer.Facts], which applies the policy's loss
// tolerance). Beyond what [Placer.Holders] refuses, it refuses spread "zone"
// when the zones are too uneven for an even spread: when some zone must hold
// more than ceil(n/zones) pieces of a block because the others have too few
// nodes. Errors wrap [ErrUnsatisfiable] and say what to change.
func (p *Placer) Check(n int, spread policies.Spread) error {
	if err := p.check(n, spread); err != nil {
		return err
	}
	if spread != policies.SpreadZone {
		return nil
	}
	z := len(p.zones)
	if share := p.MaxZoneShare(n); share > (n+z-1)/z {
		return fmt.Errorf("%w: %d pieces over %d zones should put at most %d in any zone, but the zones have too few storage nodes (%s), so one zone must hold %d: add storage nodes to the small zones, or write spread = \"node\"",
			ErrUnsatisfiable, n, z, (n+z-1)/z, p.zoneSizes(), share)
	}
	return nil
}

// MaxZoneShare returns the most pieces out of n that spread "zone" puts in
// one zone on this view: the least L with sum over zones of min(size, L) >= n
// (the spread fills zones round-robin). It returns n when the view has fewer
// than n storage nodes.
func (p *Placer) MaxZoneShare(n int) int {
	if n > len(p.nodes) {
		return n
	}
	for l := 1; ; l++ {
		sum := 0
		for _, s := range p.perZone {
			sum += min(s, l)
		}
		if sum >= n {
			return l
		}
	}
}

func (p *Placer) zoneSizes() string {
	s := ""
	for i, z := range p.zones {
		if i > 0 {
			s += ", "
		}
		if i == 8 {
			return s + "..."
		}
		s += fmt.Sprintf("%q: %d", z, p.perZone[i])
	}
	return s
}

// check applies the rules Holders refuses on.
func (p *Placer) check(n int, spread policies.Spread) error {
	switch spread {
	case policies.SpreadNone, policies.SpreadNode, policies.SpreadZone:
	default:
		return fmt.Errorf("%w: unknown spread %q; want \"none\", \"node\" or \"zone\"", ErrUnsatisfiable, spread)
	}
	if n < 1 {
		return fmt.Errorf("%w: %d pieces asked for; want at least 1", ErrUnsatisfiable, n)
	}
	if len(p.nodes) == 0 {
		return fmt.Errorf("%w: the view has no storage nodes (%d members, none storing); start a storage node", ErrUnsatisfiable, p.all)
	}
	if spread != policies.SpreadNone && n > len(p.nodes) {
		return fmt.Errorf("%w: %d pieces with spread %q need %d distinct storage nodes; the view has %d: use fewer pieces, add storage nodes, or use spread \"none\" to let pieces share nodes",
			ErrUnsatisfiable, n, spread, n, len(p.nodes))
	}
	return nil
}

// cand is a candidate holder: its hash and its index in p.nodes.
type cand struct {
	h     uint64
	score float64 // weighted score, set after the scan when classes > 1
	idx   int32
}

// scratch is the per-call working memory, pooled.
type scratch struct {
	cands []cand  // buckets*n
	cnt   []int32 // per bucket
	merge []cand
	zrank []zoneList
}

type zoneList struct {
	z     int32
	cands []cand // best first
}

func (p *Placer) getScratch(buckets, n int) *scratch {
	s, _ := p.pool.Get().(*scratch)
	if s == nil {
		s = &scratch{}
	}
	if need := buckets * n; cap(s.cands) < need {
		s.cands = make([]cand, need)
	}
	s.cands = s.cands[:buckets*n]
	if cap(s.cnt) < buckets {
		s.cnt = make([]int32, buckets)
	}
	s.cnt = s.cnt[:buckets]
	clear(s.cnt)
	s.merge = s.merge[:0]
	s.zrank = s.zrank[:0]
	return s
}

// keyWords folds a 32-byte key into two well-mixed 64-bit words.
func keyWords(key blocks.Addr) (uint64, uint64) {
	a := binary.LittleEndian.Uint64(key[0:8])
	b := binary.LittleEndian.Uint64(key[8:16])
	c := binary.LittleEndian.Uint64(key[16:24])
	d := binary.LittleEndian.Uint64(key[24:32])
	k0 := fmix64(a ^ fmix64(c^0x9e3779b97f4a7c15))
	k1 := fmix64(b ^ fmix64(d^0xc2b2ae3d27d4eb4f))
	return k0, k1
}

// fmix64 is MurmurHash3's 64-bit finalizer.
func fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// hash is the per-(key, node) hash.
func hash(k0, k1 uint64, m *member) uint64 {
	hi, lo := bits.Mul64(k0^m.s0, k1^m.s1)
	return fmix64(hi ^ lo)
}

// weighted returns the weighted rendezvous score -w/ln(u) of hash h.
func weighted(h uint64, w float64) float64 {
	u := (float64(h>>11) + 0.5) * (1.0 / (1 << 53))
	return -w / math.Log(u)
}

// better reports whether a ranks before b among nodes of one weight class.
func (p *Placer) better(a, b cand) bool {
	if a.h != b.h {
		return a.h > b.h
	}
	return a.idx < b.idx // IDs are sorted, so this breaks ties by ID
}

// rankBefore reports whether a ranks before b among all nodes; a.score and
// b.score must be set when the view has more than one weight class.
func (p *Placer) rankBefore(a, b cand) bool {
	if p.classes > 1 && a.score != b.score {
		return a.score > b.score
	}
	return p.better(a, b)
}

// Holders appends to dst the n holders of key and returns the extended
// slice, best ranked first. The spread decides which nodes qualify:
//
//   - "node": the n best storage nodes, all distinct;
//   - "zone": n distinct storage nodes spread over zones as evenly as the
//     zones' sizes allow: zones are ordered by the score of their best node,
//     and take one holder each, in that order, round after round (a zone
//     with no nodes left is skipped), so with Z zones no zone holds more
//     than ceil(n/Z) pieces unless the others have run out of nodes (see
//     [Placer.Check]); with more zones than pieces, the pieces sit in the n
//     zones whose best nodes score highest;
//   - "none": as "node" when the view has n storage nodes or more;
//     otherwise the whole ranking, repeated until n holders are listed.
//
// The result depends only on the key, n, spread and the view (not on the
// order the nodes were given in). Holders does not retain dst; the Node
// values it appends are copies. Errors wrap [ErrUnsatisfiable]: an unknown
// spread, n < 1, no storage nodes, or (spreads "node" and "zone") fewer
// storage nodes than n; dst is then returned unchanged.
func (p *Placer) Holders(key blocks.Addr, n int, spread policies.Spread, dst []Node) ([]Node, error) {
	if err := p.check(n, spread); err != nil {
		return dst, err
	}
	zone := spread == policies.SpreadZone
	buckets := p.classes
	if zone {
		buckets = p.classes * len(p.zones)
	}
	keep := min(n, len(p.nodes))
	s := p.getScratch(buckets, keep)
	defer p.pool.Put(s)
	p.scan(key, keep, zone, s)

	if p.classes > 1 {
		for b := range buckets {
			w := p.weights[b%p.classes]
			for i := b * keep; i < b*keep+int(s.cnt[b]); i++ {
				s.cands[i].score = weighted(s.cands[i].h, w)
			}
		}
	}
	before := func(a, b cand) int {
		if a.idx == b.idx {
			return 0
		}
		if p.rankBefore(a, b) {
			return -1
		}
		return 1
	}
	if !zone {
		for b := range buckets {
			s.merge = append(s.merge, s.cands[b*keep:b*keep+int(s.cnt[b])]...)
		}
		slices.SortFunc(s.merge, before)
		for i := range n {
			dst = append(dst, p.nodes[s.merge[i%len(s.merge)].idx])
		}
		return dst, nil
	}

	// Spread zone: per zone, merge its classes' candidates, best first.
	for z := range p.zones {
		start := len(s.merge)
		for c := range p.classes {
			b := z*p.classes + c
			s.merge = append(s.merge, s.cands[b*keep:b*keep+int(s.cnt[b])]...)
		}
		zc := s.merge[start:]
		slices.SortFunc(zc, before)
		s.zrank = append(s.zrank, zoneList{z: int32(z), cands: zc})
	}
	slices.SortFunc(s.zrank, func(a, b zoneList) int { return before(a.cands[0], b.cands[0]) })
	for round, got := 0, 0; got < n; round++ {
		for _, zl := range s.zrank {
			if round < len(zl.cands) {
				dst = append(dst, p.nodes[zl.cands[round].idx])
				if got++; got == n {
					break
				}
			}
		}
	}
	return dst, nil
}

// scan hashes key against every storage node and keeps, per bucket, the
// keep best candidates by hash, in s.cands[b*keep:][:s.cnt[b]], best first.
func (p *Placer) scan(key blocks.Addr, keep int, zone bool, s *scratch) {
	k0, k1 := keyWords(key)
	cands, cnt := s.cands, s.cnt
	for i := range p.members {
		m := &p.members[i]
		h := hash(k0, k1, m)
		b := m.node
		if zone {
			b = m.zone
		}
		base := int(b) * keep
		c := int(cnt[b])
		c0 := cand{h: h, idx: int32(i)}
		if c == keep {
			// Full: most nodes stop here. Nodes are scanned in ID order,
			// so on equal h the earlier one (smaller ID) stays ahead.
			if h <= cands[base+keep-1].h {
				continue
			}
			c--
		} else {
			cnt[b]++
		}
		// Insert c0 into the sorted run cands[base:base+c].
		j := base + c
		for j > base && p.better(c0, cands[j-1]) {
			cands[j] = cands[j-1]
			j--
		}
		cands[j] = c0
	}
}
