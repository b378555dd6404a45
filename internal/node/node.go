// Package node wires one Cairn node together: the silo (local block
// storage), the consensus host (raft groups for mutable blocks), the block
// pipeline each policy asks for, and the volume catalogue. cmd/cairn and
// the integration tests build nodes with it; it is the only place that
// knows every layer.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"cairn/blocks"
	"cairn/blocks/redundant"
	"cairn/blocks/sealed"
	"cairn/blocks/silo"
	"cairn/consensus"
	"cairn/internal/admin"
	"cairn/internal/peer"
	"cairn/overlay"
	"cairn/policies"
	"cairn/volume"
)

// Config configures a node. Only DataDir is required.
type Config struct {
	// DataDir holds everything the node keeps: node.json, keys/, silo/, raft/.
	DataDir string
	// RaftAddress is where this node's raft groups talk (host:port). It is
	// recorded at first start; later starts use the recorded one unless
	// this is set. Default 127.0.0.1:10812.
	RaftAddress string
	// Shards is the number of raft groups mutable blocks are spread over
	// (fixed at first start). Default 16.
	Shards int
	// Logger receives the node's logs (default: discard).
	Logger *slog.Logger
	// CheckpointEvery, LeaseTTL tune the volume layer (0: defaults).
	CheckpointEvery time.Duration
	LeaseTTL        time.Duration
	// SiloSegmentSize tunes the silo (0: default).
	SiloSegmentSize int64
	// RelocateReads turns the silo's read relocation on (silo.Options).
	RelocateReads bool
	// WriteCache bounds the written data all volumes hold in memory before
	// pushing it (volume.Options.DirtyLimit; 0: its default).
	WriteCache int64
	// GCEvery is the period of automatic garbage collection (see
	// gc_auto.go); 0 turns it off.
	GCEvery time.Duration
	// Cluster, if set, makes the node a member of a cluster.
	Cluster *ClusterConfig
}

// Node is a running node. Methods are safe for concurrent use.
type Node struct {
	cfg     Config
	id      identity
	log     *slog.Logger
	silo    *silo.Silo
	raft    *consensus.Host
	catalog *volume.Catalogue
	sweeps  sweeps // garbage-collection sweeps open here (gc_cluster.go)

	siloSets [maxPieces + 1][]blocks.Holder // what holders returns on one node, by count (set at Open)

	gcMu    sync.Mutex         // one collection at a time, automatic or asked for
	gcStop  context.CancelFunc // stops gcLoop (nil: automatic collection is off)
	gcDone  chan struct{}      // closed when gcLoop has returned
	lastGC  atomic.Pointer[admin.GCStatus]
	started time.Time

	mu      sync.Mutex // guards stores and nbd
	stores  map[string]blocks.Store
	nbd     NBDInfo
	exports *exports
	cluster *cluster        // nil for a cluster of one
	served  *servedMutable  // what the peer server answers forwarded calls with (cluster nodes only)
	fwd     *forwarder      // the volume layer's MutableStore (cluster nodes only)
	fwdCli  *forwardClients // the peer clients of fwd
	secret  []byte          // the cluster secret (cluster nodes only)
	cancel  context.CancelFunc
}

// DefaultRaftAddress is where a one-node cluster's raft groups listen.
const DefaultRaftAddress = "127.0.0.1:10812"

// Open starts the node whose data lives in cfg.DataDir, creating it on
// first start.
func Open(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("node: no data directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Shards == 0 {
		cfg.Shards = 16
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("node: data directory: %w", err)
	}
	raftAddr, dataAddr := cfg.RaftAddress, ""
	if cfg.Cluster != nil {
		var err error
		if raftAddr, dataAddr, err = cfg.Cluster.ports(); err != nil {
			return nil, err
		}
	} else if raftAddr == "" {
		raftAddr = DefaultRaftAddress
	}
	id, first, err := loadIdentity(cfg.DataDir, raftAddr, cfg.Cluster != nil)
	if err != nil {
		return nil, err
	}
	if raftAddr != id.RaftAddress && (cfg.RaftAddress != "" || cfg.Cluster != nil) {
		return nil, fmt.Errorf("node: this node's raft address is %s (recorded in %s); moving it to %s is not supported yet", id.RaftAddress, filepath.Join(cfg.DataDir, identityFile), raftAddr)
	}
	n := &Node{cfg: cfg, id: id, log: cfg.Logger.With("node", id.Name), started: time.Now(), stores: map[string]blocks.Store{}}
	var key []byte
	if cfg.Cluster != nil {
		if !first && len(cfg.Cluster.Seeds) > 0 && cfg.Cluster.Secret == "" {
			// A restarted member finds its secret in its data directory.
		} else if first && len(cfg.Cluster.Seeds) > 0 && cfg.Cluster.Secret == "" {
			return nil, errors.New("node: joining a cluster needs its secret: pass --secret (the first node printed it; it is in its data directory's cluster-secret file)")
		}
		if first && cfg.Cluster.Frontend && len(cfg.Cluster.Seeds) == 0 {
			return nil, errors.New("node: a storage-less node (--storage=false) cannot start a cluster: start a storage node first, then join it with --join and --secret")
		}
		if n.secret, _, err = overlay.LoadOrCreateSecret(cfg.DataDir, cfg.Cluster.Secret); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
		if key, err = clusterKey(n.secret); err != nil {
			return nil, err
		}
	} else if key, err = loadMasterKey(cfg.DataDir); err != nil {
		return nil, err
	}

	n.silo, err = silo.Open(ctx, filepath.Join(cfg.DataDir, "silo"), silo.Options{SegmentSize: cfg.SiloSegmentSize, Relocate: cfg.RelocateReads, Logger: n.log.With("layer", "silo")})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	for c := range n.siloSets {
		n.siloSets[c] = slices.Repeat([]blocks.Holder{n.silo}, c)
	}
	if cfg.Cluster != nil {
		if err := n.startCluster(ctx, n.secret, dataAddr); err != nil {
			n.silo.Close()
			return nil, err
		}
	}
	raftLog := slog.New(demoted{n.log.Handler()}).With("layer", "consensus")
	rc := consensus.Config{
		NodeID:      id.ReplicaID,
		DataDir:     filepath.Join(cfg.DataDir, "raft"),
		RaftAddress: id.RaftAddress,
		Shards:      cfg.Shards,
		Members:     map[uint64]string{id.ReplicaID: id.RaftAddress},
		Logger:      raftLog,
	}
	if cfg.Cluster != nil && len(cfg.Cluster.Seeds) > 0 {
		// A node joining an existing cluster hosts no shard until the
		// shards' leaders add it (see cluster.reconcileShards).
		rc.Join, rc.Members = true, nil
	}
	if cfg.Cluster != nil && cfg.Cluster.Frontend {
		// A storage-less node hosts no replica, ever: placement never
		// names it, so Reconcile never starts one.
		rc.Join, rc.Empty, rc.Members = false, true, nil
	}
	if cfg.Cluster != nil {
		// The view already waited RemoveAfter before it dropped a dead
		// node; the shards need not wait again.
		rc.RemoveDelay = 5 * time.Second
	}
	n.raft, err = consensus.Open(ctx, rc)
	if err != nil {
		n.closeCluster()
		n.silo.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	var mutable blocks.MutableStore = n.raft
	if n.cluster != nil {
		n.served.h.Store(n.raft)
		n.fwdCli = &forwardClients{secret: n.secret, self: n.id.Name, log: n.log.With("layer", "forward"), clients: map[string]*peer.Client{}}
		n.fwd = &forwarder{local: n.raft, routes: n.cluster.shardRoutes(n.fwdCli), failed: n.cluster.failed, log: n.log.With("layer", "forward")}
		mutable = n.fwd
	}
	putParallel := 0 // the volume's default
	if n.cluster != nil {
		putParallel = clusterPutParallel
	}
	n.catalog, err = volume.NewCatalog(ctx, volume.Options{
		PutParallel:     putParallel,
		DirtyLimit:      cfg.WriteCache,
		Mutable:         mutable,
		StoreFor:        n.storeFor,
		Journals:        n.journals,
		MasterKey:       key,
		Blocks:          gcStore{n},
		Owner:           id.Name,
		LeaseTTL:        cfg.LeaseTTL,
		CheckpointEvery: cfg.CheckpointEvery,
		Logger:          n.log.With("layer", "volume"),
	})
	if err != nil {
		n.raft.Close()
		n.closeCluster()
		n.silo.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	if n.cluster != nil {
		lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		n.cancel = cancel
		go n.cluster.loop(lctx)
		go n.cluster.scrubLoop(lctx)
	}
	if cfg.GCEvery > 0 {
		gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		n.gcStop, n.gcDone = cancel, make(chan struct{})
		go n.gcLoop(gctx, cfg.GCEvery)
	}
	return n, nil
}

func (n *Node) closeCluster() {
	if n.cancel != nil {
		n.cancel()
	}
	if n.cluster != nil {
		n.cluster.close()
	}
	if n.fwdCli != nil {
		n.fwdCli.close()
	}
}

// Secret returns the cluster secret in its printable form ("" for a
// cluster of one).
func (n *Node) Secret() string {
	if n.secret == nil {
		return ""
	}
	return overlay.EncodeSecret(n.secret)
}

// Name returns the node's name.
func (n *Node) Name() string { return n.id.Name }

// Catalog returns the node's volume catalogue.
func (n *Node) Catalog() *volume.Catalogue { return n.catalog }

// clusterPutParallel is the volumes' PutParallel on a cluster node. A
// block's Put there waits for a round trip to each remote holder, so a
// push is bound by latency, not CPU: on the 2-core development machine
// (loaded by other work), 4K random writes at QD32 through a 3-node
// replicas = 3 cluster went from 12.0k to 17.8k IOPS going from the
// volume's default of 16 to 64. Memory stays bounded by the dirty limit:
// no more chunks are in the air than are dirty, each framed once per
// piece (4 KiB blocks: about 1 MiB at replicas = 3).
const clusterPutParallel = 64

// Silo returns the node's local block storage.
func (n *Node) Silo() *silo.Silo { return n.silo }

// Consensus returns the node's consensus host.
func (n *Node) Consensus() *consensus.Host { return n.raft }

// holders returns the holders of a block's n pieces: a node alone holds
// every piece (cluster.holders places them over the cluster).
func (n *Node) holders(_ blocks.Addr, count int) []blocks.Holder {
	if count <= maxPieces {
		// Shared: the redundancy layer only reads the slice. A read asks
		// for every chunk's holders: a 1 MiB read over NBD made 256
		// allocations here before.
		return n.siloSets[count]
	}
	hs := make([]blocks.Holder, count)
	for i := range hs {
		hs[i] = n.silo
	}
	return hs
}

func (n *Node) allHolders() []blocks.Holder { return []blocks.Holder{n.silo} }

// redundantFor returns the redundancy layer for r and spread, shared by
// every volume with the same redundancy and spread.
func (n *Node) redundantFor(r policies.Redundancy, spread policies.Spread) (blocks.Store, error) {
	k := fmt.Sprintf("r%d/d%d/p%d/%s", r.Replicas, r.Data, r.Parity, spread)
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.stores[k]; ok {
		return s, nil
	}
	holders, all := n.holders, n.allHolders
	if n.cluster != nil {
		holders, all = n.cluster.holders(spread), n.cluster.allHolders
	}
	s, err := redundant.New(redundant.Options{
		Replicas: r.Replicas,
		Data:     r.Data,
		Parity:   r.Parity,
		Holders:  holders,
		All:      all,
		Logger:   n.log.With("layer", "redundant"),
		Tag:      spreadTag(spread),
	})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	n.stores[k] = s
	return s, nil
}

// storeFor builds a volume's block pipeline: compress, then encrypt
// (sealed), then replicate or erasure-code (redundant) onto the silo.
func (n *Node) storeFor(p policies.Policy, key []byte) (blocks.Store, error) {
	inner, err := n.redundantFor(p.Redundancy, p.Spread)
	if err != nil {
		return nil, err
	}
	return sealed.New(inner, sealed.Options{Compression: p.Compression, Cipher: p.Cipher, Key: key, Dedup: p.Dedup})
}

// journals returns where a volume's journal lives: on one node, the silo.
func (n *Node) journals(id blocks.ID, p policies.Policy) ([]volume.JournalHolder, error) {
	if n.cluster != nil {
		return n.cluster.journals(id, p)
	}
	return []volume.JournalHolder{n.silo}, nil
}

// Close closes every volume (flushing and checkpointing them), then the
// consensus host and the silo.
func (n *Node) Close(ctx context.Context) error {
	if n.gcStop != nil {
		n.gcStop()
		<-n.gcDone
	}
	var errs []error
	if err := n.catalog.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.raft.Close(); err != nil {
		errs = append(errs, err)
	}
	n.closeCluster()
	if err := n.silo.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (n *Node) defaultRedundancy() policies.Redundancy { return policies.Redundancy{Replicas: 1} }

// The placement tag of a piece (redundant.Options.Tag) is the spread its
// volume's policy asked for, so that anti-entropy ranks the block's
// holders as its writers did. Pieces written before the tag say 0, and
// were ranked as spread "node". The values are on disk: never renumber.
var spreadTags = []policies.Spread{policies.SpreadNode, policies.SpreadZone, policies.SpreadNone}

// spreadTag returns the placement tag of spread.
func spreadTag(spread policies.Spread) uint8 {
	for i, s := range spreadTags {
		if s == spread {
			return uint8(i)
		}
	}
	return 0
}

// tagSpread returns the spread a placement tag names: spread "node" for
// 0, and for a tag this build does not know.
func tagSpread(tag int) policies.Spread {
	if tag >= 0 && tag < len(spreadTags) {
		return spreadTags[tag]
	}
	return policies.SpreadNode
}
