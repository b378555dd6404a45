package consensus

import (
	"errors"
	"testing"

	"cairn/blocks"
)

// TestHostsShardAndLeaderKnown: what the node's forwarder asks before it
// calls the local host: a host that runs every shard hosts each and knows
// its leader once ready; an empty host (a storage-less node) hosts none,
// knows no leader, and its calls wrap ErrNotHosted (and ErrUnavailable).
func TestHostsShardAndLeaderKnown(t *testing.T) {
	a1, a2 := freeAddr(t), freeAddr(t)
	full := openHost(t, Config{NodeID: 1, DataDir: t.TempDir(), RaftAddress: a1, Shards: 3, Members: map[uint64]string{1: a1}})
	defer full.Close()
	empty := openHost(t, Config{NodeID: 2, DataDir: t.TempDir(), RaftAddress: a2, Shards: 3, Empty: true})
	defer empty.Close()
	ready(t, full, empty)
	for s := uint64(0); s < 3; s++ {
		if !full.HostsShard(s) || !full.LeaderKnown(s) {
			t.Errorf("shard %d: full host: hosts %v, leader known %v", s, full.HostsShard(s), full.LeaderKnown(s))
		}
		if empty.HostsShard(s) || empty.LeaderKnown(s) {
			t.Errorf("shard %d: empty host: hosts %v, leader known %v", s, empty.HostsShard(s), empty.LeaderKnown(s))
		}
	}
	ctx := ctxT(t)
	id := blocks.NameID("b")
	_, _, lerr := empty.Load(ctx, id)
	_, cerr := empty.CompareAndSet(ctx, id, 0, []byte("x"))
	for _, err := range []error{lerr, cerr} {
		if !errors.Is(err, ErrNotHosted) || !errors.Is(err, blocks.ErrUnavailable) {
			t.Errorf("call on an empty host: %v, want ErrNotHosted and ErrUnavailable", err)
		}
	}
	full.Close()
	if full.LeaderKnown(0) {
		t.Error("a closed host knows a leader")
	}
}
