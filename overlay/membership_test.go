package overlay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// waitTimeout bounds every wait for gossip to converge. The tests never
// assert timings; they log them. It is generous for a loaded 2-core machine.
const waitTimeout = 30 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("OVERLAY_DEBUG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testProfile is ProfileLocal, or $OVERLAY_PROFILE (to measure "lan").
func testProfile() string {
	if p := os.Getenv("OVERLAY_PROFILE"); p != "" {
		return p
	}
	return ProfileLocal
}

func mustSecret(t *testing.T) []byte {
	t.Helper()
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testNode(id, zone string, storage bool) Node {
	n := Node{ID: id, Zone: zone, Storage: storage, RaftReplicaID: uint64(len(id)),
		RaftAddr: id + ".raft:1", DataAddr: id + ".data:2"}
	if storage {
		n.Capacity = 1 << 30
	} else {
		n.NBDAddr = id + ".nbd:10809"
	}
	return n
}

// start joins a node on ip (port 0) and closes it at the end of the test.
func start(t *testing.T, n Node, ip string, secret []byte, seeds ...string) *Membership {
	t.Helper()
	return startAt(t, n, ip+":0", secret, seeds...)
}

func startAt(t *testing.T, n Node, bind string, secret []byte, seeds ...string) *Membership {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	m, err := Join(ctx, Config{Self: n, BindAddr: bind, Seeds: seeds, Secret: secret,
		Logger: testLogger(), Profile: testProfile()})
	if err != nil {
		t.Fatalf("Join %s: %v", n.ID, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// waitFor polls cond until it holds or waitTimeout passes, and returns
// how long it took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > waitTimeout {
			t.Fatalf("after %v: %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(begin)
}

func stateOf(m *Membership, id string) (MemberState, bool) {
	for _, st := range m.Members() {
		if st.ID == id {
			return st, true
		}
	}
	return MemberState{}, false
}

// sees reports whether m sees node n in state s with exactly n's metadata.
func sees(m *Membership, n Node, s State) bool {
	st, ok := stateOf(m, n.ID)
	return ok && st.State == s && st.Node == n
}

// cluster starts three nodes on 127.0.0.1, .2 and .3: two storage nodes in
// two zones and one frontend-only node, and waits until all see all.
func cluster(t *testing.T, secret []byte) ([]*Membership, []Node) {
	t.Helper()
	nodes := []Node{testNode("a", "z1", true), testNode("b", "z2", true), testNode("c", "z1", false)}
	a := start(t, nodes[0], "127.0.0.1", secret)
	b := start(t, nodes[1], "127.0.0.2", secret, a.Addr())
	c := start(t, nodes[2], "127.0.0.3", secret, b.Addr())
	ms := []*Membership{a, b, c}
	d := waitFor(t, "all three nodes see each other", func() bool {
		for _, m := range ms {
			for _, n := range nodes {
				if !sees(m, n, Alive) {
					return false
				}
			}
		}
		return true
	})
	t.Logf("3 nodes converged in %v", d)
	return ms, nodes
}

func TestThreeNodesJoin(t *testing.T) {
	ms, nodes := cluster(t, mustSecret(t))
	for _, m := range ms {
		if got := m.Live(); !slices.Equal(got, nodes) {
			t.Errorf("%s: Live() = %+v, want %+v", m.Self().ID, got, nodes)
		}
		members := m.Members()
		if len(members) != 3 {
			t.Errorf("%s: %d members", m.Self().ID, len(members))
		}
		for _, st := range members {
			if st.Since.IsZero() {
				t.Errorf("%s: member %s has no Since", m.Self().ID, st.ID)
			}
		}
		if !strings.HasPrefix(m.Addr(), "127.0.0.") {
			t.Errorf("Addr() = %q", m.Addr())
		}
		for i, st := range members {
			if st.Addr != ms[i].Addr() {
				t.Errorf("%s sees %s at %q, want %q", m.Self().ID, st.ID, st.Addr, ms[i].Addr())
			}
		}
	}
	// Storage flag and zones are carried: c is frontend-only.
	if st, _ := stateOf(ms[0], "c"); st.Storage || st.Zone != "z1" || st.NBDAddr != "c.nbd:10809" {
		t.Errorf("a sees c as %+v", st)
	}

	// UpdateSelf: a capacity change reaches the others as an update event.
	events, cancel := ms[1].Subscribe()
	defer cancel()
	grown := nodes[0]
	grown.Capacity = 2 << 30
	grown.DataAddr = "a.data:3"
	ctx, cancelCtx := context.WithTimeout(context.Background(), waitTimeout)
	defer cancelCtx()
	if err := ms[0].UpdateSelf(ctx, grown); err != nil {
		t.Fatalf("UpdateSelf: %v", err)
	}
	if ms[0].Self() != grown {
		t.Errorf("Self() = %+v after UpdateSelf", ms[0].Self())
	}
	d := waitFor(t, "b and c see a's new capacity", func() bool {
		return sees(ms[1], grown, Alive) && sees(ms[2], grown, Alive) && sees(ms[0], grown, Alive)
	})
	t.Logf("update seen everywhere in %v", d)
	ev := nextEvent(t, events, func(ev Event) bool { return ev.ID == "a" })
	if ev.Kind != EventUpdate || ev.Node != grown || ev.State != Alive {
		t.Errorf("update event: %+v", ev)
	}

	// The ID cannot change; a too-large description is refused and
	// changes nothing.
	if err := ms[0].UpdateSelf(ctx, testNode("zz", "", true)); !errors.Is(err, ErrInvalidNode) {
		t.Errorf("UpdateSelf with another ID: %v", err)
	}
	big := grown
	big.Zone = strings.Repeat("z", MaxFieldLen)
	big.RaftAddr = strings.Repeat("r", MaxFieldLen)
	if err := ms[0].UpdateSelf(ctx, big); !errors.Is(err, ErrMetaTooLarge) {
		t.Errorf("UpdateSelf too large: %v, want ErrMetaTooLarge", err)
	}
	if ms[0].Self() != grown {
		t.Errorf("a refused update changed Self(): %+v", ms[0].Self())
	}
}

// nextEvent reads events until match holds.
func nextEvent(t *testing.T, ch <-chan Event, match func(Event) bool) Event {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("event channel closed")
			}
			if match(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no matching event after %v", waitTimeout)
		}
	}
}

func TestDeadAndRejoin(t *testing.T) {
	secret := mustSecret(t)
	ms, nodes := cluster(t, secret)
	a, b, c := ms[0], ms[1], ms[2]
	events, cancel := a.Subscribe()
	defer cancel()

	// kill -9: no Leave, the sockets just go away.
	addr := c.Addr()
	killed := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	var seenA, seenB time.Duration
	waitFor(t, "a and b see c dead", func() bool {
		if seenA == 0 && sees(a, nodes[2], Dead) {
			seenA = time.Since(killed)
		}
		if seenB == 0 && sees(b, nodes[2], Dead) {
			seenB = time.Since(killed)
		}
		return seenA != 0 && seenB != 0
	})
	t.Logf("failure detection (profile "+testProfile()+", 3 nodes): a saw c dead after %v, b after %v", seenA, seenB)
	ev := nextEvent(t, events, func(ev Event) bool { return ev.ID == "c" })
	if ev.Kind != EventDead || ev.State != Dead || ev.Node != nodes[2] {
		t.Errorf("dead event: %+v", ev)
	}
	if live := a.Live(); len(live) != 2 || live[0].ID != "a" || live[1].ID != "b" {
		t.Errorf("a.Live() after c died: %+v", live)
	}

	// Restart c on the same address with a new description.
	back := nodes[2]
	back.NBDAddr = "c.nbd:10810"
	back.RaftReplicaID = 99
	restarted := time.Now()
	c2 := startAt(t, back, addr, secret, a.Addr(), b.Addr())
	d := waitFor(t, "a and b see c alive again with its new metadata", func() bool {
		return sees(a, back, Alive) && sees(b, back, Alive) && sees(c2, nodes[0], Alive) && sees(c2, nodes[1], Alive)
	})
	t.Logf("rejoin seen everywhere %v after restart (%v after Join returned)", time.Since(restarted), d)
	ev = nextEvent(t, events, func(ev Event) bool { return ev.ID == "c" })
	if ev.Kind != EventJoin || ev.Node != back {
		t.Errorf("rejoin event: %+v", ev)
	}
}

// TestQuickRestart restarts a node faster than failure detection (as a
// supervisor would after kill -9): the others see it alive with its new
// metadata, whether or not they noticed the failure.
func TestQuickRestart(t *testing.T) {
	secret := mustSecret(t)
	ms, nodes := cluster(t, secret)
	a, b, c := ms[0], ms[1], ms[2]
	addr := c.Addr()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	back := nodes[2]
	back.Zone = "z3"
	begin := time.Now()
	c2 := startAt(t, back, addr, secret, a.Addr())
	d := waitFor(t, "a and b see the restarted c with its new metadata", func() bool {
		return sees(a, back, Alive) && sees(b, back, Alive) && sees(c2, nodes[1], Alive)
	})
	t.Logf("quick restart converged in %v (%v after Join returned)", time.Since(begin), d)
	// It stays alive: the old incarnation's failure is refuted.
	time.Sleep(4 * time.Second)
	if !sees(a, back, Alive) || !sees(b, back, Alive) {
		sa, _ := stateOf(a, "c")
		sb, _ := stateOf(b, "c")
		t.Errorf("restarted c: a sees %v, b sees %v", sa.State, sb.State)
	}
}

func TestLeave(t *testing.T) {
	ms, nodes := cluster(t, mustSecret(t))
	a, b, c := ms[0], ms[1], ms[2]
	events, cancel := a.Subscribe()
	defer cancel()
	ctx, cancelCtx := context.WithTimeout(context.Background(), waitTimeout)
	defer cancelCtx()
	begin := time.Now()
	if err := c.Leave(ctx); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	took := time.Since(begin)
	if err := c.Leave(ctx); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	waitFor(t, "a and b see c left", func() bool {
		return sees(a, nodes[2], Left) && sees(b, nodes[2], Left)
	})
	t.Logf("graceful leave seen everywhere %v after Leave was called (Leave returned after %v)", time.Since(begin), took)
	ev := nextEvent(t, events, func(ev Event) bool { return ev.ID == "c" })
	if ev.Kind != EventLeave || ev.State != Left {
		t.Errorf("leave event: %+v", ev)
	}
	if err := c.UpdateSelf(ctx, nodes[2]); !errors.Is(err, ErrClosed) {
		t.Errorf("UpdateSelf after Leave: %v, want ErrClosed", err)
	}
	if st, _ := stateOf(c, "c"); st.State != Left {
		t.Errorf("c sees itself %v", st.State)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Leave(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Leave after Close: %v, want ErrClosed", err)
	}
	// Left stays Left after the process is gone.
	time.Sleep(2 * time.Second)
	if !sees(a, nodes[2], Left) || !sees(b, nodes[2], Left) {
		t.Errorf("c no longer Left after Close")
	}
}

func TestStrangerCannotJoin(t *testing.T) {
	secret := mustSecret(t)
	a := start(t, testNode("a", "z1", true), "127.0.0.1", secret)
	b := start(t, testNode("b", "z1", true), "127.0.0.1", secret, a.Addr())
	waitFor(t, "a and b see each other", func() bool { return len(a.Live()) == 2 && len(b.Live()) == 2 })

	// A Cairn node with another cluster's secret: Join fails.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err := Join(ctx, Config{Self: testNode("stranger", "", true), BindAddr: "127.0.0.1:0",
		Seeds: []string{a.Addr(), b.Addr()}, Secret: mustSecret(t), Profile: ProfileLocal, Logger: testLogger()})
	if !errors.Is(err, ErrJoin) {
		t.Fatalf("Join with the wrong secret: %v, want ErrJoin", err)
	}
	t.Logf("wrong secret: %v", err)

	// Raw memberlist peers, one with a wrong key and one with none: they
	// cannot join and never learn a member.
	for _, key := range [][]byte{mustSecret(t), nil} {
		name := fmt.Sprintf("raw-key-%d", len(key))
		mc := memberlist.DefaultLocalConfig()
		mc.Name = name
		mc.BindAddr, mc.BindPort = "127.0.0.1", 0
		mc.SecretKey = key
		mc.Logger = nil
		mc.LogOutput = discard{}
		meta, _ := EncodeMeta(testNode(name, "", true))
		mc.Delegate = rawMeta(meta)
		ml, err := memberlist.Create(mc)
		if err != nil {
			t.Fatal(err)
		}
		defer ml.Shutdown()
		n, err := ml.Join([]string{a.Addr(), b.Addr()})
		if err == nil || n != 0 {
			t.Errorf("%s: Join contacted %d seeds, err %v; want an error", name, n, err)
		}
		defer func() {
			if got := ml.Members(); len(got) != 1 || got[0].Name != name {
				names := []string{}
				for _, m := range got {
					names = append(names, m.Name)
				}
				t.Errorf("%s learned members %v", name, names)
			}
		}()
	}

	// The members never list a stranger, even after gossip rounds.
	for range 10 {
		for _, m := range []*Membership{a, b} {
			for _, st := range m.Members() {
				if st.ID != "a" && st.ID != "b" {
					t.Fatalf("%s lists stranger %q (%v)", m.Self().ID, st.ID, st.State)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

type rawMeta []byte

func (r rawMeta) NodeMeta(int) []byte                { return r }
func (rawMeta) NotifyMsg([]byte)                     {}
func (rawMeta) GetBroadcasts(int, int) [][]byte      { return nil }
func (rawMeta) LocalState(bool) []byte               { return nil }
func (rawMeta) MergeRemoteState(buf []byte, ok bool) {}

func TestSubscribeSlowReader(t *testing.T) {
	secret := mustSecret(t)
	a := start(t, testNode("a", "z1", true), "127.0.0.1", secret)
	stalled, cancelStalled := a.Subscribe() // never read until the end
	defer cancelStalled()
	events, cancel := a.Subscribe()
	defer cancel()

	b := start(t, testNode("b", "z1", true), "127.0.0.1", secret, a.Addr())
	c := start(t, testNode("c", "z2", false), "127.0.0.1", secret, a.Addr())
	// b's and c's first events, in whichever order a learns of them
	// (waiting for b's first would skip a c event that came before it).
	first := map[string]Event{}
	for len(first) < 2 {
		ev := nextEvent(t, events, func(ev Event) bool {
			_, seen := first[ev.ID]
			return (ev.ID == "b" || ev.ID == "c") && !seen
		})
		first[ev.ID] = ev
		if ev.Kind != EventJoin {
			t.Errorf("first event of %s: %v", ev.ID, ev.Kind)
		}
	}
	// Many updates while one subscriber is stalled: gossip and the other
	// subscriber keep going.
	ctx, cancelCtx := context.WithTimeout(context.Background(), waitTimeout)
	defer cancelCtx()
	bn := b.Self()
	for i := range 20 {
		bn.Capacity = int64(i+1) << 30
		if err := b.UpdateSelf(ctx, bn); err != nil {
			t.Fatalf("UpdateSelf %d: %v", i, err)
		}
	}
	nextEvent(t, events, func(ev Event) bool { return ev.ID == "b" && ev.Capacity == bn.Capacity })
	waitFor(t, "a sees b's last capacity", func() bool { return sees(a, bn, Alive) })
	c.Close()
	ev := nextEvent(t, events, func(ev Event) bool { return ev.ID == "c" })
	if ev.Kind != EventDead {
		t.Errorf("c closed: event %v", ev.Kind)
	}

	// The stalled subscriber holds at most one event per member (plus the
	// one its goroutine is already offering), the last carrying the newest
	// state. c's death may reach it a moment after the draining below has
	// begun and let c's join through first: so at most 4 of the 23 events
	// (22 for b, join and death for c) come through.
	var got []Event
	last := map[string]Event{}
drain:
	for {
		select {
		case ev := <-stalled:
			got = append(got, ev)
			last[ev.ID] = ev
		case <-time.After(500 * time.Millisecond):
			break drain
		}
	}
	if len(got) > 4 {
		t.Errorf("stalled subscriber got %d events, want at most 4 (coalesced): %+v", len(got), got)
	}
	if ev := last["b"]; ev.Capacity != bn.Capacity || ev.State != Alive {
		t.Errorf("stalled subscriber's last event for b: %+v", ev)
	}
	if ev := last["c"]; ev.Kind != EventDead {
		t.Errorf("stalled subscriber's last event for c: %+v", ev)
	}

	// Cancel closes the channel; Close closes the rest.
	cancel()
	cancel()
	for range events {
	}
	a.Close()
	for range stalled {
	}
	late, _ := a.Subscribe()
	if _, ok := <-late; ok {
		t.Error("Subscribe after Close delivered an event")
	}
}

func TestSubscriberCoalesces(t *testing.T) {
	s := &subscriber{pending: map[string]Event{}, wake: make(chan struct{}, 1), done: make(chan struct{}), out: make(chan Event)}
	ev := func(kind EventKind, id string, capacity int64) Event {
		return Event{Kind: kind, MemberState: MemberState{Node: Node{ID: id, Capacity: capacity}, State: Alive}}
	}
	s.push(ev(EventJoin, "x", 0))
	for i := range 1000 {
		s.push(ev(EventUpdate, "x", int64(i)))
		s.push(ev(EventUpdate, "y", int64(i)))
	}
	s.push(ev(EventDead, "z", 0))
	s.push(ev(EventJoin, "z", 7))
	if len(s.pending) != 3 || len(s.order) != 3 {
		t.Fatalf("pending %d, order %d; want 3", len(s.pending), len(s.order))
	}
	go s.run()
	want := []Event{ev(EventJoin, "x", 999), ev(EventUpdate, "y", 999), ev(EventJoin, "z", 7)}
	for _, w := range want {
		if got := <-s.out; got != w {
			t.Errorf("got %+v, want %+v", got, w)
		}
	}
	s.stop()
	if _, ok := <-s.out; ok {
		t.Error("channel not closed by stop")
	}
}

func TestJoinConfigErrors(t *testing.T) {
	ctx := context.Background()
	good := Config{Self: testNode("a", "", true), BindAddr: "127.0.0.1:0", Secret: mustSecret(t)}
	long := strings.Repeat("x", MaxFieldLen)
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want error
	}{
		{"no secret", func(c *Config) { c.Secret = nil }, ErrConfig},
		{"short secret", func(c *Config) { c.Secret = c.Secret[:16] }, ErrConfig},
		{"unknown profile", func(c *Config) { c.Profile = "wan" }, ErrConfig},
		{"no port", func(c *Config) { c.BindAddr = "127.0.0.1" }, ErrConfig},
		{"host name", func(c *Config) { c.BindAddr = "localhost:0" }, ErrConfig},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "x" }, ErrConfig},
		{"bad id", func(c *Config) { c.Self.ID = "a b" }, ErrInvalidNode},
		{"meta too large", func(c *Config) { c.Self.Zone, c.Self.RaftAddr, c.Self.DataAddr = long, long, long }, ErrMetaTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			m, err := Join(ctx, cfg)
			if !errors.Is(err, tc.want) {
				if m != nil {
					m.Close()
				}
				t.Fatalf("Join: %v, want %v", err, tc.want)
			}
		})
	}
	// No seed answers: ErrJoin, and the socket is released.
	cfg := good
	cfg.Profile = ProfileLocal
	cfg.Seeds = []string{"127.0.0.1:1"}
	if _, err := Join(ctx, cfg); !errors.Is(err, ErrJoin) {
		t.Fatalf("Join with a dead seed: %v, want ErrJoin", err)
	}
	// A cancelled context stops Join.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Join(cctx, good); !errors.Is(err, context.Canceled) {
		t.Fatalf("Join with a cancelled ctx: %v", err)
	}
}

func TestLogBridgeSuspect(t *testing.T) {
	secret := mustSecret(t)
	a := start(t, testNode("a", "", true), "127.0.0.1", secret)
	start(t, testNode("b", "", true), "127.0.0.1", secret, a.Addr())
	waitFor(t, "a sees b", func() bool { return len(a.Live()) == 2 })
	bridge := logBridge{a}
	fmt.Fprintf(bridge, "[INFO] memberlist: Suspect b has failed, no acks received\n")
	if st, _ := stateOf(a, "b"); st.State != Suspect {
		t.Fatalf("after the suspect log line, b is %v", st.State)
	}
	if len(a.Live()) != 2 {
		t.Errorf("a suspect member is not live")
	}
	// The next acknowledged probe clears the suspicion.
	waitFor(t, "a's next probe of b clears the suspicion", func() bool {
		st, _ := stateOf(a, "b")
		return st.State == Alive
	})
}

// TestRestartOnNewAddress restarts a killed node on another port: once its
// old address is declared dead, the ID is reclaimed by the new address.
func TestRestartOnNewAddress(t *testing.T) {
	secret := mustSecret(t)
	ms, nodes := cluster(t, secret)
	a, b, c := ms[0], ms[1], ms[2]
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	c2 := start(t, nodes[2], "127.0.0.4", secret, a.Addr())
	at := func(m *Membership) bool {
		st, ok := stateOf(m, "c")
		return ok && st.State == Alive && st.Addr == c2.Addr()
	}
	waitFor(t, "a and b see c at its new address", func() bool { return at(a) && at(b) && sees(c2, nodes[0], Alive) })
	t.Logf("restart on a new address: alive everywhere after %v", time.Since(begin))
}

// TestNoCompression: Cairn's gossip does not LZW-compress its messages
// (small, encrypted ones, where compression costs CPU and saves nearly
// nothing), in either profile.
func TestNoCompression(t *testing.T) {
	for _, profile := range []string{ProfileLAN, ProfileLocal} {
		mc, err := memberlistConfig(Config{Self: testNode("a", "", true), BindAddr: "127.0.0.1:0", Secret: mustSecret(t), Profile: profile})
		if err != nil {
			t.Fatal(err)
		}
		if mc.EnableCompression {
			t.Errorf("profile %q: memberlist compression is on", profile)
		}
	}
}

// TestCompressingPeerInteroperates: a peer that still compresses its
// messages (memberlist's default, as Cairn nodes did before) joins a
// Cairn node that does not, and each sees the other alive: both
// directions of the gossip are understood.
func TestCompressingPeerInteroperates(t *testing.T) {
	secret := mustSecret(t)
	a := start(t, testNode("a", "z1", true), "127.0.0.1", secret)
	mc := memberlist.DefaultLocalConfig()
	mc.Name = "old"
	mc.BindAddr, mc.BindPort = "127.0.0.1", 0
	mc.SecretKey = secret
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	mc.EnableCompression = true
	mc.Logger = nil
	mc.LogOutput = discard{}
	meta, _ := EncodeMeta(testNode("old", "z1", true))
	mc.Delegate = rawMeta(meta)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	defer ml.Shutdown()
	if n, err := ml.Join([]string{a.Addr()}); err != nil || n != 1 {
		t.Fatalf("compressing peer: Join contacted %d, err %v", n, err)
	}
	waitFor(t, "a sees the compressing peer alive, and it sees a", func() bool {
		_, ok := stateOf(a, "old")
		return ok && len(a.Live()) == 2 && ml.NumMembers() == 2
	})
	// Probes in both directions keep succeeding for a few rounds.
	time.Sleep(3 * time.Second)
	if len(a.Live()) != 2 {
		t.Fatalf("a lost the compressing peer: live %v", a.Live())
	}
	for _, m := range ml.Members() {
		if m.State != memberlist.StateAlive {
			t.Fatalf("the compressing peer sees %s as %v", m.Name, m.State)
		}
	}
}
