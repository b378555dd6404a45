// Package consensus runs one dragonboat NodeHost per node and serves
// Cairn's mutable blocks through it: a [Host] implements
// blocks.MutableStore.
//
// Mutable blocks are partitioned by ID into a fixed number of shards (raft
// groups): shard = FNV-1a-64(ID) mod Shards. The number of shards is
// recorded in the data directory at first start and cannot change later
// (that would move blocks between shards). Every shard's state machine keeps
// its blocks on disk (package consensus/internal/shardsm), so a restart
// replays only the raft entries applied since the last state-machine sync.
//
// Load is a linearizable read (raft ReadIndex, then a local lookup);
// CompareAndSet is one raft proposal to the owning shard, decided by the
// state machine. Every call has a deadline: the caller's, capped at
// MaxCallTimeout. Dragonboat's errors are translated here: nothing of
// dragonboat's escapes the package. Transient refusals (no leader yet,
// system busy) are retried inside the deadline.
//
// The dragonboat shard ID of shard s is s+1, and the deployment ID is fixed
// (see deploymentID): both are part of the cluster's wire and disk format.
//
// # Data directory
//
//	DataDir/raft   dragonboat's NodeHost directory (raft logs, snapshots)
//	DataDir/state  the Pebble database of the state machines and host metadata
//
// # Membership
//
// A node's replica ID is its NodeID in every shard. A node runs replicas
// of some shards (Hosted) and records that set durably; Open restarts
// exactly those. The first start of a node decides the initial set:
//
//   - Members (the default): every shard is bootstrapped with Members as
//     its initial members: a one-node cluster, or a static cluster whose
//     nodes all start with the same Members.
//   - Join: every shard is joined; the node must have been added to each
//     with AddReplica (called on any current member).
//   - Empty: no shard. Replicas are started later, by StartShard or by
//     Reconcile, as placement assigns shards to the node.
//
// Reconcile is the self-healing step of DESIGN.md: run periodically on
// every node with the desired replica set of every shard (computed by
// placement from the gossip view), it makes each shard's leader move the
// membership toward that set one change at a time (add, let it catch up,
// remove), starts the replicas this node should run, and drops those the
// shard removed. AddReplica and RemoveReplica remain for manual changes.
//
// A replica ID removed from a shard can never rejoin it (raft refuses
// removed IDs); Reconcile reports such desired replicas as Blocked. This is
// why removals wait for Config.RemoveDelay: a node that is briefly away
// (a restart) must not lose its place for good.
package consensus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"

	"cairn/blocks"
	"cairn/consensus/internal/shardsm"
)

var _ blocks.MutableStore = (*Host)(nil)

// Limits and defaults.
const (
	// MaxPayload is the largest payload CompareAndSet accepts.
	MaxPayload = shardsm.MaxPayload
	// MaxCallTimeout caps the deadline of every call, whatever the caller's.
	MaxCallTimeout = 10 * time.Second
	// DefaultRTTMillisecond is the raft tick used when Config leaves it 0.
	DefaultRTTMillisecond = 100
	// MinRTTMillisecond is the smallest tick accepted: shorter ticks cause
	// constant elections on small busy machines.
	MinRTTMillisecond = 50
	// MaxShards bounds Config.Shards.
	MaxShards = 4096
	// DefaultSnapshotEntries is the default of Config.SnapshotEntries.
	DefaultSnapshotEntries = 1000
)

// Format constants: changing them breaks existing data directories or
// clusters.
const (
	// deploymentID keeps Cairn's raft traffic apart from other dragonboat
	// applications' ("cairn" in ASCII).
	deploymentID = 0x636169726e
	// logDBShards is the number of dragonboat LogDB partitions.
	logDBShards = 4
	metaShards  = "shards"
)

// Config configures a Host.
type Config struct {
	// NodeID is this node's replica ID in every shard; non-zero and unique
	// in the cluster, stable across restarts.
	NodeID uint64
	// DataDir holds the raft logs and the state machines (created if absent).
	DataDir string
	// RaftAddress is the host:port other nodes reach this node's raft
	// transport at; it also listens there. It must not change across restarts.
	RaftAddress string
	// Shards is the number of raft groups the mutable blocks are partitioned
	// into (1..MaxShards). Recorded at first start; a different value later
	// makes Open fail.
	Shards int
	// Members are the initial members of every shard (replica ID -> raft
	// address), NodeID included; a one-node cluster is {NodeID: RaftAddress}.
	// Used only at a node's first start, when Join is false; ignored on restart.
	Members map[uint64]string
	// Join makes a node's first start join existing shards (it must have been
	// added to each with AddReplica) instead of bootstrapping them.
	Join bool
	// Empty makes a node's first start run no replica at all (Members and
	// Join are then ignored): StartShard or Reconcile start them. Ignored on
	// restart, which restarts the replicas the node hosted.
	Empty bool
	// RemoveDelay is how long Reconcile, as a shard's leader, waits after
	// it first sees a member undesired before removing it (default
	// DefaultRemoveDelay; negative: at once). A removed replica ID can never
	// rejoin its shard, so this should outlast a restart.
	RemoveDelay time.Duration
	// CatchUpWait is the time Reconcile gives a shard after each of its
	// membership changes (a new replica catching up) before the next one
	// (default the larger of 2 s and 40 raft ticks).
	CatchUpWait time.Duration
	// Logger receives the host's and dragonboat's logs (slog.Default() if nil).
	// Dragonboat's logging is process-wide: see BridgeLogs.
	Logger *slog.Logger
	// RTTMillisecond is the raft tick (default DefaultRTTMillisecond, at least
	// MinRTTMillisecond). Elections take 10 to 20 ticks; heartbeats every tick.
	RTTMillisecond uint64
	// SnapshotEntries is the number of applied entries between state-machine
	// snapshots, after which the raft log is compacted (default
	// DefaultSnapshotEntries). A replica that falls further behind than that
	// catches up from a snapshot stream instead of the log.
	SnapshotEntries uint64
}

// Stats counts what a Host did since Open. Proposals is the number of raft
// proposals made (every CompareAndSet attempt, retries included); Reads the
// number of linearizable reads started.
type Stats struct {
	Proposals uint64
	Reads     uint64
	Conflicts uint64 // CompareAndSet calls that returned ErrConflict
	Failures  uint64 // calls that returned ErrUnavailable
	// SnapshotsRecovered counts the shard snapshots this host installed
	// from other replicas because it had fallen behind their raft logs.
	SnapshotsRecovered uint64
}

// ShardInfo is this node's view of one shard (no network round trip).
type ShardInfo struct {
	ID          uint64            // 0 .. Shards-1
	LeaderID    uint64            // replica ID of the leader, 0 if unknown
	Term        uint64            // raft term of LeaderID
	LeaderKnown bool              // whether LeaderID is valid
	Replicas    map[uint64]string // replica ID -> raft address (caller owns); empty if not Hosted
	// Hosted is whether this node runs a replica of the shard.
	Hosted bool
	// UnderReplicated is whether Replicas lacks a replica of the desired
	// set last passed to Reconcile (false if not Hosted or never reconciled).
	UnderReplicated bool
}

// Host is one node's consensus participant. It is safe for concurrent use.
type Host struct {
	cfg    Config
	log    *slog.Logger
	nh     *dragonboat.NodeHost
	store  *shardsm.Store
	shards uint64

	mu        sync.Mutex           // guards hosted, startedAt; serializes StartShard, StopShard
	hosted    map[uint64]bool      // shards this node runs a replica of
	startedAt map[uint64]time.Time // when each hosted replica was started by this Host
	strayAt   map[uint64]time.Time // when an undesired replica here first could not learn its membership

	recMu    sync.Mutex // serializes Reconcile; guards recState
	recState map[uint64]*reconcileState
	dropped  map[uint64]bool // shards whose replica cannot start again (ErrReplicaRemoved)

	wantMu   sync.Mutex
	lastWant map[uint64]map[uint64]string // desired set per shard, as last passed to Reconcile

	// life is held shared by calls into the NodeHost that may race with
	// its Close (dragonboat's are not all safe against it), exclusively by
	// Close; closing is canceled when Close starts, to cut such calls short.
	life       sync.RWMutex
	closing    context.Context
	startClose context.CancelFunc

	closeOnce sync.Once
	closed    atomic.Bool
	closeErr  error

	proposals, reads, conflicts, failures atomic.Uint64
}

// Open starts the host: opens the data directory, starts the NodeHost and
// this node's replicas (on restart the ones it hosted; at first start every
// shard, or none with Config.Empty), and returns without waiting for
// elections (see Ready). Calls made before a shard has a leader are retried within
// their deadline. Errors: configuration mistakes, a Shards value different
// from the recorded one, an unusable data directory or address.
func Open(ctx context.Context, cfg Config) (*Host, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("consensus: open: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RTTMillisecond == 0 {
		cfg.RTTMillisecond = DefaultRTTMillisecond
	}
	if cfg.SnapshotEntries == 0 {
		cfg.SnapshotEntries = DefaultSnapshotEntries
	}
	if cfg.RemoveDelay == 0 {
		cfg.RemoveDelay = DefaultRemoveDelay
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	BridgeLogs(cfg.Logger)
	log := cfg.Logger.With("component", "consensus", "node", cfg.NodeID)

	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("consensus: data directory: %w", err)
	}
	store, err := shardsm.OpenStore(filepath.Join(cfg.DataDir, "state"), cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	if err := checkShards(store, cfg.Shards); err != nil {
		store.Close()
		return nil, err
	}
	logdb := config.GetTinyMemLogDBConfig()
	logdb.Shards = logDBShards
	nh, err := dragonboat.NewNodeHost(config.NodeHostConfig{
		DeploymentID:   deploymentID,
		NodeHostDir:    filepath.Join(cfg.DataDir, "raft"),
		RTTMillisecond: cfg.RTTMillisecond,
		RaftAddress:    cfg.RaftAddress,
		Expert: config.ExpertConfig{
			Engine: config.GetDefaultEngineConfig(),
			LogDB:  logdb,
		},
	})
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("consensus: start node host at %s: %v", cfg.RaftAddress, err)
	}
	h := &Host{cfg: cfg, log: log, nh: nh, store: store, shards: uint64(cfg.Shards),
		hosted: map[uint64]bool{}, startedAt: map[uint64]time.Time{}, strayAt: map[uint64]time.Time{},
		recState: map[uint64]*reconcileState{}, dropped: map[uint64]bool{}, lastWant: map[uint64]map[uint64]string{}}
	h.closing, h.startClose = context.WithCancel(context.Background())
	fail := func(err error) (*Host, error) {
		nh.Close()
		store.Close()
		return nil, err
	}
	recorded, err := store.Meta(metaHosted)
	if err != nil {
		return fail(fmt.Errorf("consensus: %w", err))
	}
	var toStart map[uint64]bool
	switch {
	case recorded != nil:
		if toStart, err = decodeHosted(recorded, h.shards); err != nil {
			return fail(err)
		}
	case cfg.Empty:
		toStart = map[uint64]bool{}
	default: // first start, or a data directory from before the hosted set
		toStart = map[uint64]bool{}
		for s := uint64(0); s < h.shards; s++ {
			toStart[s] = true
		}
	}
	members := make(map[uint64]dragonboat.Target, len(cfg.Members))
	for id, addr := range cfg.Members {
		members[id] = addr
	}
	now := time.Now()
	for s := uint64(0); s < h.shards; s++ {
		if !toStart[s] {
			continue
		}
		rc := h.raftConfig(s)
		var err error
		switch {
		case nh.HasNodeInfo(rc.ShardID, rc.ReplicaID): // restart
			err = nh.StartOnDiskReplica(nil, false, store.NewStateMachine, rc)
		case cfg.Join || recorded != nil:
			// A recorded shard without raft state was joined but never
			// written to: join again.
			err = nh.StartOnDiskReplica(nil, true, store.NewStateMachine, rc)
		default:
			err = nh.StartOnDiskReplica(members, false, store.NewStateMachine, rc)
		}
		if err != nil {
			return fail(fmt.Errorf("consensus: start shard %d: %v", s, err))
		}
		h.hosted[s] = true
		h.startedAt[s] = now
	}
	if recorded == nil {
		if err := h.saveHosted(); err != nil {
			return fail(err)
		}
	}
	log.Info("consensus host started", "address", cfg.RaftAddress, "shards", cfg.Shards, "hosted", len(h.hosted), "join", cfg.Join, "empty", cfg.Empty)
	return h, nil
}

func (c *Config) validate() error {
	switch {
	case c.NodeID == 0:
		return errors.New("consensus: config: NodeID must be non-zero")
	case c.DataDir == "":
		return errors.New("consensus: config: DataDir is empty")
	case c.RaftAddress == "":
		return errors.New("consensus: config: RaftAddress is empty (want host:port)")
	case c.Shards < 1 || c.Shards > MaxShards:
		return fmt.Errorf("consensus: config: Shards is %d, want 1..%d", c.Shards, MaxShards)
	case c.RTTMillisecond < MinRTTMillisecond:
		return fmt.Errorf("consensus: config: RTTMillisecond is %d, want at least %d", c.RTTMillisecond, MinRTTMillisecond)
	}
	if !c.Join && !c.Empty {
		addr, ok := c.Members[c.NodeID]
		if !ok {
			return fmt.Errorf("consensus: config: Members must include this node (%d: %q) unless Join is set", c.NodeID, c.RaftAddress)
		}
		if addr != c.RaftAddress {
			return fmt.Errorf("consensus: config: Members gives node %d the address %q, but RaftAddress is %q", c.NodeID, addr, c.RaftAddress)
		}
	}
	for id := range c.Members {
		if id == 0 {
			return errors.New("consensus: config: Members has replica ID 0")
		}
	}
	return nil
}

// checkShards records the shard count at first start and refuses a
// different one later. The value is stored as 8 bytes big-endian.
func checkShards(store *shardsm.Store, n int) error {
	v, err := store.Meta(metaShards)
	if err != nil {
		return fmt.Errorf("consensus: %w", err)
	}
	if v == nil {
		return store.SetMeta(metaShards, binary.BigEndian.AppendUint64(nil, uint64(n)))
	}
	if len(v) != 8 {
		return fmt.Errorf("consensus: recorded shard count is %d bytes, want 8: the data directory is damaged", len(v))
	}
	if got := binary.BigEndian.Uint64(v); got != uint64(n) {
		return fmt.Errorf("consensus: this data directory was created with %d shards, not %d: the shard count cannot change; set it back to %d", got, n, got)
	}
	return nil
}

func (h *Host) raftConfig(shard uint64) config.Config {
	return config.Config{
		ReplicaID:          h.cfg.NodeID,
		ShardID:            shard + 1, // dragonboat shard IDs start at 1 here
		CheckQuorum:        true,
		PreVote:            true,
		ElectionRTT:        10,
		HeartbeatRTT:       1,
		SnapshotEntries:    h.cfg.SnapshotEntries,
		CompactionOverhead: h.cfg.SnapshotEntries / 2,
	}
}

// ShardOf returns the shard (0 .. shards-1) that owns id. It is part of the
// data format: FNV-1a 64 of the 32 ID bytes, mod shards.
func ShardOf(id blocks.ID, shards int) uint64 {
	f := fnv.New64a()
	f.Write(id[:])
	return f.Sum64() % uint64(shards)
}

// Close stops the host: the NodeHost (every replica) and then the state
// machines' database. Calls in flight or made later return an error
// wrapping blocks.ErrClosed. Close is idempotent.
func (h *Host) Close() error {
	h.closeOnce.Do(func() {
		h.closed.Store(true)
		h.startClose()
		h.life.Lock()
		defer h.life.Unlock()
		h.mu.Lock() // wait for a StartShard or StopShard in progress
		defer h.mu.Unlock()
		h.nh.Close()
		if err := h.store.Close(); err != nil {
			h.closeErr = fmt.Errorf("consensus: close: %w", err)
		}
		h.log.Info("consensus host closed")
	})
	return h.closeErr
}

// Stats returns the host's counters.
func (h *Host) Stats() Stats {
	return Stats{
		Proposals: h.proposals.Load(),
		Reads:     h.reads.Load(),
		Conflicts: h.conflicts.Load(),
		Failures:  h.failures.Load(),

		SnapshotsRecovered: h.store.Recovered(),
	}
}

// NumShards returns the number of shards.
func (h *Host) NumShards() int { return int(h.shards) }

// Shards returns this node's view of every shard, in shard order: leader
// and members as last known locally (see ShardInfo). It makes no network
// call. ShardStatus is the same.
func (h *Host) Shards() []ShardInfo {
	out := make([]ShardInfo, 0, h.shards)
	h.life.RLock()
	defer h.life.RUnlock()
	if h.closed.Load() {
		return out
	}
	byID := h.localInfo()
	hosted := h.Hosted()
	h.wantMu.Lock()
	defer h.wantMu.Unlock()
	for s := uint64(0); s < h.shards; s++ {
		info := ShardInfo{ID: s, Replicas: map[uint64]string{}, Hosted: slices.Contains(hosted, s)}
		if leader, term, ok, err := h.nh.GetLeaderID(s + 1); err == nil && ok {
			info.LeaderID, info.Term, info.LeaderKnown = leader, term, true
		}
		for id, addr := range byID[s+1].Replicas {
			info.Replicas[id] = addr
		}
		if info.Hosted {
			for id := range h.lastWant[s] {
				if _, ok := info.Replicas[id]; !ok {
					info.UnderReplicated = true
				}
			}
		}
		out = append(out, info)
	}
	return out
}

// Ready waits until every shard this node hosts has a known leader, or
// ctx ends (a node that hosts nothing is ready at once). It is for startup
// ("serve once the cluster is up") and tests; calls work without it,
// retrying inside their own deadlines.
func (h *Host) Ready(ctx context.Context) error {
	for {
		if h.closed.Load() {
			return fmt.Errorf("consensus: ready: %w", blocks.ErrClosed)
		}
		missing := 0
		hosted := h.Hosted()
		h.life.RLock()
		for _, s := range hosted {
			if _, _, ok, err := h.nh.GetLeaderID(s + 1); err != nil || !ok {
				missing++
			}
		}
		h.life.RUnlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consensus: ready: %d of %d hosted shards have no leader: %w (%w)", missing, len(hosted), blocks.ErrUnavailable, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Load implements blocks.MutableStore: a linearizable read of id. The
// returned payload belongs to the caller. Errors wrap blocks.ErrUnavailable
// (no quorum or no leader within the deadline) or blocks.ErrClosed.
func (h *Host) Load(ctx context.Context, id blocks.ID) (blocks.Version, []byte, error) {
	shard := ShardOf(id, int(h.shards))
	var val shardsm.Value
	err := h.call(ctx, false, func(ctx context.Context) error {
		h.reads.Add(1)
		v, err := h.nh.SyncRead(ctx, shard+1, [32]byte(id))
		if err != nil {
			return err
		}
		sv, ok := v.(shardsm.Value)
		if !ok {
			return fmt.Errorf("lookup answered %T", v)
		}
		val = sv
		return nil
	})
	if err != nil {
		return 0, nil, h.translate("load", id, shard, err)
	}
	return blocks.Version(val.Version), val.Payload, nil
}

// CompareAndSet implements blocks.MutableStore: one raft proposal to the
// shard that owns id. It stores payload (nil deletes) if the block's
// version is want and returns the new version (want+1, or 0 after a
// delete). payload is not retained. Errors: blocks.ErrConflict (with the
// current version returned) when the version is not want;
// blocks.ErrTooLarge for payloads over MaxPayload; blocks.ErrUnavailable
// when no quorum decided within the deadline, in which case the outcome is
// unknown (the proposal may still commit: Load to find out);
// blocks.ErrClosed.
func (h *Host) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, payload []byte) (blocks.Version, error) {
	if len(payload) > MaxPayload {
		return 0, fmt.Errorf("consensus: compare-and-set %v: payload of %d bytes, limit %d: %w", id, len(payload), MaxPayload, blocks.ErrTooLarge)
	}
	op := byte(shardsm.OpSet)
	if payload == nil {
		op = shardsm.OpDelete
	}
	cmd := shardsm.Command{Op: op, ID: id, Want: uint64(want), Payload: payload}.Encode(nil)
	shard := ShardOf(id, int(h.shards))
	var st shardsm.Status
	var ver uint64
	err := h.call(ctx, true, func(ctx context.Context) error {
		h.proposals.Add(1)
		res, err := h.nh.SyncPropose(ctx, h.nh.GetNoOPSession(shard+1), cmd)
		if err != nil {
			return err
		}
		st, ver, err = shardsm.DecodeResult(res.Value, res.Data)
		return err
	})
	if err != nil {
		return 0, h.translate("compare-and-set", id, shard, err)
	}
	switch st {
	case shardsm.StatusOK:
		return blocks.Version(ver), nil
	case shardsm.StatusConflict:
		h.conflicts.Add(1)
		return blocks.Version(ver), fmt.Errorf("consensus: compare-and-set %v: want version %d, have %d: %w", id, want, ver, blocks.ErrConflict)
	default:
		return 0, fmt.Errorf("consensus: compare-and-set %v: the state machine refused the command", id)
	}
}

// call runs fn with a deadline (the caller's, capped at MaxCallTimeout),
// retrying transient refusals with backoff until the deadline or
// maxAttempts. For proposals only refusals that guarantee the proposal was
// not applied are retried; a read attempt has its own shorter timeout.
func (h *Host) call(ctx context.Context, propose bool, fn func(context.Context) error) error {
	if h.closed.Load() {
		return dragonboat.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, MaxCallTimeout)
	defer cancel()
	const maxAttempts = 100
	backoff := 5 * time.Millisecond
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		actx, acancel := ctx, context.CancelFunc(func() {})
		if !propose {
			actx, acancel = context.WithTimeout(ctx, h.readAttemptTimeout())
		}
		err := fn(actx)
		acancel()
		if err == nil || attempt >= maxAttempts || !retryable(err, propose) || h.closed.Load() {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// readAttemptTimeout bounds one linearizable read attempt, so that a read
// whose message was lost (a peer restarting, a leader change) is retried
// instead of waiting for the whole call deadline. Reads are idempotent.
func (h *Host) readAttemptTimeout() time.Duration {
	return max(2*time.Second, 40*time.Duration(h.cfg.RTTMillisecond)*time.Millisecond)
}

// retryable reports whether err is a refusal worth retrying with the same
// input. A proposal that timed out may have committed, so it is not.
func retryable(err error, propose bool) bool {
	switch {
	case errors.Is(err, dragonboat.ErrShardNotReady),
		errors.Is(err, dragonboat.ErrSystemBusy),
		errors.Is(err, dragonboat.ErrShardNotInitialized):
		return true
	case errors.Is(err, dragonboat.ErrTimeout), errors.Is(err, dragonboat.ErrAborted):
		return !propose
	}
	return false
}

// translate turns an error from dragonboat (or from the caller's context)
// into one of ours. Dragonboat's error is kept as text only.
func (h *Host) translate(op string, id blocks.ID, shard uint64, err error) error {
	if h.closed.Load() || errors.Is(err, dragonboat.ErrClosed) {
		return fmt.Errorf("consensus: %s %v: %w", op, id, blocks.ErrClosed)
	}
	if errors.Is(err, shardsm.ErrCorrupt) {
		return fmt.Errorf("consensus: %s %v (shard %d): %v: %w", op, id, shard, err, blocks.ErrCorrupt)
	}
	h.failures.Add(1)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("consensus: %s %v (shard %d): %w (%w)", op, id, shard, blocks.ErrUnavailable, err)
	}
	if errors.Is(err, dragonboat.ErrShardNotFound) {
		return fmt.Errorf("consensus: %s %v (shard %d): %w (%w)", op, id, shard, ErrNotHosted, blocks.ErrUnavailable)
	}
	reason := err.Error()
	switch {
	case errors.Is(err, dragonboat.ErrTimeout):
		reason = "no quorum answered before the deadline"
	case errors.Is(err, dragonboat.ErrShardNotReady):
		reason = "the shard has no leader"
	case errors.Is(err, dragonboat.ErrCanceled):
		reason = "canceled"
	}
	return fmt.Errorf("consensus: %s %v (shard %d): %s: %w", op, id, shard, reason, blocks.ErrUnavailable)
}

// AddReplica adds replica replicaID, reachable at addr, to shard (0 ..
// Shards-1), through this host (which must hold a replica of that shard).
// The new node then starts with Config.Join set. A replica ID once removed
// cannot be added back. Errors wrap blocks.ErrUnavailable or blocks.ErrClosed.
func (h *Host) AddReplica(ctx context.Context, shard, replicaID uint64, addr string) error {
	if shard >= h.shards {
		return fmt.Errorf("consensus: add replica: shard %d out of range 0..%d", shard, h.shards-1)
	}
	err := h.call(ctx, true, func(ctx context.Context) error {
		return h.nh.SyncRequestAddReplica(ctx, shard+1, replicaID, addr, 0)
	})
	if err != nil {
		return h.translateMembership("add replica "+strconv.FormatUint(replicaID, 10), shard, err)
	}
	return nil
}

// RemoveReplica removes replica replicaID from shard (0 .. Shards-1)
// through this host. Errors wrap blocks.ErrUnavailable or blocks.ErrClosed.
func (h *Host) RemoveReplica(ctx context.Context, shard, replicaID uint64) error {
	if shard >= h.shards {
		return fmt.Errorf("consensus: remove replica: shard %d out of range 0..%d", shard, h.shards-1)
	}
	err := h.call(ctx, true, func(ctx context.Context) error {
		return h.nh.SyncRequestDeleteReplica(ctx, shard+1, replicaID, 0)
	})
	if err != nil {
		return h.translateMembership("remove replica "+strconv.FormatUint(replicaID, 10), shard, err)
	}
	return nil
}

func (h *Host) translateMembership(op string, shard uint64, err error) error {
	if h.closed.Load() || errors.Is(err, dragonboat.ErrClosed) {
		return fmt.Errorf("consensus: %s, shard %d: %w", op, shard, blocks.ErrClosed)
	}
	return fmt.Errorf("consensus: %s, shard %d: %v: %w", op, shard, err, blocks.ErrUnavailable)
}
