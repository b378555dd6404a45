package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"cairn/blocks"
	"cairn/consensus"
	"cairn/internal/peer"
	"cairn/policies"
)

// Mutable blocks in a cluster: forwarding.
//
// A raft shard lives on up to shardReplicas nodes (placement picks them,
// Reconcile moves the replicas there), so on a larger cluster, or on a
// storage-less node, most shards are hosted elsewhere. The volume layer's
// MutableStore on a cluster node is a forwarder: a block whose shard this
// node hosts is read and changed here; any other goes, over the peer
// transport (peer.Client.Load, CompareAndSet), to a node that hosts it,
// which runs it with its own consensus host: Load is its linearizable
// read (ReadIndex), CompareAndSet one raft proposal, so the semantics are
// those of a local call. The serving node never forwards further: if it
// no longer hosts the shard it answers not-hosted and the caller tries the
// next candidate.
//
// A local replica is used first when it knows its shard's leader; one that
// does not (started moments ago and not yet added by the leader, or cut
// off) is tried last, after the other candidates.
//
// Candidates are the shard's placement (the nodes wantShard names, which
// Reconcile makes its members), in placement order, then a few nodes
// ranked after them (where a replica that placement moved on may still
// run); nodes gossip sees down, or that failed a call a moment ago, go
// last. A Load is tried on each in turn while they answer not-hosted or
// unavailable. A CompareAndSet is tried on the next only when the outcome
// is known to be "nothing changed" (not hosted there, or the request never
// left): a proposal that may have committed is never made twice, so an
// unknown outcome comes back as blocks.ErrUnavailable, as from a local
// host. Conflicts come back as blocks.ErrConflict with the block's
// current version.

// shardHost is what the forwarder needs of this node's consensus host.
type shardHost interface {
	blocks.MutableStore
	HostsShard(shard uint64) bool
	LeaderKnown(shard uint64) bool
	NumShards() int
}

// mutableRoute is one node a forwarded call may go to.
type mutableRoute struct {
	node  string
	store blocks.MutableStore
}

// forwarder is a cluster node's blocks.MutableStore (see above).
type forwarder struct {
	local shardHost
	// routes returns the other nodes to try for shard, in order.
	routes func(shard uint64) []mutableRoute
	// failed notes a node whose call failed as unavailable (may be nil).
	failed func(node string, err error)
	log    *slog.Logger

	forwarded atomic.Int64 // calls sent to another node
}

var _ blocks.MutableStore = (*forwarder)(nil)

// Load implements blocks.MutableStore.
func (f *forwarder) Load(ctx context.Context, id blocks.ID) (blocks.Version, []byte, error) {
	shard := consensus.ShardOf(id, f.local.NumShards())
	var last error
	hosted, local := f.local.HostsShard(shard), false
	if hosted && f.local.LeaderKnown(shard) {
		local = true
		v, p, err := f.local.Load(ctx, id)
		if err == nil || !errors.Is(err, blocks.ErrUnavailable) || ctx.Err() != nil {
			return v, p, err
		}
		last = err // not hosted any more, or no quorum from here: reads may go elsewhere
	}
	for _, r := range f.routes(shard) {
		if ctx.Err() != nil {
			break
		}
		f.forwarded.Add(1)
		v, p, err := r.store.Load(ctx, id)
		if err == nil {
			return v, p, nil
		}
		if !errors.Is(err, blocks.ErrUnavailable) {
			return 0, nil, err
		}
		f.note(r.node, err)
		last = err
	}
	if hosted && !local && ctx.Err() == nil {
		// A local replica without a leader yet (just started, not yet
		// added) is the last resort: it waits for one.
		return f.local.Load(ctx, id)
	}
	return 0, nil, f.exhausted("load", id, shard, last, ctx)
}

// CompareAndSet implements blocks.MutableStore.
func (f *forwarder) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, payload []byte) (blocks.Version, error) {
	if len(payload) > consensus.MaxPayload {
		return 0, fmt.Errorf("node: compare-and-set %v: payload of %d bytes, limit %d: %w", id, len(payload), consensus.MaxPayload, blocks.ErrTooLarge)
	}
	shard := consensus.ShardOf(id, f.local.NumShards())
	var last error
	hosted, local := f.local.HostsShard(shard), false
	if hosted && f.local.LeaderKnown(shard) {
		local = true
		v, err := f.local.CompareAndSet(ctx, id, want, payload)
		if err == nil || !errors.Is(err, consensus.ErrNotHosted) {
			return v, err
		}
		last = err
	}
	for _, r := range f.routes(shard) {
		if ctx.Err() != nil {
			break
		}
		f.forwarded.Add(1)
		v, err := r.store.CompareAndSet(ctx, id, want, payload)
		if err == nil || !(errors.Is(err, peer.ErrNotHosted) || errors.Is(err, peer.ErrNotSent)) {
			return v, err // done, a conflict, or an outcome nobody knows
		}
		f.note(r.node, err)
		last = err
	}
	if hosted && !local && ctx.Err() == nil {
		// Nothing changed anywhere: the local replica that knows no
		// leader yet is the last resort.
		return f.local.CompareAndSet(ctx, id, want, payload)
	}
	return 0, f.exhausted("compare-and-set", id, shard, last, ctx)
}

func (f *forwarder) note(node string, err error) {
	if f.failed != nil && !errors.Is(err, peer.ErrNotHosted) {
		f.failed(node, err)
	}
}

// exhausted is the error when no candidate served a call (nothing changed).
func (f *forwarder) exhausted(op string, id blocks.ID, shard uint64, last error, ctx context.Context) error {
	if last == nil {
		last = errors.New("no node is known to host it")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("node: %s %v (shard %d): %w (%w; last: %v)", op, id, shard, blocks.ErrUnavailable, err, last)
	}
	f.log.Debug("no node served a mutable block call", "op", op, "shard", shard, "err", last)
	return fmt.Errorf("node: %s %v (shard %d): no node that hosts the shard answered: %w (last: %v)", op, id, shard, blocks.ErrUnavailable, last)
}

// servedMutable is the peer server's ServerOptions.Mutable: this node's
// consensus host, once it is open, answering only for the shards it hosts
// (never forwarding). Errors for other shards wrap peer.ErrNotHosted.
type servedMutable struct {
	h atomic.Pointer[consensus.Host]
}

func (s *servedMutable) host(id blocks.ID) (*consensus.Host, error) {
	h := s.h.Load()
	if h == nil {
		return nil, fmt.Errorf("node: consensus is not open yet: %w (%w)", peer.ErrNotHosted, blocks.ErrUnavailable)
	}
	if shard := consensus.ShardOf(id, h.NumShards()); !h.HostsShard(shard) {
		return nil, fmt.Errorf("node: shard %d is not hosted here: %w (%w)", shard, peer.ErrNotHosted, blocks.ErrUnavailable)
	}
	return h, nil
}

// served marks the host's not-hosted errors (a replica stopped meanwhile)
// for the transport.
func served(err error) error {
	if errors.Is(err, consensus.ErrNotHosted) {
		return fmt.Errorf("%w (%w)", err, peer.ErrNotHosted)
	}
	return err
}

func (s *servedMutable) Load(ctx context.Context, id blocks.ID) (blocks.Version, []byte, error) {
	h, err := s.host(id)
	if err != nil {
		return 0, nil, err
	}
	v, p, err := h.Load(ctx, id)
	return v, p, served(err)
}

func (s *servedMutable) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, payload []byte) (blocks.Version, error) {
	h, err := s.host(id)
	if err != nil {
		return 0, err
	}
	v, err := h.CompareAndSet(ctx, id, want, payload)
	return v, served(err)
}

// forwardClients are the peer clients forwarded calls use, by data
// address: their own connections, with a timeout past consensus's longest
// call, so that a slow proposal is not cut short into an unknown outcome.
type forwardClients struct {
	secret []byte
	self   string
	log    *slog.Logger

	mu      sync.Mutex
	clients map[string]*peer.Client
	closed  bool
}

func (fc *forwardClients) get(addr string) blocks.MutableStore {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if cl := fc.clients[addr]; cl != nil {
		return cl
	}
	cl := peer.NewClient(addr, peer.ClientOptions{Secret: fc.secret, NodeID: fc.self, Timeout: consensus.MaxCallTimeout + forwardSlack, Logger: fc.log})
	if fc.closed {
		cl.Close() // calls fail with blocks.ErrClosed
		return cl
	}
	fc.clients[addr] = cl
	return cl
}

func (fc *forwardClients) close() {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	fc.closed = true
	for _, cl := range fc.clients {
		cl.Close()
	}
}

// forwardSlack is the time a forwarded call is given beyond the serving
// host's own deadline (MaxCallTimeout) for the transport.
const forwardSlack = 5 * time.Second

// forwardFallbacks is how many nodes ranked after a shard's placement a
// forwarded call also tries.
const forwardFallbacks = 3

// shardRoutes returns the nodes to try for shard: its placement (the
// replicas wantShard asks for), then forwardFallbacks nodes ranked after
// it; this node excluded; nodes not usable now (down, or a call just
// failed) after the others.
func (c *cluster) shardRoutes(fc *forwardClients) func(uint64) []mutableRoute {
	return func(shard uint64) []mutableRoute {
		v := c.view()
		all := len(v.placer.StorageNodes())
		n := min(shardReplicas, all)
		if n == 0 {
			return nil
		}
		_, primary, fallbacks, err := c.rank(shardKey(shard), n, forwardFallbacks, policies.SpreadNode)
		if err != nil {
			return nil
		}
		var good, later []mutableRoute
		for _, id := range append(primary, fallbacks...) {
			if id == c.self.ID {
				continue
			}
			nd, ok := v.nodes[id]
			if !ok {
				continue
			}
			r := mutableRoute{node: id, store: fc.get(nd.DataAddr)}
			if c.usable(v, id) {
				good = append(good, r)
			} else {
				later = append(later, r)
			}
		}
		return append(good, later...)
	}
}
