package consensus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/consensus/internal/shardsm"
)

// idIn returns an ID (named prefix+i) that lands in shard.
func idIn(t testing.TB, prefix string, shard uint64, shards int) blocks.ID {
	for i := 0; i < 10000; i++ {
		id := blocks.NameID(fmt.Sprint(prefix, i))
		if ShardOf(id, shards) == shard {
			return id
		}
	}
	t.Fatalf("no ID for shard %d", shard)
	return blocks.ID{}
}

func TestHostedEncoding(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
		want []uint64
	}{
		{"empty set", []byte{1}, true, nil},
		{"two", append(binary.BigEndian.AppendUint64([]byte{1}, 0), binary.BigEndian.AppendUint64(nil, 3)...), true, []uint64{0, 3}},
		{"nothing", nil, false, nil},
		{"bad format", []byte{2}, false, nil},
		{"short", []byte{1, 0, 0}, false, nil},
		{"out of range", binary.BigEndian.AppendUint64([]byte{1}, 4), false, nil},
		{"unordered", append(binary.BigEndian.AppendUint64([]byte{1}, 2), binary.BigEndian.AppendUint64(nil, 1)...), false, nil},
		{"duplicate", append(binary.BigEndian.AppendUint64([]byte{1}, 2), binary.BigEndian.AppendUint64(nil, 2)...), false, nil},
	} {
		set, err := decodeHosted(tc.b, 4)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", tc.name, err)
			continue
		}
		if got := slices.Sorted(maps.Keys(set)); tc.ok && !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
		if tc.ok && !bytes.Equal(encodeHosted(set), tc.b) {
			t.Errorf("%s: re-encoding differs", tc.name)
		}
	}
}

func FuzzDecodeHosted(f *testing.F) {
	f.Add([]byte{1})
	f.Add(binary.BigEndian.AppendUint64([]byte{1}, 7))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		set, err := decodeHosted(b, 16)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeHosted(set), b) {
			t.Fatalf("accepted %x, re-encodes as %x", b, encodeHosted(set))
		}
	})
}

// TestStartStopShard runs one node that starts empty and hosts shards one
// by one.
func TestStartStopShard(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	cfg := Config{NodeID: 7, DataDir: dir, RaftAddress: addr, Shards: 4, Empty: true}
	h := openHost(t, cfg)
	defer func() { h.Close() }()
	ctx := ctxT(t)
	if err := h.Ready(ctx); err != nil || len(h.Hosted()) != 0 {
		t.Fatalf("empty host: ready %v, hosted %v", err, h.Hosted())
	}
	self := map[uint64]string{7: addr}
	if err := h.StartShard(ctx, 4, false, self); err == nil {
		t.Fatal("started shard 4 of 4")
	}
	if err := h.StartShard(ctx, 1, false, map[uint64]string{8: addr}); err == nil {
		t.Fatal("bootstrapped a shard without this node")
	}
	for i := 0; i < 2; i++ { // idempotent
		if err := h.StartShard(ctx, 1, false, self); err != nil {
			t.Fatal(err)
		}
	}
	ready(t, h)
	in1, in2 := idIn(t, "a", 1, 4), idIn(t, "b", 2, 4)
	if _, err := h.CompareAndSet(ctx, in1, 0, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.CompareAndSet(ctx, in2, 0, []byte("two")); !errors.Is(err, ErrNotHosted) || !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("cas on a shard not hosted: %v", err)
	}
	st := h.ShardStatus()
	if !st[1].Hosted || st[2].Hosted || !st[1].LeaderKnown || st[1].Replicas[7] != addr || len(st[2].Replicas) != 0 {
		t.Fatalf("status: %+v", st)
	}

	// A restart restarts exactly shard 1.
	h.Close()
	h = openHost(t, cfg)
	if got := h.Hosted(); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("hosted after restart: %v", got)
	}
	if _, p, err := h.Load(ctx, in1); err != nil || string(p) != "one" {
		t.Fatalf("after restart: %q %v", p, err)
	}
	// Stopped: not hosted, not restarted, but its data stays for a later start.
	if err := h.StopShard(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := h.StopShard(ctx, 1); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, _, err := h.Load(ctx, in1); !errors.Is(err, ErrNotHosted) {
		t.Fatalf("load of a stopped shard: %v", err)
	}
	h.Close()
	h = openHost(t, cfg)
	if got := h.Hosted(); len(got) != 0 {
		t.Fatalf("hosted after stop and restart: %v", got)
	}
	if err := h.StartShard(ctx, 1, true, nil); err != nil {
		t.Fatal(err)
	}
	if _, p, err := h.Load(ctx, in1); err != nil || string(p) != "one" {
		t.Fatalf("after stop and start: %q %v", p, err)
	}
	// Dropped: the replica can never start again, and its state is gone.
	if err := h.DropShard(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := h.StartShard(ctx, 1, true, nil); !errors.Is(err, ErrReplicaRemoved) {
		t.Fatalf("start after drop: %v", err)
	}
	if got := h.Hosted(); len(got) != 0 {
		t.Fatalf("hosted after drop: %v", got)
	}
	if v, err := h.store.NewStateMachine(1+1, 7).Lookup([32]byte(in1)); err != nil || v.(shardsm.Value).Version != 0 {
		t.Fatalf("state after drop: %+v %v", v, err)
	}
	h.Close()
	if err := h.StartShard(ctx, 2, false, self); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("start after close: %v", err)
	}
}

// reconciler runs Reconcile on one host every period until stopped.
type reconciler struct {
	stop chan struct{}
	done chan struct{}
}

func startReconciler(t *testing.T, h *Host, want *atomic.Pointer[map[uint64]map[uint64]string]) *reconciler {
	r := &reconciler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			w := *want.Load()
			rep, err := h.Reconcile(context.Background(), func(s uint64) map[uint64]string { return w[s] })
			if err != nil && !errors.Is(err, blocks.ErrClosed) {
				t.Errorf("node %d: reconcile: %v", h.cfg.NodeID, err)
			}
			if rep.Added+rep.Removed+rep.Started+rep.Stopped+rep.Transfers > 0 || rep.Failures > 0 {
				t.Logf("node %d: %+v", h.cfg.NodeID, rep)
			}
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

func (r *reconciler) halt() { close(r.stop); <-r.done }

// converged reports whether every shard's membership, in h's local view
// (h hosts every shard), is exactly the desired set.
func converged(h *Host, want map[uint64]map[uint64]string) bool {
	for _, si := range h.Shards() {
		if !si.Hosted || !maps.Equal(si.Replicas, want[si.ID]) {
			return false
		}
	}
	return true
}

func waitConverged(t *testing.T, h *Host, want map[uint64]map[uint64]string) time.Duration {
	t.Helper()
	start := time.Now()
	for !converged(h, want) {
		if time.Since(start) > 50*time.Second {
			for _, si := range h.Shards() {
				t.Logf("shard %d: leader %d members %v", si.ID, si.LeaderID, si.Replicas)
			}
			t.Fatalf("not converged to %v", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return time.Since(start)
}

// TestReconcile grows a one-node cluster to three nodes by Reconcile alone,
// restarts a joined node, then replaces a node that is gone for good, with
// a writer doing compare-and-set through node 1 all along.
func TestReconcile(t *testing.T) {
	const shards = 4
	addrs := map[uint64]string{}
	cfgs := map[uint64]Config{}
	for id := uint64(1); id <= 4; id++ {
		addrs[id] = freeAddr(t)
		cfgs[id] = Config{NodeID: id, DataDir: filepath.Join(t.TempDir(), fmt.Sprint(id)), RaftAddress: addrs[id],
			Shards: shards, Empty: id != 1, Members: map[uint64]string{1: addrs[1]},
			RemoveDelay: time.Second, SnapshotEntries: 50}
	}
	set := func(ids ...uint64) map[uint64]string {
		m := map[uint64]string{}
		for _, id := range ids {
			m[id] = addrs[id]
		}
		return m
	}
	hosts := map[uint64]*Host{}
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	for id := uint64(1); id <= 3; id++ {
		hosts[id] = openHost(t, cfgs[id])
	}
	ready(t, hosts[1])
	ctx := ctxT(t)

	// A writer increments one counter per shard through node 1 throughout.
	counters := make([]blocks.ID, shards)
	for s := range counters {
		counters[s] = idIn(t, "counter", uint64(s), shards)
	}
	var writes, unavailable atomic.Int64
	var longest atomic.Int64 // longest run of unavailability, ns
	stopW := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	h1 := hosts[1]
	go func() {
		defer wg.Done()
		var since time.Time
		for i := 0; ; i++ {
			select {
			case <-stopW:
				return
			default:
			}
			id := counters[i%shards]
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			v, _, err := h1.Load(cctx, id)
			if err == nil {
				_, err = h1.CompareAndSet(cctx, id, v, binary.BigEndian.AppendUint64(nil, uint64(v+1)))
			}
			cancel()
			switch {
			case err == nil:
				writes.Add(1)
				if !since.IsZero() {
					longest.Store(max(longest.Load(), int64(time.Since(since))))
					since = time.Time{}
				}
			case errors.Is(err, blocks.ErrUnavailable):
				unavailable.Add(1)
				if since.IsZero() {
					since = time.Now()
				}
				time.Sleep(50 * time.Millisecond)
			default:
				t.Errorf("writer: %v", err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// Phase 1: every shard on {1,2,3}, except shard 3 on {1,3}.
	want := map[uint64]map[uint64]string{0: set(1, 2, 3), 1: set(1, 2, 3), 2: set(1, 2, 3), 3: set(1, 3)}
	var wantP atomic.Pointer[map[uint64]map[uint64]string]
	wantP.Store(&want)
	recs := map[uint64]*reconciler{}
	for id, h := range hosts {
		recs[id] = startReconciler(t, h, &wantP)
	}
	t.Logf("grow 1 -> 3 nodes: converged in %v", waitConverged(t, hosts[1], want))
	for s := uint64(0); s < shards; s++ {
		id := idIn(t, "grown", s, shards)
		casRetry(t, hosts[1], id, []byte("via 1"))
		if _, p, err := hosts[3].Load(ctx, id); err != nil || string(p) != "via 1" {
			t.Fatalf("shard %d via node 3: %q %v", s, p, err)
		}
	}
	if got := hosts[2].Hosted(); !slices.Equal(got, []uint64{0, 1, 2}) {
		t.Fatalf("node 2 hosts %v", got)
	}

	// Node 2 restarts exactly the shards it hosted.
	recs[2].halt()
	hosts[2].Close()
	hosts[2] = openHost(t, cfgs[2])
	if got := hosts[2].Hosted(); !slices.Equal(got, []uint64{0, 1, 2}) {
		t.Fatalf("node 2 after restart hosts %v", got)
	}
	if _, p, err := hosts[2].Load(ctx, idIn(t, "grown", 0, shards)); err != nil || string(p) != "via 1" {
		t.Fatalf("node 2 after restart: %q %v", p, err)
	}
	recs[2] = startReconciler(t, hosts[2], &wantP)

	// Phase 2: node 2 is gone for good, node 4 is new: every shard on {1,3,4}.
	// Node 2 leads shard 1 when it goes, so that shard elects a new leader.
	for start := time.Now(); ; {
		if l, _, ok, _ := hosts[2].nh.GetLeaderID(1 + 1); ok && l == 2 {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatal("node 2 never took over shard 1")
		}
		_ = hosts[1].nh.RequestLeaderTransfer(1+1, 2)
		time.Sleep(200 * time.Millisecond)
	}
	recs[2].halt()
	hosts[2].Close()
	delete(hosts, 2)
	hosts[4] = openHost(t, cfgs[4])
	recs[4] = startReconciler(t, hosts[4], &wantP)
	want2 := map[uint64]map[uint64]string{}
	for s := uint64(0); s < shards; s++ {
		want2[s] = set(1, 3, 4)
	}
	wantP.Store(&want2)
	t.Logf("replace node 2 by node 4: converged in %v", waitConverged(t, hosts[1], want2))
	for s := uint64(0); s < shards; s++ {
		id := idIn(t, "grown", s, shards)
		if _, p, err := hosts[4].Load(ctx, id); err != nil || string(p) != "via 1" {
			t.Fatalf("shard %d via node 4: %q %v", s, p, err)
		}
	}
	// Every leader's report agrees: nothing under-replicated.
	under := 0
	for _, h := range hosts {
		rep, err := h.Reconcile(ctx, func(s uint64) map[uint64]string { return want2[s] })
		if err != nil {
			t.Fatal(err)
		}
		under += rep.UnderReplicated
	}
	close(stopW)
	wg.Wait()
	if under != 0 {
		t.Fatalf("%d shards under-replicated after convergence", under)
	}
	for _, h := range hosts {
		for _, si := range h.ShardStatus() {
			if si.UnderReplicated {
				t.Errorf("node %d: shard %d under-replicated: %v", h.cfg.NodeID, si.ID, si.Replicas)
			}
		}
	}
	// The counters: every acknowledged increment is there.
	var total uint64
	for s, id := range counters {
		v, p, err := hosts[3].Load(ctx, id)
		if err != nil || (v > 0 && binary.BigEndian.Uint64(p) != uint64(v)) {
			t.Fatalf("counter %d: (%d, %x, %v)", s, v, p, err)
		}
		total += uint64(v)
	}
	if total < uint64(writes.Load()) || writes.Load() == 0 {
		t.Fatalf("counters total %d, acknowledged increments %d", total, writes.Load())
	}
	t.Logf("writer: %d increments, %d unavailable attempts, longest unavailability %v",
		writes.Load(), unavailable.Load(), time.Duration(longest.Load()))

	// Phase 3: node 1, leader of shard 0, is no longer wanted there: it
	// hands leadership over, is removed, and drops its replica.
	want3 := maps.Clone(want2)
	want3[0] = set(3, 4)
	wantP.Store(&want3)
	start := time.Now()
	for slices.Contains(hosts[1].Hosted(), 0) || !maps.Equal(hosts[3].Shards()[0].Replicas, want3[0]) {
		if time.Since(start) > 50*time.Second {
			t.Fatalf("node 1 still hosts shard 0 (%v); members as node 3 sees them: %v", hosts[1].Hosted(), hosts[3].Shards()[0].Replicas)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("leader leaves shard 0: converged in %v", time.Since(start))
	id := idIn(t, "grown", 0, shards)
	if _, p, err := hosts[4].Load(ctx, id); err != nil || string(p) != "via 1" {
		t.Fatalf("shard 0 via node 4 after node 1 left: %q %v", p, err)
	}
	if _, _, err := hosts[1].Load(ctx, id); !errors.Is(err, ErrNotHosted) {
		t.Fatalf("shard 0 via node 1 after it left: %v", err)
	}
	// Node 1 left in one of two ways. If the removal reached it, it
	// dropped the replica's data, and raft refuses the removed replica
	// for good. If the leader stopped talking to it first (a removed
	// replica may never hear of its removal), it stopped the replica as a
	// stray after RemoveDelay and kept its data: only proof of removal
	// deletes data, and StartShard may bring it back (see Reconcile).
	if hosts[1].nh.HasNodeInfo(1, 1) {
		t.Log("node 1 stopped its replica of shard 0 without hearing of its removal (data kept)")
	} else if err := hosts[1].StartShard(ctx, 0, true, nil); !errors.Is(err, ErrReplicaRemoved) {
		t.Fatalf("node 1 restarting its dropped replica of shard 0: %v", err)
	}
	for _, r := range recs {
		select {
		case <-r.done:
		default:
			r.halt()
		}
	}
}
