package consensus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"cairn/blocks"
)

// testLogger shows warnings and errors only (CAIRN_TEST_DEBUG=1: everything).
func testLogger() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("CAIRN_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func openHost(t testing.TB, cfg Config) *Host {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	if cfg.RTTMillisecond == 0 {
		cfg.RTTMillisecond = 50
	}
	h, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func ready(t testing.TB, hs ...*Host) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for _, h := range hs {
		if err := h.Ready(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSingleHost(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	cfg := Config{NodeID: 1, DataDir: dir, RaftAddress: addr, Shards: 4, Members: map[uint64]string{1: addr}}
	start := time.Now()
	h := openHost(t, cfg)
	ready(t, h)
	t.Logf("one host, %d shards: ready in %v", cfg.Shards, time.Since(start))
	ctx := ctxT(t)

	id := blocks.NameID("table")
	steps := []struct {
		name    string
		want    blocks.Version
		payload []byte
		ver     blocks.Version
		err     error
	}{
		{"create", 0, []byte("one"), 1, nil},
		{"create again", 0, []byte("x"), 1, blocks.ErrConflict},
		{"stale update", 2, []byte("x"), 1, blocks.ErrConflict},
		{"update", 1, []byte("two"), 2, nil},
		{"empty payload", 2, []byte{}, 3, nil},
		{"delete stale", 2, nil, 3, blocks.ErrConflict},
		{"delete", 3, nil, 0, nil},
		{"delete absent", 0, nil, 0, nil},
		{"recreate", 0, []byte("three"), 1, nil},
	}
	var cur []byte
	for _, s := range steps {
		ver, err := h.CompareAndSet(ctx, id, s.want, s.payload)
		if !errors.Is(err, s.err) || (s.err == nil && err != nil) || ver != s.ver {
			t.Fatalf("%s: got (%d, %v), want (%d, %v)", s.name, ver, err, s.ver, s.err)
		}
		if err == nil {
			cur = s.payload
		}
		v, p, err := h.Load(ctx, id)
		if err != nil || v != map[bool]blocks.Version{true: s.ver, false: ver}[err == nil] || !bytes.Equal(p, cur) || (cur == nil) != (p == nil) {
			t.Fatalf("%s: load got (%d, %q, %v), want (%d, %q)", s.name, v, p, err, ver, cur)
		}
	}

	if v, p, err := h.Load(ctx, blocks.NameID("absent")); v != 0 || p != nil || err != nil {
		t.Fatalf("absent: (%d, %q, %v)", v, p, err)
	}
	if _, err := h.CompareAndSet(ctx, blocks.NameID("big"), 0, make([]byte, MaxPayload+1)); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if v, err := h.CompareAndSet(ctx, blocks.NameID("max"), 0, make([]byte, MaxPayload)); err != nil || v != 1 {
		t.Fatalf("max payload: %d %v", v, err)
	}

	// Concurrent CAS on one ID: exactly one winner per version.
	race := blocks.NameID("race")
	const workers, rounds = 8, 5
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := h.CompareAndSet(ctx, race, blocks.Version(r), fmt.Appendf(nil, "r%d w%d", r, w))
				switch {
				case err == nil:
					if v != blocks.Version(r+1) {
						t.Errorf("round %d: winner got version %d", r, v)
					}
					mu.Lock()
					wins++
					mu.Unlock()
				case !errors.Is(err, blocks.ErrConflict):
					t.Errorf("round %d: %v", r, err)
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("round %d: %d winners", r, wins)
		}
	}
	st := h.Stats()
	if st.Proposals < uint64(len(steps)+rounds*workers) || st.Reads == 0 || st.Conflicts == 0 {
		t.Fatalf("stats: %+v", st)
	}
	infos := h.Shards()
	if len(infos) != 4 || !infos[0].LeaderKnown || infos[0].LeaderID != 1 || infos[0].Replicas[1] != addr {
		t.Fatalf("shards: %+v", infos)
	}

	// Survives close and reopen.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Load(ctx, id); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("load after close: %v", err)
	}
	if _, err := h.CompareAndSet(ctx, id, 1, []byte("x")); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("cas after close: %v", err)
	}
	cfg.Shards = 8
	if _, err := Open(ctx, cfg); err == nil {
		t.Fatal("reopen with a different shard count succeeded")
	}
	cfg.Shards = 4
	h = openHost(t, cfg)
	defer h.Close()
	if v, p, err := h.Load(ctx, id); v != 1 || string(p) != "three" || err != nil {
		t.Fatalf("after reopen: (%d, %q, %v)", v, p, err)
	}
	if v, p, err := h.Load(ctx, race); v != rounds || err != nil || !bytes.HasPrefix(p, fmt.Appendf(nil, "r%d", rounds-1)) {
		t.Fatalf("race after reopen: (%d, %q, %v)", v, p, err)
	}
}

// casRetry sets id to payload through h, retrying while a quorum re-forms.
// An ErrUnavailable proposal may have committed, so it re-reads first.
func casRetry(t *testing.T, h *Host, id blocks.ID, payload []byte) blocks.Version {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, p, err := h.Load(ctx, id)
		if err == nil && bytes.Equal(p, payload) {
			cancel()
			return v
		}
		if err == nil {
			v, err = h.CompareAndSet(ctx, id, v, payload)
		}
		cancel()
		if err == nil {
			return v
		}
		if !errors.Is(err, blocks.ErrUnavailable) && !errors.Is(err, blocks.ErrConflict) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("cas %v: still failing: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestThreeHosts(t *testing.T) {
	const n = 3
	members := map[uint64]string{}
	cfgs := make([]Config, n)
	for i := range cfgs {
		addr := freeAddr(t)
		members[uint64(i+1)] = addr
		cfgs[i] = Config{NodeID: uint64(i + 1), DataDir: filepath.Join(t.TempDir(), fmt.Sprint(i)), RaftAddress: addr,
			Shards: 4, Members: members, SnapshotEntries: 20}
	}
	hs := make([]*Host, n)
	var wg sync.WaitGroup
	for i := range hs {
		wg.Add(1)
		go func() { defer wg.Done(); hs[i] = openHost(t, cfgs[i]) }()
	}
	wg.Wait()
	for _, h := range hs {
		if h == nil {
			t.FailNow()
		}
		defer h.Close()
	}
	ready(t, hs...)
	ctx := ctxT(t)

	id := blocks.NameID("catalogue")
	if v, err := hs[0].CompareAndSet(ctx, id, 0, []byte("from 1")); err != nil || v != 1 {
		t.Fatalf("cas via host 1: %d %v", v, err)
	}
	for i := 1; i < n; i++ {
		if v, p, err := hs[i].Load(ctx, id); err != nil || v != 1 || string(p) != "from 1" {
			t.Fatalf("load via host %d: (%d, %q, %v)", i+1, v, p, err)
		}
	}
	for _, si := range hs[1].Shards() {
		if len(si.Replicas) != n {
			t.Fatalf("shard %d: replicas %v", si.ID, si.Replicas)
		}
	}

	// One host down: the other two still form a quorum. Enough proposals
	// go through that the raft log is compacted past host 3's position.
	hs[2].Close()
	var last []byte
	for i := 0; i < 100; i++ {
		last = fmt.Appendf(nil, "round %d", i)
		casRetry(t, hs[i%2], blocks.NameID(fmt.Sprint("k", i%8)), last)
	}
	casRetry(t, hs[1], id, []byte("from 2"))

	// Host 3 comes back and catches up (from a snapshot: its log was compacted).
	hs[2] = openHost(t, cfgs[2])
	defer hs[2].Close()
	rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		v, p, err := hs[2].Load(rctx, blocks.NameID("k3"))
		if err == nil {
			if string(p) != "round 99" || v == 0 {
				t.Fatalf("host 3 after restart: (%d, %q)", v, p)
			}
			break
		}
		if !errors.Is(err, blocks.ErrUnavailable) || rctx.Err() != nil {
			t.Fatalf("host 3 after restart: %v", err)
		}
	}
	if _, p, err := hs[2].Load(rctx, id); err != nil || string(p) != "from 2" {
		t.Fatalf("host 3 catalogue: %q %v", p, err)
	}
	if st := hs[2].Stats(); st.SnapshotsRecovered == 0 {
		t.Errorf("host 3 caught up without a snapshot: %+v", st)
	}

	// Two hosts down: no quorum. The call returns ErrUnavailable at its deadline.
	hs[1].Close()
	hs[2].Close()
	short, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	start := time.Now()
	_, err := hs[0].CompareAndSet(short, id, 2, []byte("no quorum"))
	if !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("cas without quorum: %v", err)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("cas without quorum took %v", el)
	}
	if _, _, err := hs[0].Load(short, id); !errors.Is(err, blocks.ErrUnavailable) {
		t.Fatalf("load without quorum: %v", err)
	}
	t.Logf("no-quorum error: %v", err)
}

func TestConfigErrors(t *testing.T) {
	addr := "127.0.0.1:1"
	dir := t.TempDir()
	for name, cfg := range map[string]Config{
		"no node":      {DataDir: dir, RaftAddress: addr, Shards: 4, Members: map[uint64]string{1: addr}},
		"no dir":       {NodeID: 1, RaftAddress: addr, Shards: 4, Members: map[uint64]string{1: addr}},
		"no shards":    {NodeID: 1, DataDir: dir, RaftAddress: addr, Members: map[uint64]string{1: addr}},
		"not a member": {NodeID: 2, DataDir: dir, RaftAddress: addr, Shards: 4, Members: map[uint64]string{1: addr}},
		"wrong addr":   {NodeID: 1, DataDir: dir, RaftAddress: addr, Shards: 4, Members: map[uint64]string{1: "127.0.0.1:2"}},
		"fast rtt":     {NodeID: 1, DataDir: dir, RaftAddress: addr, Shards: 4, Members: map[uint64]string{1: addr}, RTTMillisecond: 5},
	} {
		if _, err := Open(context.Background(), cfg); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

func TestBridgeLogsIdempotent(t *testing.T) {
	BridgeLogs(nil)
	BridgeLogs(testLogger())
}

func TestJoinAndRemove(t *testing.T) {
	a1, a2 := freeAddr(t), freeAddr(t)
	h1 := openHost(t, Config{NodeID: 1, DataDir: t.TempDir(), RaftAddress: a1, Shards: 2, Members: map[uint64]string{1: a1}})
	defer h1.Close()
	ready(t, h1)
	ctx := ctxT(t)
	id := blocks.NameID("before join")
	if _, err := h1.CompareAndSet(ctx, id, 0, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	for s := uint64(0); s < 2; s++ {
		if err := h1.AddReplica(ctx, s, 2, a2); err != nil {
			t.Fatal(err)
		}
	}
	if err := h1.AddReplica(ctx, 5, 2, a2); err == nil {
		t.Fatal("AddReplica accepted shard 5 of 2")
	}
	h2 := openHost(t, Config{NodeID: 2, DataDir: t.TempDir(), RaftAddress: a2, Shards: 2, Join: true})
	defer h2.Close()
	if v, p, err := h2.Load(ctx, id); err != nil || v != 1 || string(p) != "v1" {
		t.Fatalf("load via joined host: (%d, %q, %v)", v, p, err)
	}
	if _, err := h2.CompareAndSet(ctx, id, 1, []byte("v2")); err != nil {
		t.Fatal(err)
	}
	for _, si := range h1.Shards() {
		if len(si.Replicas) != 2 {
			t.Fatalf("shard %d after join: %v", si.ID, si.Replicas)
		}
	}
	for s := uint64(0); s < 2; s++ {
		if err := h1.RemoveReplica(ctx, s, 2); err != nil {
			t.Fatal(err)
		}
	}
	h2.Close()
	// Node 1 alone is a quorum again.
	if v, err := h1.CompareAndSet(ctx, id, 2, []byte("v3")); err != nil || v != 3 {
		t.Fatalf("cas after removal: %d %v", v, err)
	}
}
