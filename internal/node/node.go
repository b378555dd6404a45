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
	"sync"
	"time"

	"cairn/blocks"
	"cairn/blocks/redundant"
	"cairn/blocks/sealed"
	"cairn/blocks/silo"
	"cairn/consensus"
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
}

// Node is a running node. Methods are safe for concurrent use.
type Node struct {
	cfg     Config
	id      identity
	log     *slog.Logger
	silo    *silo.Silo
	raft    *consensus.Host
	catalog *volume.Catalogue
	started time.Time

	mu      sync.Mutex // guards stores and nbd
	stores  map[string]blocks.Store
	nbd     NBDInfo
	exports *exports
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
	raftAddr := cfg.RaftAddress
	if raftAddr == "" {
		raftAddr = DefaultRaftAddress
	}
	id, _, err := loadIdentity(cfg.DataDir, raftAddr)
	if err != nil {
		return nil, err
	}
	if cfg.RaftAddress != "" && cfg.RaftAddress != id.RaftAddress {
		return nil, fmt.Errorf("node: this node's raft address is %s (recorded in %s); moving it to %s is not supported yet", id.RaftAddress, filepath.Join(cfg.DataDir, identityFile), cfg.RaftAddress)
	}
	key, err := loadMasterKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, id: id, log: cfg.Logger.With("node", id.Name), started: time.Now(), stores: map[string]blocks.Store{}}

	n.silo, err = silo.Open(ctx, filepath.Join(cfg.DataDir, "silo"), silo.Options{SegmentSize: cfg.SiloSegmentSize, Logger: n.log.With("layer", "silo")})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	raftLog := slog.New(demoted{n.log.Handler()}).With("layer", "consensus")
	n.raft, err = consensus.Open(ctx, consensus.Config{
		NodeID:      id.ReplicaID,
		DataDir:     filepath.Join(cfg.DataDir, "raft"),
		RaftAddress: id.RaftAddress,
		Shards:      cfg.Shards,
		Members:     map[uint64]string{id.ReplicaID: id.RaftAddress},
		Logger:      raftLog,
	})
	if err != nil {
		n.silo.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	n.catalog, err = volume.NewCatalog(ctx, volume.Options{
		Mutable:         n.raft,
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
		n.silo.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	return n, nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.id.Name }

// Catalog returns the node's volume catalogue.
func (n *Node) Catalog() *volume.Catalogue { return n.catalog }

// Silo returns the node's local block storage.
func (n *Node) Silo() *silo.Silo { return n.silo }

// Consensus returns the node's consensus host.
func (n *Node) Consensus() *consensus.Host { return n.raft }

// holders returns the holders of a block's n pieces. A node alone holds
// every piece; the cluster issue replaces this with placement.
func (n *Node) holders(_ blocks.Addr, count int) []blocks.Holder {
	hs := make([]blocks.Holder, count)
	for i := range hs {
		hs[i] = n.silo
	}
	return hs
}

func (n *Node) allHolders() []blocks.Holder { return []blocks.Holder{n.silo} }

// redundantFor returns the redundancy layer for r, shared by every volume
// with the same redundancy.
func (n *Node) redundantFor(r policies.Redundancy) (blocks.Store, error) {
	k := fmt.Sprintf("r%d/d%d/p%d", r.Replicas, r.Data, r.Parity)
	n.mu.Lock()
	defer n.mu.Unlock()
	if s, ok := n.stores[k]; ok {
		return s, nil
	}
	s, err := redundant.New(redundant.Options{
		Replicas: r.Replicas,
		Data:     r.Data,
		Parity:   r.Parity,
		Holders:  n.holders,
		All:      n.allHolders,
		Logger:   n.log.With("layer", "redundant"),
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
	inner, err := n.redundantFor(p.Redundancy)
	if err != nil {
		return nil, err
	}
	return sealed.New(inner, sealed.Options{Compression: p.Compression, Cipher: p.Cipher, Key: key, Dedup: p.Dedup})
}

// journals returns where a volume's journal lives: on one node, the silo.
func (n *Node) journals(_ blocks.ID, _ policies.Policy) ([]volume.JournalHolder, error) {
	return []volume.JournalHolder{n.silo}, nil
}

// Close closes every volume (flushing and checkpointing them), then the
// consensus host and the silo.
func (n *Node) Close(ctx context.Context) error {
	var errs []error
	if err := n.catalog.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.raft.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := n.silo.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func timeSince(t time.Time) time.Duration { return time.Since(t) }

func (n *Node) defaultRedundancy() policies.Redundancy { return policies.Redundancy{Replicas: 1} }
