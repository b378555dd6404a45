package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/consensus"
	"cairn/internal/cairntest"
	"cairn/internal/peer"
)

// fakeHost is a shardHost over a memory store that hosts the shards in
// hosted (of 4).
type fakeHost struct {
	*memory.Mutable
	hosted     map[uint64]bool
	leaderless bool // its replicas know no leader
	calls      atomic.Int64
}

func (f *fakeHost) HostsShard(s uint64) bool  { return f.hosted[s] }
func (f *fakeHost) LeaderKnown(s uint64) bool { return f.hosted[s] && !f.leaderless }
func (f *fakeHost) NumShards() int            { return 4 }
func (f *fakeHost) Load(ctx context.Context, id blocks.ID) (blocks.Version, []byte, error) {
	f.calls.Add(1)
	return f.Mutable.Load(ctx, id)
}
func (f *fakeHost) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, p []byte) (blocks.Version, error) {
	f.calls.Add(1)
	return f.Mutable.CompareAndSet(ctx, id, want, p)
}

// failingStore fails every call with err, counting them.
type failingStore struct {
	err   error
	calls atomic.Int64
}

func (f *failingStore) Load(context.Context, blocks.ID) (blocks.Version, []byte, error) {
	f.calls.Add(1)
	return 0, nil, f.err
}

func (f *failingStore) CompareAndSet(context.Context, blocks.ID, blocks.Version, []byte) (blocks.Version, error) {
	f.calls.Add(1)
	return 0, f.err
}

// countingStore counts the calls that reach a memory store.
type countingStore struct {
	*memory.Mutable
	calls atomic.Int64
}

func (c *countingStore) Load(ctx context.Context, id blocks.ID) (blocks.Version, []byte, error) {
	c.calls.Add(1)
	return c.Mutable.Load(ctx, id)
}

func (c *countingStore) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, p []byte) (blocks.Version, error) {
	c.calls.Add(1)
	return c.Mutable.CompareAndSet(ctx, id, want, p)
}

var (
	errRemoteNotHosted = fmt.Errorf("test: %w (%w)", peer.ErrNotHosted, blocks.ErrUnavailable)
	errRemoteNotSent   = fmt.Errorf("test: %w (%w)", peer.ErrNotSent, blocks.ErrUnavailable)
	errRemoteUnknown   = fmt.Errorf("test: no quorum in time: %w", blocks.ErrUnavailable)
)

func newTestForwarder(local shardHost, routes ...blocks.MutableStore) *forwarder {
	var rs []mutableRoute
	for i, r := range routes {
		rs = append(rs, mutableRoute{node: fmt.Sprint("n", i), store: r})
	}
	return &forwarder{local: local, routes: func(uint64) []mutableRoute { return rs }, log: slog.New(slog.DiscardHandler)}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestForwarderLocalFirst: a block whose shard this node hosts never
// leaves the node.
func TestForwarderLocalFirst(t *testing.T) {
	local := &fakeHost{Mutable: memory.NewMutable(), hosted: map[uint64]bool{0: true, 1: true, 2: true, 3: true}}
	remote := &countingStore{Mutable: memory.NewMutable()}
	f := newTestForwarder(local, remote)
	ctx := testContext(t)
	id := blocks.NameID("v")
	if v, err := f.CompareAndSet(ctx, id, 0, []byte("a")); err != nil || v != 1 {
		t.Fatalf("CompareAndSet: %d %v", v, err)
	}
	if v, p, err := f.Load(ctx, id); err != nil || v != 1 || string(p) != "a" {
		t.Fatalf("Load: %d %q %v", v, p, err)
	}
	if remote.calls.Load() != 0 || f.forwarded.Load() != 0 {
		t.Fatalf("%d calls forwarded for a hosted shard", remote.calls.Load())
	}
}

// TestForwarderTriesTheNextNode: with the shard hosted elsewhere, calls go
// past nodes that do not host it (or that were never reached) to one that
// does; a conflict there comes back as ErrConflict with the version.
func TestForwarderTriesTheNextNode(t *testing.T) {
	local := &fakeHost{Mutable: memory.NewMutable(), hosted: map[uint64]bool{}}
	notHosted := &failingStore{err: errRemoteNotHosted}
	notSent := &failingStore{err: errRemoteNotSent}
	host := &countingStore{Mutable: memory.NewMutable()}
	f := newTestForwarder(local, notHosted, notSent, host)
	ctx := testContext(t)
	id := blocks.NameID("v")
	if v, err := f.CompareAndSet(ctx, id, 0, []byte("a")); err != nil || v != 1 {
		t.Fatalf("CompareAndSet: %d %v", v, err)
	}
	v, err := f.CompareAndSet(ctx, id, 0, []byte("b"))
	if !errors.Is(err, blocks.ErrConflict) || v != 1 {
		t.Fatalf("stale CompareAndSet: %d %v, want 1 and ErrConflict", v, err)
	}
	if v, p, err := f.Load(ctx, id); err != nil || v != 1 || string(p) != "a" {
		t.Fatalf("Load: %d %q %v", v, p, err)
	}
	if local.calls.Load() != 0 {
		t.Errorf("the local host was called %d times for a shard it does not host", local.calls.Load())
	}
	if host.calls.Load() != 3 || notHosted.calls.Load() != 3 || notSent.calls.Load() != 3 {
		t.Errorf("calls: hosting %d, not hosting %d, not sent %d; want 3 each", host.calls.Load(), notHosted.calls.Load(), notSent.calls.Load())
	}
}

// TestForwarderUnknownOutcome: a CompareAndSet whose outcome is unknown
// (the node took it, no answer) is not made again elsewhere; a Load is.
func TestForwarderUnknownOutcome(t *testing.T) {
	local := &fakeHost{Mutable: memory.NewMutable(), hosted: map[uint64]bool{}}
	unknown := &failingStore{err: errRemoteUnknown}
	host := &countingStore{Mutable: memory.NewMutable()}
	f := newTestForwarder(local, unknown, host)
	ctx := testContext(t)
	id := blocks.NameID("v")
	if _, err := f.CompareAndSet(ctx, id, 0, []byte("a")); !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("CompareAndSet: %v, want ErrUnavailable", err)
	}
	if host.calls.Load() != 0 {
		t.Fatal("a CompareAndSet of unknown outcome was made on a second node")
	}
	if _, _, err := f.Load(ctx, id); err != nil {
		t.Fatalf("Load past an unavailable node: %v", err)
	}
	if host.calls.Load() != 1 {
		t.Fatal("the Load did not go to the next node")
	}
	// Nobody hosts it: unavailable, and nothing changed.
	f = newTestForwarder(local, &failingStore{err: errRemoteNotHosted})
	if _, err := f.CompareAndSet(ctx, id, 0, []byte("a")); !errors.Is(err, blocks.ErrUnavailable) || errors.Is(err, blocks.ErrConflict) {
		t.Fatalf("CompareAndSet with no host: %v", err)
	}
	if _, _, err := f.Load(ctx, id); !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("Load with no host: %v", err)
	}
	if _, err := f.CompareAndSet(ctx, id, 0, make([]byte, consensus.MaxPayload+1)); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("CompareAndSet over the limit: %v", err)
	}
}

// TestForwarderLeaderlessLocalLast: a local replica that knows no leader
// (not yet added to its shard) is tried after the other nodes, and used
// only when none of them hosts the shard.
func TestForwarderLeaderlessLocalLast(t *testing.T) {
	all := map[uint64]bool{0: true, 1: true, 2: true, 3: true}
	local := &fakeHost{Mutable: memory.NewMutable(), hosted: all, leaderless: true}
	host := &countingStore{Mutable: memory.NewMutable()}
	f := newTestForwarder(local, host)
	ctx := testContext(t)
	id := blocks.NameID("v")
	if v, err := f.CompareAndSet(ctx, id, 0, []byte("a")); err != nil || v != 1 {
		t.Fatalf("CompareAndSet: %d %v", v, err)
	}
	if _, _, err := f.Load(ctx, id); err != nil {
		t.Fatal(err)
	}
	if host.calls.Load() != 2 || local.calls.Load() != 0 {
		t.Fatalf("calls: remote %d, leaderless local %d; want 2 and 0", host.calls.Load(), local.calls.Load())
	}
	nobody := &failingStore{err: errRemoteNotHosted}
	f = newTestForwarder(local, nobody)
	if v, err := f.CompareAndSet(ctx, id, 0, []byte("b")); err != nil || v != 1 {
		t.Fatalf("CompareAndSet falling back to the local replica: %d %v", v, err)
	}
	if v, p, err := f.Load(ctx, id); err != nil || v != 1 || string(p) != "b" {
		t.Fatalf("Load falling back to the local replica: %d %q %v", v, p, err)
	}
	if nobody.calls.Load() != 2 || local.calls.Load() != 2 {
		t.Fatalf("calls: remote %d, local %d; want 2 and 2", nobody.calls.Load(), local.calls.Load())
	}
}

func TestMaxMutablePayloadAgrees(t *testing.T) {
	if peer.MaxMutablePayload != consensus.MaxPayload {
		t.Fatalf("peer carries %d-byte payloads, consensus takes %d", peer.MaxMutablePayload, consensus.MaxPayload)
	}
}

// servePeer serves m as the mutable store of a peer server on 127.0.0.1.
func servePeer(t *testing.T, secret []byte, m blocks.MutableStore) string {
	t.Helper()
	return servePeerWith(t, peer.ServerOptions{Holder: memory.New(0), Mutable: m, Secret: secret, NodeID: "server"})
}

// servePeerWith runs a peer server with opts on 127.0.0.1 until the test
// ends and returns its address.
func servePeerWith(t *testing.T, opts peer.ServerOptions) string {
	t.Helper()
	srv, err := peer.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return l.Addr().String()
}

// TestForwardThroughRealConsensus: a node that hosts no shard (an Empty
// consensus host, as a storage-less node runs) reads and changes mutable
// blocks through another node's raft over the peer transport: the
// proposals and linearizable reads happen there, conflicts come back as
// ErrConflict, and a peer that hosts nothing answers not-hosted on the way.
func TestForwardThroughRealConsensus(t *testing.T) {
	ctx := testContext(t)
	a1, a2 := cairntest.FreePort(t), cairntest.FreePort(t)
	remote, err := consensus.Open(ctx, consensus.Config{NodeID: 1, DataDir: filepath.Join(t.TempDir(), "r"), RaftAddress: a1, Shards: 4, Members: map[uint64]string{1: a1}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Close() })
	local, err := consensus.Open(ctx, consensus.Config{NodeID: 2, DataDir: filepath.Join(t.TempDir(), "l"), RaftAddress: a2, Shards: 4, Empty: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close() })
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := remote.Ready(rctx); err != nil {
		t.Fatal(err)
	}

	secret := []byte("forwarding-test-secret-of-32-bytes!")
	servedRemote, servedLocal := &servedMutable{}, &servedMutable{}
	servedRemote.h.Store(remote)
	servedLocal.h.Store(local)
	fc := &forwardClients{secret: secret, self: "frontend", log: slog.New(slog.DiscardHandler), clients: map[string]*peer.Client{}}
	t.Cleanup(fc.close)
	empty := fc.get(servePeer(t, secret, servedLocal)) // hosts nothing: answers not-hosted
	full := fc.get(servePeer(t, secret, servedRemote))
	f := newTestForwarder(local, empty, full)

	for i := 0; i < 8; i++ { // blocks over every shard
		id := blocks.NameID(fmt.Sprint("block-", i))
		if v, p, err := f.Load(ctx, id); err != nil || v != 0 || p != nil {
			t.Fatalf("Load of an absent block: %d %q %v", v, p, err)
		}
		if v, err := f.CompareAndSet(ctx, id, 0, []byte("one")); err != nil || v != 1 {
			t.Fatalf("CompareAndSet: %d %v", v, err)
		}
		if v, err := f.CompareAndSet(ctx, id, 0, []byte("two")); !errors.Is(err, blocks.ErrConflict) || v != 1 {
			t.Fatalf("stale CompareAndSet: %d %v, want 1 and ErrConflict", v, err)
		}
		if v, p, err := f.Load(ctx, id); err != nil || v != 1 || string(p) != "one" {
			t.Fatalf("Load: %d %q %v", v, p, err)
		}
		if v, err := f.CompareAndSet(ctx, id, 1, nil); err != nil || v != 0 {
			t.Fatalf("delete: %d %v", v, err)
		}
	}
	rs, ls := remote.Stats(), local.Stats()
	if rs.Proposals < 24 || rs.Reads < 16 || rs.Conflicts < 8 {
		t.Errorf("remote host: %+v, want the proposals and reads made there", rs)
	}
	if ls.Proposals != 0 || ls.Reads != 0 {
		t.Errorf("the host that hosts nothing proposed or read: %+v", ls)
	}
	// The host itself says not-hosted for what it does not run, and the
	// served wrapper turns that into the transport's not-hosted.
	if _, _, err := local.Load(ctx, blocks.NameID("x")); !errors.Is(err, consensus.ErrNotHosted) {
		t.Fatalf("Load on an empty host: %v, want ErrNotHosted", err)
	}
	if _, err := empty.CompareAndSet(ctx, blocks.NameID("x"), 0, []byte("p")); !errors.Is(err, peer.ErrNotHosted) {
		t.Fatalf("CompareAndSet on a node that hosts nothing: %v, want peer.ErrNotHosted", err)
	}
}

// TestStoragelessNodeCannotStartACluster: a storage-less node's first
// start must join a cluster; alone it could hold nothing.
func TestStoragelessNodeCannotStartACluster(t *testing.T) {
	_, err := Open(testContext(t), Config{DataDir: t.TempDir(), Cluster: &ClusterConfig{Listen: cairntest.FreePort(t), Frontend: true}})
	if err == nil || !strings.Contains(err.Error(), "storage-less") {
		t.Fatalf("Open of a storage-less first node: %v, want a refusal", err)
	}
}
