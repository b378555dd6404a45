package node

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"net"
	"strconv"
	"time"

	"cairn/blocks"
	"cairn/internal/peer"
	"cairn/overlay"
	"cairn/policies"
)

// ClusterConfig makes a node a member of a cluster (`cairn node`). Without
// it a node is a cluster of one (`cairn serve`).
type ClusterConfig struct {
	// Listen is the gossip address, "ip:port". Raft listens on port+1 and
	// the node-to-node data transport on port+2, on the same IP.
	Listen string
	// Seeds are gossip addresses of members to join. Empty on the first
	// node of a new cluster.
	Seeds []string
	// Zone is this node's failure domain (rack, datacenter).
	Zone string
	// Secret is the cluster secret in its printable form ("cairn1-...").
	// The first node creates it (and Secret() returns it); every other node
	// must be given it. It is stored in DATA/cluster-secret.
	Secret string
	// NBDAddr is advertised to the other nodes (for `cairn status`).
	NBDAddr string
	// RemoveAfter is how long a dead node keeps its place in placement
	// before its pieces are rebuilt elsewhere. Default 5 minutes.
	RemoveAfter time.Duration
	// ScrubEvery is the period of anti-entropy passes (default 1 hour);
	// a pass also runs whenever a node enters or leaves the view.
	ScrubEvery time.Duration
	// Frontend makes a storage-less node (`cairn node --storage=false`):
	// it joins gossip and serves NBD exports, but holds no pieces and no
	// raft replicas, and placement never picks it (it gossips Storage
	// false). Its volumes' pieces go to the storage nodes and their
	// mutable blocks through forwarding (forward.go). It must join an
	// existing cluster at its first start.
	Frontend bool
	// Profile names the gossip timings: overlay.ProfileLAN (default) or
	// overlay.ProfileLocal for nodes sharing one machine.
	Profile string
}

// ports derives the raft and data addresses from the gossip address.
func (cc ClusterConfig) ports() (raft, data string, err error) {
	host, p, err := net.SplitHostPort(cc.Listen)
	if err != nil {
		return "", "", fmt.Errorf("node: --listen %q: want ip:port: %w", cc.Listen, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65533 {
		return "", "", fmt.Errorf("node: --listen %q: the port must be 1..65533 (raft uses port+1, data port+2)", cc.Listen)
	}
	return net.JoinHostPort(host, strconv.Itoa(port+1)), net.JoinHostPort(host, strconv.Itoa(port+2)), nil
}

// clusterKey derives the key that wraps volume keys from the cluster
// secret, so that any node of the cluster can open any volume.
func clusterKey(secret []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, secret, nil, "cairn volume key wrapping v1", 32)
}

// startCluster joins the cluster: the data transport, gossip, the view
// and the loop that keeps shards and pieces where placement wants them.
// It runs after the silo is open and before consensus starts.
func (n *Node) startCluster(ctx context.Context, secret []byte, dataAddr string) error {
	cc := n.cfg.Cluster
	c := &cluster{
		n: n, log: n.log.With("layer", "cluster"), secret: secret,
		removeAfter: cc.RemoveAfter,
		clients:     map[string]*peer.Client{}, suspect: map[string]time.Time{}, hints: map[hint]struct{}{},
		scrub: newScrubber(cc.ScrubEvery),
	}
	if c.scrub.period <= 0 {
		c.scrub.period = time.Hour
	}
	if c.removeAfter <= 0 {
		c.removeAfter = 5 * time.Minute
	}
	n.served = &servedMutable{}
	srv, err := peer.NewServer(peer.ServerOptions{
		Holder: n.silo, Mutable: n.served, Secret: secret, NodeID: n.id.Name, Logger: c.log,
		Collector: gcServer{n},
		// Pieces and journal records other nodes write or read here for
		// their clients count as client I/O for this node's repair
		// throttle; their repair traffic (marked background) does not.
		ClientActivity: func() { c.limiter().Note() },
	})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", dataAddr)
	if err != nil {
		return fmt.Errorf("node: data transport: %w", err)
	}
	c.server = srv
	go srv.Serve(context.WithoutCancel(ctx), l)
	c.self = overlay.Node{
		ID: n.id.Name, Zone: cc.Zone, RaftAddr: n.id.RaftAddress, DataAddr: dataAddr, NBDAddr: cc.NBDAddr,
		Storage: !cc.Frontend, RaftReplicaID: n.id.ReplicaID,
	}
	profile := cc.Profile
	if profile == "" {
		profile = overlay.ProfileLAN
	}
	// A restarted node rejoins the members it knew, whether or not it
	// was given seeds: the first node of a cluster restarts without any.
	known := loadMembers(n.cfg.DataDir, cc.Listen)
	seeds := append(append([]string(nil), cc.Seeds...), known...)
	var ml *overlay.Membership
	for attempt := 0; ; attempt++ {
		ml, err = overlay.Join(ctx, overlay.Config{Self: c.self, BindAddr: cc.Listen, Seeds: seeds, Secret: secret, Logger: c.log, Profile: profile})
		if err == nil || ctx.Err() != nil {
			break
		}
		if len(cc.Seeds) == 0 {
			// Only remembered members, and none answers: start alone;
			// the loop keeps calling them.
			n.log.Warn("no remembered member answers; starting alone until one does", "members", known)
			ml, err = overlay.Join(ctx, overlay.Config{Self: c.self, BindAddr: cc.Listen, Secret: secret, Logger: c.log, Profile: profile})
			break
		}
		if attempt == 20 {
			break
		}
		n.log.Info("joining the cluster: seeds not answering yet, retrying", "seeds", cc.Seeds, "err", err)
		time.Sleep(time.Second)
	}
	if err != nil {
		srv.Shutdown(context.Background())
		return fmt.Errorf("node: joining the cluster through %v: %w", cc.Seeds, err)
	}
	c.known = known
	c.ml = ml
	if err := c.rebuild(); err != nil {
		return err
	}
	n.cluster = c
	return nil
}

// loop keeps the node's view fresh, gives handed-off pieces back to their
// holders, and moves raft shards toward placement. It runs until ctx ends.
func (c *cluster) loop(ctx context.Context) {
	events, stop := c.ml.Subscribe()
	defer stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
		case <-tick.C:
		}
		if err := c.rebuild(); err != nil {
			c.log.Warn("placement view", "err", err)
			continue
		}
		c.remember(ctx)
		c.giveBack(ctx)
		c.reconcileShards(ctx)
	}
}

// shardKey is the placement key of raft shard s.
func shardKey(s uint64) blocks.Addr {
	return blocks.Sum([]byte("cairn/shard/" + strconv.FormatUint(s, 10)))
}

// shardReplicas is how many nodes replicate each raft shard: five, so that
// a shard keeps its quorum through the loss of any two nodes (what a
// `parity = 2` volume survives), on clusters of five nodes or more.
const shardReplicas = 5

// wantShard returns the replicas placement wants for shard s.
func (c *cluster) wantShard(v *view) func(uint64) map[uint64]string {
	return func(s uint64) map[uint64]string {
		n := min(shardReplicas, len(v.placer.StorageNodes()))
		hs, err := v.placer.Holders(shardKey(s), n, policies.SpreadNode, nil)
		if err != nil {
			return nil
		}
		want := make(map[uint64]string, len(hs))
		for _, h := range hs {
			nd := v.nodes[h.ID]
			want[nd.RaftReplicaID] = nd.RaftAddr
		}
		return want
	}
}

// facts describes the cluster for policy checks.
func (c *cluster) facts() policies.Facts {
	v := c.view()
	zones := map[string]bool{}
	for _, nd := range v.nodes {
		zones[nd.Zone] = true
	}
	return policies.Facts{StorageNodes: len(v.nodes), Zones: len(zones)}
}

func (c *cluster) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c.ml != nil {
		c.ml.Close()
	}
	if c.server != nil {
		c.server.Shutdown(ctx)
	}
	c.mu.Lock()
	for _, cl := range c.clients {
		cl.Close()
	}
	c.mu.Unlock()
}

// reconcileShards moves this node's raft shards toward placement.
func (c *cluster) reconcileShards(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rep, err := c.n.raft.Reconcile(rctx, c.wantShard(c.view()))
	if err != nil {
		c.log.Debug("shard reconcile", "err", err)
	}
	c.underReplicated.Store(int64(rep.UnderReplicated))
}
