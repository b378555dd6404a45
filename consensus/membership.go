package consensus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/lni/dragonboat/v4"

	"cairn/blocks"
)

// ErrNotHosted is wrapped (beside blocks.ErrUnavailable) by the errors of
// Load and CompareAndSet for a shard this node runs no replica of: the
// caller should send the call to a node that hosts the shard.
var ErrNotHosted = errors.New("consensus: this node hosts no replica of the shard")

// ErrReplicaRemoved is wrapped by StartShard's error when this node's
// replica of the shard was dropped (DropShard) after its removal: raft
// never lets a removed replica ID rejoin its shard.
var ErrReplicaRemoved = errors.New("consensus: this node's replica was removed from the shard and cannot rejoin it")

// Defaults of the membership settings of Config.
const (
	// DefaultRemoveDelay is the default of Config.RemoveDelay.
	DefaultRemoveDelay = time.Minute
	// minCatchUpWait bounds Config.CatchUpWait's default from below.
	minCatchUpWait = 2 * time.Second
	// membershipTimeout bounds one membership query or change of Reconcile.
	membershipTimeout = 5 * time.Second
)

// metaHosted is the host metadata key of the set of shards this node runs
// a replica of. Value format (written with fsync on every change):
//
//	0x01                        format
//	shard (8 bytes BE) * n      shard indices 0..Shards-1, strictly ascending
//
// Open restarts exactly these replicas. A data directory from before this
// key existed has none: Open then starts every shard, as it always did.
const metaHosted = "hosted"

const hostedFormat = 1

// encodeHosted encodes a hosted set (see metaHosted).
func encodeHosted(set map[uint64]bool) []byte {
	ids := slices.Sorted(maps.Keys(set))
	b := make([]byte, 1, 1+8*len(ids))
	b[0] = hostedFormat
	for _, s := range ids {
		b = binary.BigEndian.AppendUint64(b, s)
	}
	return b
}

// decodeHosted decodes a hosted set read from disk, refusing anything that
// is not exactly the format of metaHosted with shards below n.
func decodeHosted(b []byte, n uint64) (map[uint64]bool, error) {
	if len(b) < 1 || b[0] != hostedFormat || (len(b)-1)%8 != 0 {
		return nil, fmt.Errorf("consensus: recorded hosted shards: malformed value of %d bytes: the data directory is damaged", len(b))
	}
	set := map[uint64]bool{}
	var prev uint64
	for i := 1; i < len(b); i += 8 {
		s := binary.BigEndian.Uint64(b[i:])
		if s >= n || (i > 1 && s <= prev) {
			return nil, fmt.Errorf("consensus: recorded hosted shards: shard %d out of order or range (%d shards): the data directory is damaged", s, n)
		}
		set[s] = true
		prev = s
	}
	return set, nil
}

// saveHosted durably records the hosted set. h.mu must be held.
func (h *Host) saveHosted() error {
	if err := h.store.SetMeta(metaHosted, encodeHosted(h.hosted)); err != nil {
		return fmt.Errorf("consensus: record hosted shards: %w", err)
	}
	return nil
}

// Hosted returns the shards (0 .. NumShards-1) this node runs a replica
// of, in ascending order. The slice belongs to the caller.
func (h *Host) Hosted() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.hosted))
}

// HostsShard reports whether this node runs a replica of shard now (Load
// and CompareAndSet of its blocks are served here; for other shards they
// return an error wrapping ErrNotHosted). It makes no network call.
func (h *Host) HostsShard(shard uint64) bool { return h.isHosted(shard) }

// LeaderKnown reports whether this node hosts a replica of shard that
// knows its leader now: a replica that was started but not yet added to
// its shard (or is cut off) knows none, and calls through it wait for one.
// It makes no network call.
func (h *Host) LeaderKnown(shard uint64) bool {
	if !h.isHosted(shard) {
		return false
	}
	h.life.RLock()
	defer h.life.RUnlock()
	if h.closed.Load() {
		return false
	}
	_, _, ok, err := h.nh.GetLeaderID(shard + 1)
	return err == nil && ok
}

func (h *Host) isHosted(shard uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hosted[shard]
}

// StartShard starts this node's replica of shard (0 .. NumShards-1) and
// records it, durably, among the shards Open restarts. If the node has
// raft state for the shard (it ran a replica before), the replica restarts
// from it, whatever join and members say. Otherwise, with join set, the
// replica starts empty and waits for the shard's leader to add it (before
// or after this call; members is ignored); without join, it bootstraps a
// new shard whose initial members are members (which must include this
// node at its RaftAddress), which is only right for a shard that exists
// nowhere else. StartShard is idempotent: a running replica is left alone.
// It returns once the replica is started, without waiting for a leader.
// Errors: a shard out of range, bad members, blocks.ErrClosed, or a
// dragonboat or disk failure.
func (h *Host) StartShard(ctx context.Context, shard uint64, join bool, members map[uint64]string) error {
	if shard >= h.shards {
		return fmt.Errorf("consensus: start shard %d: out of range 0..%d", shard, h.shards-1)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("consensus: start shard %d: %w", shard, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed.Load() {
		return fmt.Errorf("consensus: start shard %d: %w", shard, blocks.ErrClosed)
	}
	if h.hosted[shard] {
		return nil
	}
	rc := h.raftConfig(shard)
	var err error
	switch {
	case h.nh.HasNodeInfo(rc.ShardID, rc.ReplicaID):
		err = h.nh.StartOnDiskReplica(nil, false, h.store.NewStateMachine, rc)
	case join:
		err = h.nh.StartOnDiskReplica(nil, true, h.store.NewStateMachine, rc)
	default:
		if addr, ok := members[h.cfg.NodeID]; !ok || addr != h.cfg.RaftAddress {
			return fmt.Errorf("consensus: start shard %d: members must include this node (%d: %q)", shard, h.cfg.NodeID, h.cfg.RaftAddress)
		}
		m := make(map[uint64]dragonboat.Target, len(members))
		for id, addr := range members {
			if id == 0 {
				return fmt.Errorf("consensus: start shard %d: members has replica ID 0", shard)
			}
			m[id] = addr
		}
		err = h.nh.StartOnDiskReplica(m, false, h.store.NewStateMachine, rc)
	}
	if err != nil && !errors.Is(err, dragonboat.ErrShardAlreadyExist) {
		if errors.Is(err, dragonboat.ErrClosed) {
			return fmt.Errorf("consensus: start shard %d: %w", shard, blocks.ErrClosed)
		}
		if errors.Is(err, dragonboat.ErrReplicaRemoved) {
			return fmt.Errorf("consensus: start shard %d: %w", shard, ErrReplicaRemoved)
		}
		return fmt.Errorf("consensus: start shard %d: %v", shard, err)
	}
	h.hosted[shard] = true
	h.startedAt[shard] = time.Now()
	if err := h.saveHosted(); err != nil {
		return err
	}
	h.log.Info("shard replica started", "shard", shard, "join", join)
	return nil
}

// StopShard stops this node's replica of shard and removes it, durably,
// from the shards Open restarts. The replica's raft log and state stay on
// disk (a later StartShard restarts from them); it stays a member of the
// shard until the shard's leader removes it. Stopping a shard that is not
// running is not an error. Errors: a shard out of range, blocks.ErrClosed,
// a disk failure.
func (h *Host) StopShard(ctx context.Context, shard uint64) error {
	if shard >= h.shards {
		return fmt.Errorf("consensus: stop shard %d: out of range 0..%d", shard, h.shards-1)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("consensus: stop shard %d: %w", shard, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stopLocked(shard)
}

func (h *Host) stopLocked(shard uint64) error {
	if h.closed.Load() {
		return fmt.Errorf("consensus: stop shard %d: %w", shard, blocks.ErrClosed)
	}
	if h.hosted[shard] {
		delete(h.hosted, shard)
		delete(h.startedAt, shard)
		if err := h.saveHosted(); err != nil {
			return err
		}
	}
	if err := h.nh.StopShard(shard + 1); err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
		if errors.Is(err, dragonboat.ErrClosed) {
			return fmt.Errorf("consensus: stop shard %d: %w", shard, blocks.ErrClosed)
		}
		return fmt.Errorf("consensus: stop shard %d: %v", shard, err)
	}
	h.log.Info("shard replica stopped", "shard", shard)
	return nil
}

// DropShard stops this node's replica of shard (as StopShard) and deletes
// its raft log and state. Only for a replica that has been removed from
// its shard: deleting a member's data loses the entries it acknowledged.
// The replica can never be started again (StartShard returns an error
// wrapping ErrReplicaRemoved), as raft refuses removed IDs.
// Errors: as StopShard, and blocks.ErrUnavailable if the replica did not
// unload before ctx ended.
func (h *Host) DropShard(ctx context.Context, shard uint64) error {
	if err := h.StopShard(ctx, shard); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hosted[shard] { // restarted meanwhile
		return fmt.Errorf("consensus: drop shard %d: it was started again", shard)
	}
	dctx, cancel := context.WithTimeout(ctx, membershipTimeout)
	defer cancel()
	err := h.nh.SyncRemoveData(dctx, shard+1, h.cfg.NodeID)
	switch {
	case errors.Is(err, dragonboat.ErrClosed):
		return fmt.Errorf("consensus: drop shard %d: %w", shard, blocks.ErrClosed)
	case err != nil:
		return fmt.Errorf("consensus: drop shard %d: remove raft data: %v: %w", shard, err, blocks.ErrUnavailable)
	}
	if err := h.store.DropShard(shard + 1); err != nil {
		return fmt.Errorf("consensus: drop shard %d: %w", shard, err)
	}
	h.log.Info("shard replica dropped", "shard", shard)
	return nil
}

// ReconcileReport counts what one Reconcile call did and saw.
type ReconcileReport struct {
	// Led is the number of shards this node leads.
	Led int
	// Added and Removed count membership changes made (as leader).
	Added, Removed int
	// Transfers counts leadership transfers started because this node,
	// leader, is no longer desired.
	Transfers int
	// Started counts replicas started here (desired, not running);
	// Stopped those stopped here (no longer members, or never added and
	// no longer desired).
	Started, Stopped int
	// UnderReplicated counts the shards this node leads whose membership
	// lacks a desired replica. Each shard has at most one leader, so the
	// sum over the cluster's nodes is the cluster's count (shards without
	// a leader are in no node's count: see Leaderless).
	UnderReplicated int
	// Blocked counts desired replicas that cannot be added because the
	// shard removed that replica ID earlier (raft never re-admits one): as
	// leader, the desired replicas the shard removed; as a desired node,
	// the shards whose replica this node dropped.
	Blocked int
	// Leaderless counts the shards this node runs that have no known leader.
	Leaderless int
	// Failures counts per-shard steps that failed (retried next call);
	// LastError describes the last one ("" if none).
	Failures  int
	LastError string
}

// reconcileState is the leader-side memory of Reconcile, per shard.
type reconcileState struct {
	leadSince      time.Time            // when this node was first seen leading the shard
	lastChange     time.Time            // last membership change made here
	undesiredSince map[uint64]time.Time // replica -> first seen undesired
}

// Reconcile runs one step of moving this node's shards toward the desired
// replica sets, and returns what it did. want(shard) returns the desired
// members of a shard (replica ID -> raft address); it must be
// deterministic across nodes (placement over the gossip view) and is
// called once per shard; the returned map is not retained beyond the call
// (a copy is kept for ShardStatus). Run it periodically, every few
// seconds, on every node; calls are serialized.
//
// For every shard this node leads, it makes at most one membership change
// per call and none within CatchUpWait of its previous one (the time a new
// replica is given to catch up): first it adds a desired replica that is
// missing (lowest ID first); once none is missing, it removes one
// undesired replica that has been undesired for RemoveDelay, provided a
// majority of the remaining members are desired ones. If the undesired
// replica is this node, it transfers leadership to a desired member
// instead. An empty desired set changes nothing.
//
// A node that has just become a shard's leader removes nothing for
// CatchUpWait, as it does not know when the last change was made.
//
// For every shard where this node is desired and runs no replica, it
// starts one (StartShard with join; the leader adds it). A replica that
// applied its own removal (dragonboat then unloads it) is dropped with its
// data (DropShard), desired or not. For every shard it runs but is not
// desired in: if the shard's membership (read through the leader) lists
// this node as removed, the replica is dropped; a replica that was never
// added (it has applied nothing after CatchUpWait) is stopped, keeping its
// data. Any other replica is left running: data is only deleted on proof
// of removal, so a removed replica that never heard of its removal (it was
// away) stays until an operator stops it.
//
// Per-shard failures are counted in the report and retried on the next
// call; the error is non-nil only when ctx ends or the host is closed.
func (h *Host) Reconcile(ctx context.Context, want func(shard uint64) map[uint64]string) (ReconcileReport, error) {
	h.recMu.Lock()
	defer h.recMu.Unlock()
	var rep ReconcileReport
	fail := func(shard uint64, err error) {
		rep.Failures++
		rep.LastError = err.Error()
		h.log.Debug("reconcile step failed", "shard", shard, "err", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(h.closing, cancel)()
	h.life.RLock()
	local := h.localInfo()
	h.life.RUnlock()
	for s := uint64(0); s < h.shards; s++ {
		if err := h.reconcileShard(ctx, s, want, local, &rep, fail); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// reconcileShard is Reconcile's step for one shard. It holds off Close.
// local is the NodeHost's list of replicas, taken before.
func (h *Host) reconcileShard(ctx context.Context, s uint64, want func(shard uint64) map[uint64]string, local map[uint64]dragonboat.ShardInfo, rep *ReconcileReport, fail func(uint64, error)) error {
	h.life.RLock()
	defer h.life.RUnlock()
	if h.closed.Load() {
		return fmt.Errorf("consensus: reconcile: %w", blocks.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("consensus: reconcile: %w", err)
	}
	self := h.cfg.NodeID
	desired := maps.Clone(want(s))
	if desired == nil {
		desired = map[uint64]string{}
	}
	h.wantMu.Lock()
	h.lastWant[s] = desired
	h.wantMu.Unlock()
	_, isDesired := desired[self]
	running := h.isHosted(s)
	switch {
	case running:
		info, present := local[s+1]
		if !present {
			fresh := h.localInfo() // started since?
			info, present = fresh[s+1]
			present = present || fresh == nil
		}
		if !present {
			// Dragonboat unloads a replica that applies its own
			// removal: it is no member any more.
			if err := h.DropShard(ctx, s); err != nil {
				fail(s, err)
				return nil
			}
			h.log.Info("shard replica was removed from its shard", "shard", s)
			rep.Stopped++
			return nil
		}
		leader, _, ok, err := h.nh.GetLeaderID(s + 1)
		if err != nil || !ok {
			rep.Leaderless++
		}
		if !(err == nil && ok && leader == self) {
			delete(h.recState, s) // forget what it did as leader
		}
		if err == nil && ok && leader == self {
			rep.Led++
			if err := h.lead(ctx, s, desired, rep); err != nil {
				fail(s, err)
			}
			return nil
		}
		if !isDesired {
			if err := h.leaveIfRemoved(ctx, s, info, rep); err != nil {
				fail(s, err)
			}
		}
	case isDesired:
		if h.dropped[s] {
			rep.Blocked++
			return nil
		}
		if err := h.StartShard(ctx, s, true, nil); err != nil {
			if errors.Is(err, ErrReplicaRemoved) {
				h.dropped[s] = true
				rep.Blocked++
				return nil
			}
			fail(s, err)
			return nil
		}
		rep.Started++
	}
	return nil
}

// localInfo returns this node's local view of the replicas it runs, by
// dragonboat shard ID; nil if the NodeHost is closed.
func (h *Host) localInfo() map[uint64]dragonboat.ShardInfo {
	nhi := h.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	if nhi == nil {
		return nil
	}
	byID := map[uint64]dragonboat.ShardInfo{}
	for _, si := range nhi.ShardInfoList {
		byID[si.ShardID] = si
	}
	return byID
}

// lead makes at most one membership change of shard, led by this node.
func (h *Host) lead(ctx context.Context, shard uint64, desired map[uint64]string, rep *ReconcileReport) error {
	mctx, cancel := context.WithTimeout(ctx, membershipTimeout)
	defer cancel()
	m, err := h.nh.SyncGetShardMembership(mctx, shard+1)
	if err != nil {
		return fmt.Errorf("consensus: shard %d: read membership: %v", shard, err)
	}
	self := h.cfg.NodeID
	st := h.recState[shard]
	if st == nil {
		st = &reconcileState{leadSince: time.Now(), undesiredSince: map[uint64]time.Time{}}
		h.recState[shard] = st
	}
	var missing []uint64
	for id := range desired {
		if _, ok := m.Nodes[id]; ok {
			continue
		}
		if _, removed := m.Removed[id]; removed {
			rep.Blocked++
			continue
		}
		missing = append(missing, id)
	}
	for id := range desired {
		if _, ok := m.Nodes[id]; !ok {
			rep.UnderReplicated++
			break
		}
	}
	now := time.Now()
	var undesired []uint64
	for id := range m.Nodes {
		if _, ok := desired[id]; ok {
			delete(st.undesiredSince, id)
			continue
		}
		if _, seen := st.undesiredSince[id]; !seen {
			st.undesiredSince[id] = now
		}
		undesired = append(undesired, id)
	}
	for id := range st.undesiredSince {
		if _, member := m.Nodes[id]; !member {
			delete(st.undesiredSince, id)
		}
	}
	if len(desired) == 0 || now.Sub(st.lastChange) < h.catchUpWait() {
		return nil
	}
	if len(missing) > 0 {
		id := slices.Min(missing)
		err := h.nh.SyncRequestAddReplica(mctx, shard+1, id, desired[id], m.ConfigChangeID)
		if err != nil {
			return fmt.Errorf("consensus: shard %d: add replica %d: %v", shard, id, err)
		}
		st.lastChange = now
		rep.Added++
		h.log.Info("shard replica added", "shard", shard, "replica", id, "address", desired[id])
		return nil
	}
	if now.Sub(st.leadSince) < h.catchUpWait() {
		// A new leader does not know when the last change was made: no
		// removal before a replica the old leader added has caught up.
		return nil
	}
	slices.Sort(undesired)
	for _, id := range undesired {
		if now.Sub(st.undesiredSince[id]) < h.cfg.RemoveDelay {
			continue
		}
		// After the removal, desired replicas must be a majority of the rest.
		kept, good := len(m.Nodes)-1, 0
		for mid := range m.Nodes {
			if _, ok := desired[mid]; ok && mid != id {
				good++
			}
		}
		if good < kept/2+1 {
			continue
		}
		if id == self {
			target := uint64(0)
			for mid := range m.Nodes {
				if _, ok := desired[mid]; ok && (target == 0 || mid < target) {
					target = mid
				}
			}
			if target == 0 {
				continue
			}
			if err := h.nh.RequestLeaderTransfer(shard+1, target); err != nil {
				return fmt.Errorf("consensus: shard %d: transfer leadership to %d: %v", shard, target, err)
			}
			st.lastChange = now
			rep.Transfers++
			h.log.Info("shard leadership handed over", "shard", shard, "to", target)
			return nil
		}
		if err := h.nh.SyncRequestDeleteReplica(mctx, shard+1, id, m.ConfigChangeID); err != nil {
			return fmt.Errorf("consensus: shard %d: remove replica %d: %v", shard, id, err)
		}
		st.lastChange = now
		delete(st.undesiredSince, id)
		rep.Removed++
		h.log.Info("shard replica removed", "shard", shard, "replica", id)
		return nil
	}
	return nil
}

// leaveIfRemoved handles a replica this node runs but is not desired in
// and does not lead: dropped if the shard removed it, stopped if it was
// never added, else left alone.
func (h *Host) leaveIfRemoved(ctx context.Context, shard uint64, info dragonboat.ShardInfo, rep *ReconcileReport) error {
	self := h.cfg.NodeID
	if info.Pending {
		// Nothing applied yet: never added (or the add is in flight). Stop
		// it, keeping its log, once it has had CatchUpWait to hear from a leader.
		h.mu.Lock()
		started := h.startedAt[shard]
		h.mu.Unlock()
		if time.Since(started) < h.catchUpWait() {
			return nil
		}
		if err := h.StopShard(ctx, shard); err != nil {
			return err
		}
		rep.Stopped++
		return nil
	}
	mctx, cancel := context.WithTimeout(ctx, membershipTimeout)
	defer cancel()
	m, err := h.nh.SyncGetShardMembership(mctx, shard+1)
	if err != nil {
		// Cut off, or removed without hearing of it (a leader stops
		// talking to a replica it removes, so the removal may never reach
		// it). Either way the replica is not wanted here: once that has
		// lasted well past the removal delay, stop it, keeping its data
		// (only proof of removal deletes data; StartShard brings it back
		// if placement wants it again).
		h.mu.Lock()
		since, seen := h.strayAt[shard]
		if !seen {
			h.strayAt[shard] = time.Now()
		}
		h.mu.Unlock()
		if !seen || time.Since(since) < max(h.cfg.RemoveDelay, 0)+2*h.catchUpWait() {
			return nil
		}
		if err := h.StopShard(ctx, shard); err != nil {
			return err
		}
		h.mu.Lock()
		delete(h.strayAt, shard)
		h.mu.Unlock()
		rep.Stopped++
		return nil
	}
	h.mu.Lock()
	delete(h.strayAt, shard)
	h.mu.Unlock()
	_, member := m.Nodes[self]
	_, removed := m.Removed[self]
	if member || !removed {
		return nil
	}
	if err := h.DropShard(ctx, shard); err != nil {
		return err
	}
	rep.Stopped++
	return nil
}

func (h *Host) catchUpWait() time.Duration {
	if h.cfg.CatchUpWait > 0 {
		return h.cfg.CatchUpWait
	}
	return max(minCatchUpWait, 40*time.Duration(h.cfg.RTTMillisecond)*time.Millisecond)
}

// ShardStatus returns this node's view of every shard, in shard order, as
// Shards does: members and leader as known locally (a shard this node does
// not host has no members in it), whether this node hosts it, and whether
// it is under-replicated (its locally known membership lacks a replica of
// the set last passed to Reconcile; false for shards not hosted here, and
// before the first Reconcile). It makes no network call.
func (h *Host) ShardStatus() []ShardInfo { return h.Shards() }
