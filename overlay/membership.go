// Package overlay is Cairn's membership layer: every node knows every node,
// by gossip (SWIM, through hashicorp/memberlist), and learns within seconds
// when one fails, leaves, joins or changes its description.
//
// A node [Join]s with its own [Node] description (ID, zone, addresses,
// capacity, storage flag), a gossip address, a few seed addresses and the
// cluster secret. The secret (32 bytes, see [NewSecret] and
// [LoadOrCreateSecret]) is memberlist's AES-256-GCM key: every gossip packet
// and stream is encrypted and authenticated with it, and unencrypted
// traffic is refused, so a process without the secret can neither join nor
// read who the members are. (TLS and per-node passports can later replace
// the shared key behind memberlist's Transport interface without changing
// this package's API.)
//
// The membership view ([Membership.Members], [Membership.Live]) and the
// change events ([Membership.Subscribe]) are a liveness hint for placement
// and self-healing. They are eventually consistent and may briefly differ
// between nodes; decisions that must not diverge (who holds a shard's
// lease, which write won) are taken by consensus, not here.
//
// # Failure detection timings
//
// memberlist probes one member per ProbeInterval (round robin), waits
// ProbeTimeout for a direct ack and then asks others to probe indirectly;
// a member that fails a probe becomes suspect, and is declared dead when
// the suspicion timeout expires without a refutation. The suspicion timeout
// is SuspicionMult × max(1, log10(n)) × ProbeInterval, stretched up to
// SuspicionMaxTimeoutMult times when too few other members confirm the
// suspicion (memberlist expects SuspicionMult-2 confirmations, or none when
// the cluster has fewer than SuspicionMult members).
//
//	profile  ProbeInterval  ProbeTimeout  SuspicionMult  MaxTimeoutMult  suspicion (n<10)
//	"lan"    1 s            500 ms        4              6               4 s .. 24 s
//	"local"  500 ms         250 ms        4              3               2 s .. 6 s
//
// "lan" is memberlist's DefaultLANConfig. "local" is DefaultLocalConfig
// (for many processes on one machine) with a faster probe and suspicion,
// so that a killed node is declared dead within about 5 s even on a loaded
// machine; memberlist's awareness backs the probe off when the local node
// itself is slow, which keeps false suspicions rare. Measured on a 2-core
// machine, 3 nodes on 127.0.0.x, one closed without Leave (as kill -9):
// both survivors saw it Dead after 2.9 s with "local" (5 runs, 2.896 s to
// 2.902 s, -race) and 5.8 s with "lan" (3 runs). A graceful Leave is seen
// as Left in about 0.2 s; a restarted node is Alive again everywhere
// about 0.1 s after its Join returns.
//
// A node that restarts on a new address while peers still hold its ID at
// the old one is refused by them until the old address is declared dead;
// it then keeps re-announcing itself so they take the new address at once
// (measured: alive everywhere 4 s after the restart, instead of waiting
// up to 25 s for memberlist's next push/pull).
//
// # Left and dead
//
// memberlist reports a graceful leave and a failure the same way. To tell
// them apart, [Membership.Leave] first gossips a "leaving" flag in the
// node's metadata and only then leaves, so peers that saw the flag record
// the node as [Left], and all others as [Dead]. A node that is closed
// without Leave (or killed) is [Dead] to its peers.
//
// # Suspect
//
// memberlist v0.7.0 does not expose a member's suspicion through its API.
// [Suspect] is therefore a local hint: a member is Suspect on this node
// when this node's own probe of it failed (memberlist logs it) and no later
// probe has been acknowledged. Other nodes may still show it Alive. Suspect
// members count as live.
package overlay

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Errors of a Membership. Test them with errors.Is.
var (
	// ErrJoin: no seed could be reached, or none accepted this node (a
	// wrong or missing cluster secret looks the same as no answer).
	ErrJoin = errors.New("overlay: could not join the cluster")
	// ErrClosed: the Membership was closed, or has left the cluster.
	ErrClosed = errors.New("overlay: membership closed")
	// ErrConfig: a Config that cannot be used.
	ErrConfig = errors.New("overlay: invalid config")
)

// Profiles name a set of gossip timings; see the package documentation.
const (
	// ProfileLAN is for nodes on separate machines of one network
	// (memberlist's DefaultLANConfig). It is the default.
	ProfileLAN = "lan"
	// ProfileLocal is for nodes sharing one machine (tests, demos):
	// faster probes, a killed node declared dead within about 5 s.
	ProfileLocal = "local"
)

// defaultTimeout bounds UpdateSelf and Leave when ctx has no deadline.
const defaultTimeout = 5 * time.Second

// Config configures [Join].
type Config struct {
	// Self is this node's description; Self.ID is its stable identity.
	Self Node
	// BindAddr is the gossip address, "ip:port" (UDP and TCP on the same
	// port). Port 0 picks a free port; see [Membership.Addr]. The host
	// must be an IP address; "" or 0.0.0.0 binds every interface.
	BindAddr string
	// AdvertiseAddr, if set, is the "ip:port" that peers use to reach this
	// node (behind NAT, or when BindAddr is 0.0.0.0). Default: the bound
	// address.
	AdvertiseAddr string
	// Seeds are gossip addresses ("host:port") of existing members. Empty
	// starts a new cluster. Join succeeds if any seed accepts this node.
	Seeds []string
	// Secret is the cluster secret, SecretSize bytes (see
	// [LoadOrCreateSecret]). Required. Join copies it.
	Secret []byte
	// Logger receives this package's logs and memberlist's, the latter at
	// debug level. Nil discards them.
	Logger *slog.Logger
	// Profile selects the gossip timings: ProfileLAN ("" too) or
	// ProfileLocal.
	Profile string
}

// State is a member's state as seen by this node.
type State int

// Member states.
const (
	// Alive: the member answers probes.
	Alive State = iota + 1
	// Suspect: this node's last probe of the member failed; it is not yet
	// declared dead (a local hint; see the package documentation).
	Suspect
	// Dead: the member failed (crash, kill, partition) and did not refute
	// it. It may come back with the same ID.
	Dead
	// Left: the member left gracefully ([Membership.Leave]).
	Left
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	case Left:
		return "left"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// MemberState is one member as seen by this node.
type MemberState struct {
	Node
	// State is the member's current state.
	State State
	// Since is when this node saw the member enter State.
	Since time.Time
	// Addr is the member's gossip address ("ip:port"), usable as a seed.
	Addr string
}

// EventKind says what changed about a member.
type EventKind int

// Event kinds.
const (
	// EventJoin: a member appeared, or came back after being dead or left.
	EventJoin EventKind = iota + 1
	// EventUpdate: a live member changed its description (UpdateSelf).
	EventUpdate
	// EventLeave: a member left gracefully (its state is Left).
	EventLeave
	// EventDead: a member was declared dead (its state is Dead).
	EventDead
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventDead:
		return "dead"
	}
	return "event(" + strconv.Itoa(int(k)) + ")"
}

// Event is a change of one member. The embedded MemberState is the
// member's state after the change (for a dead or left member, its last
// known description).
type Event struct {
	Kind EventKind
	MemberState
}

// member is this node's record of one member.
type member struct {
	st MemberState
}

// Membership is this node's live view of the cluster. Its methods are safe
// for concurrent use. Close it when done.
type Membership struct {
	log    *slog.Logger
	ml     *memberlist.Memberlist
	selfID string
	addr   string

	meta atomic.Pointer[[]byte] // this node's encoded metadata, read by memberlist

	// opMu serializes UpdateSelf, Leave, re-announcements and Close, so
	// memberlist never sees a Leave or an update after its Shutdown.
	opMu sync.Mutex

	// conflict is signalled when peers hold this node's ID at another
	// address (an earlier run of it, not yet declared dead); see
	// reannounceLoop.
	conflict chan struct{}
	stopc    chan struct{} // closed by Close: stops reannounceLoop
	stopOnce sync.Once
	loops    sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	self    Node
	members map[string]*member
	subs    map[*subscriber]struct{}
	left    bool
	closed  bool
}

// Join starts this node's gossip on cfg.BindAddr and, if cfg.Seeds is not
// empty, joins the cluster through them. It returns once the node is a
// member: with seeds, once at least one seed accepted it (and this node has
// its member list); without, at once (a new cluster of one). If ctx ends
// first, or no seed accepts it, Join stops the node and returns an error
// wrapping ctx.Err() or [ErrJoin]. Join makes one attempt over all seeds;
// callers that want to wait for seeds to come up retry.
//
// Errors wrap [ErrConfig], [ErrInvalidNode], [ErrMetaTooLarge], [ErrJoin],
// or the socket error.
func Join(ctx context.Context, cfg Config) (*Membership, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mc, err := memberlistConfig(cfg)
	if err != nil {
		return nil, err
	}
	metaBytes, err := EncodeMeta(cfg.Self)
	if err != nil {
		return nil, err
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	m := &Membership{
		log:      lg.With("node", cfg.Self.ID),
		selfID:   cfg.Self.ID,
		self:     cfg.Self,
		members:  make(map[string]*member),
		subs:     make(map[*subscriber]struct{}),
		conflict: make(chan struct{}, 1),
		stopc:    make(chan struct{}),
	}
	m.meta.Store(&metaBytes)
	d := delegate{m}
	mc.Delegate = d
	mc.Events = d
	mc.Alive = d
	mc.Conflict = d
	mc.Ping = d
	mc.Logger = log.New(logBridge{m}, "", 0)

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("overlay: start gossip on %s: %w", cfg.BindAddr, err)
	}
	m.ml = ml
	m.addr = ml.LocalNode().Address()
	// Re-announce for as long as an old address of this ID can take to be
	// declared dead (the longest suspicion, plus probing and gossip).
	window := time.Duration(mc.SuspicionMaxTimeoutMult*mc.SuspicionMult)*mc.ProbeInterval + 4*mc.ProbeInterval
	m.loops.Add(1)
	go m.reannounceLoop(mc.ProbeInterval, window)
	if len(cfg.Seeds) == 0 {
		m.log.Info("overlay: started a new cluster", "addr", m.addr)
		return m, nil
	}
	done := make(chan error, 1)
	go func() {
		n, err := ml.Join(cfg.Seeds)
		if err == nil && n == 0 {
			err = errors.New("no seed answered")
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		m.Close() // makes ml.Join return
		<-done
		return nil, fmt.Errorf("overlay: join via %s: %w", strings.Join(cfg.Seeds, ","), ctx.Err())
	}
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("%w via %s: %s (check the seed addresses, and that this node holds the cluster's secret)",
			ErrJoin, strings.Join(cfg.Seeds, ","), oneLine(err))
	}
	m.log.Info("overlay: joined", "addr", m.addr, "members", ml.NumMembers())
	return m, nil
}

// oneLine flattens memberlist's multi-line join error ("2 errors
// occurred:\n\t* ...") into one line.
func oneLine(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "*"))
		if l != "" && !strings.HasSuffix(l, "errors occurred:") && !strings.HasSuffix(l, "error occurred:") {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// memberlistConfig checks cfg and turns it into a memberlist config
// without delegates.
func memberlistConfig(cfg Config) (*memberlist.Config, error) {
	if err := cfg.Self.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Secret) != SecretSize {
		return nil, fmt.Errorf("%w: the cluster secret is %d bytes, want %d (see LoadOrCreateSecret)", ErrConfig, len(cfg.Secret), SecretSize)
	}
	var mc *memberlist.Config
	switch cfg.Profile {
	case "", ProfileLAN:
		mc = memberlist.DefaultLANConfig()
	case ProfileLocal:
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 500 * time.Millisecond
		mc.ProbeTimeout = 250 * time.Millisecond
		mc.SuspicionMult = 4
		mc.SuspicionMaxTimeoutMult = 3
	default:
		return nil, fmt.Errorf("%w: unknown profile %q (use %q or %q)", ErrConfig, cfg.Profile, ProfileLAN, ProfileLocal)
	}
	// A node that restarts on another address may take its ID back once
	// the old address has been declared dead for a probe interval.
	mc.DeadNodeReclaimTime = mc.ProbeInterval
	mc.Name = cfg.Self.ID
	ip, port, err := splitIPPort(cfg.BindAddr, "bind")
	if err != nil {
		return nil, err
	}
	mc.BindAddr, mc.BindPort = ip, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if cfg.AdvertiseAddr != "" {
		ip, port, err := splitIPPort(cfg.AdvertiseAddr, "advertise")
		if err != nil {
			return nil, err
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ip, port
	}
	// No LZW compression. memberlist compresses every message it sends
	// (probes, acks, gossip: tens to a few hundred bytes, encrypted
	// afterwards, so the compression buys nearly nothing on the wire),
	// and a fresh LZW writer and its tables per message showed in an
	// idle node's profile (a small part of its CPU: docs/design.md, "Per-I/O
	// and idle cost of a cluster node"). Peers
	// that still compress interoperate: memberlist decodes a compressed
	// message whatever its own setting (net.go, compressMsg).
	mc.EnableCompression = false
	mc.SecretKey = slices.Clone(cfg.Secret)
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	return mc, nil
}

func splitIPPort(addr, what string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s address %q: %v (write ip:port)", ErrConfig, what, addr, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s address %q: bad port", ErrConfig, what, addr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("%w: %s address %q: the host must be an IP address", ErrConfig, what, addr)
	}
	return host, int(port), nil
}

// Addr returns the gossip address ("ip:port") this node advertises: the
// address other nodes use as a seed.
func (m *Membership) Addr() string { return m.addr }

// Self returns this node's current description.
func (m *Membership) Self() Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.self
}

// Members returns every member this node has seen since it joined, itself
// included, in any state, sorted by ID. Dead and left members stay listed
// (with their last known description) until they come back. The slice is
// the caller's.
func (m *Membership) Members() []MemberState {
	m.mu.Lock()
	out := make([]MemberState, 0, len(m.members))
	for _, mb := range m.members {
		out = append(out, mb.st)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b MemberState) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Live returns the members that are Alive or Suspect, storage and
// frontend-only nodes alike, itself included (unless it has left), sorted
// by ID. The slice is the caller's.
func (m *Membership) Live() []Node {
	var out []Node
	for _, st := range m.Members() {
		if st.State == Alive || st.State == Suspect {
			out = append(out, st.Node)
		}
	}
	return out
}

// UpdateSelf replaces this node's description (its ID cannot change) and
// gossips it. It returns once the update has been sent to as many peers as
// memberlist's retransmission wants, or with an error when ctx ends first
// (default bound: 5 s); the update then still spreads, by later gossip.
// Peers see an [EventUpdate]. Errors wrap [ErrInvalidNode],
// [ErrMetaTooLarge], [ErrClosed] or ctx.Err().
func (m *Membership) UpdateSelf(ctx context.Context, n Node) error {
	if n.ID != m.selfID {
		return fmt.Errorf("%w: a node's id cannot change (from %q to %q)", ErrInvalidNode, m.selfID, n.ID)
	}
	b, err := EncodeMeta(n)
	if err != nil {
		return err
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	if m.closed || m.left {
		m.mu.Unlock()
		return fmt.Errorf("overlay: update self: %w", ErrClosed)
	}
	m.self = n
	m.mu.Unlock()
	m.meta.Store(&b)
	if err := m.broadcastMeta(ctx); err != nil {
		return fmt.Errorf("overlay: update self: %w", err)
	}
	return nil
}

// broadcastMeta gossips the current metadata, waiting at most until ctx
// ends (or defaultTimeout).
func (m *Membership) broadcastMeta(ctx context.Context) error {
	t, err := timeoutOf(ctx)
	if err != nil {
		return err
	}
	if err := m.ml.UpdateNode(t); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	return nil
}

// Leave leaves the cluster gracefully: peers see this node as [Left] (an
// [EventLeave]) within a gossip round or two. It returns once the leave
// has been gossiped, or when ctx ends (default bound: 10 s). After Leave,
// the node no longer takes part; call Close. Leave twice is a no-op.
// Errors wrap [ErrClosed] or ctx.Err().
func (m *Membership) Leave(ctx context.Context) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("overlay: leave: %w", ErrClosed)
	}
	if m.left {
		m.mu.Unlock()
		return nil
	}
	m.left = true
	self := m.self
	m.mu.Unlock()

	// Flag the leave in the metadata first, so peers can tell it from a
	// failure (memberlist reports both alike).
	if b, err := encodeMeta(meta{Node: self, leaving: true}); err == nil {
		m.meta.Store(&b)
		if err := m.broadcastMeta(ctx); err != nil {
			m.log.Debug("overlay: leave: leaving flag not fully gossiped", "err", err)
		}
	}
	t, err := timeoutOf(ctx)
	if err != nil {
		return fmt.Errorf("overlay: leave: %w", err)
	}
	if err := m.ml.Leave(t); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("overlay: leave: %w", err)
	}
	m.log.Info("overlay: left the cluster")
	return nil
}

// Close stops this node's gossip at once and ends every subscription
// (their channels are closed). Without a Leave before it, peers see the
// node fail: it becomes [Dead] to them after the failure-detection time,
// exactly as if the process had been killed. Close waits for an UpdateSelf
// or Leave in progress. Close twice is a no-op.
func (m *Membership) Close() error {
	m.stopOnce.Do(func() { close(m.stopc) })
	m.loops.Wait()
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	subs := m.subs
	m.subs = nil
	m.mu.Unlock()
	for s := range subs {
		s.stop()
	}
	if err := m.ml.Shutdown(); err != nil {
		return fmt.Errorf("overlay: close: %w", err)
	}
	return nil
}

// reannounceLoop handles a node that restarted on a new address while
// its peers still hold its ID at the old one: they refuse the new address
// until the old one is declared dead, and memberlist would only retry at
// the next push/pull (15-30 s later). So, once this node learns of such a
// conflict, it re-gossips its alive message every interval for window, and
// peers take the new address as soon as they may.
func (m *Membership) reannounceLoop(every, window time.Duration) {
	defer m.loops.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	var until time.Time
	for {
		select {
		case <-m.stopc:
			return
		case <-m.conflict:
			until = time.Now().Add(window)
		case <-t.C:
			if time.Now().Before(until) {
				m.announce(every)
			}
		}
	}
}

// announce gossips this node's alive message with a new incarnation.
func (m *Membership) announce(timeout time.Duration) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	skip := m.closed || m.left
	m.mu.Unlock()
	if !skip {
		_ = m.ml.UpdateNode(timeout) // a timeout only means fewer retransmits
	}
}

// timeoutOf returns the time left before ctx's deadline, or defaultTimeout.
func timeoutOf(ctx context.Context) (time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl)
		if d <= 0 {
			return 0, context.DeadlineExceeded
		}
		return d, nil
	}
	return defaultTimeout, nil
}

// observe records a memberlist notification about n and tells the
// subscribers. memberlist calls it with its node lock held, one call at a
// time: it must not block and must not call back into memberlist.
func (m *Membership) observe(n *memberlist.Node, kind EventKind) {
	md, err := decodeMeta(n.Meta)
	if err != nil || md.ID != n.Name {
		// NotifyAlive refuses such nodes, so this is not expected.
		m.log.Warn("overlay: member with unreadable metadata", "member", n.Name, "err", err)
		md = meta{Node: Node{ID: n.Name}}
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.members[n.Name]
	switch kind {
	case EventJoin:
		cur = &member{st: MemberState{Node: md.Node, State: Alive, Since: now, Addr: n.Address()}}
		m.members[n.Name] = cur
	case EventUpdate:
		if md.leaving {
			return // the Leave that follows says it all
		}
		if cur == nil || cur.st.State == Dead || cur.st.State == Left {
			kind = EventJoin
			cur = &member{st: MemberState{Node: md.Node, State: Alive, Since: now, Addr: n.Address()}}
			m.members[n.Name] = cur
		} else {
			cur.st.Node, cur.st.Addr = md.Node, n.Address()
		}
	case EventLeave, EventDead:
		st := Dead
		kind = EventDead
		if md.leaving {
			st, kind = Left, EventLeave
		}
		if cur == nil {
			cur = &member{}
			m.members[n.Name] = cur
		}
		cur.st = MemberState{Node: md.Node, State: st, Since: now, Addr: n.Address()}
	}
	m.log.Debug("overlay: member "+kind.String(), "member", n.Name, "addr", n.Address())
	ev := Event{Kind: kind, MemberState: cur.st}
	for s := range m.subs {
		s.push(ev)
	}
}

// setSuspect moves a live member between Alive and Suspect (no event).
func (m *Membership) setSuspect(name string, suspect bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.members[name]
	if cur == nil || name == m.selfID {
		return
	}
	switch {
	case suspect && cur.st.State == Alive:
		cur.st.State, cur.st.Since = Suspect, time.Now()
		m.log.Debug("overlay: member suspect", "member", name)
	case !suspect && cur.st.State == Suspect:
		cur.st.State, cur.st.Since = Alive, time.Now()
	}
}

// delegate implements memberlist's delegate interfaces for a Membership.
type delegate struct{ m *Membership }

var (
	_ memberlist.Delegate         = delegate{}
	_ memberlist.EventDelegate    = delegate{}
	_ memberlist.AliveDelegate    = delegate{}
	_ memberlist.ConflictDelegate = delegate{}
	_ memberlist.PingDelegate     = delegate{}
)

// NodeMeta returns this node's encoded description (checked against
// MaxMetaSize when it was set).
func (d delegate) NodeMeta(limit int) []byte {
	b := *d.m.meta.Load()
	if len(b) > limit {
		return nil // not reached: EncodeMeta enforces MaxMetaSize
	}
	return b
}

func (delegate) NotifyMsg([]byte)                           {}
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.m.observe(n, EventJoin) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.m.observe(n, EventUpdate) }
func (d delegate) NotifyLeave(n *memberlist.Node)  { d.m.observe(n, EventDead) }

// NotifyAlive refuses a member whose metadata this node cannot read, or
// whose metadata names another ID: it never enters the view.
func (d delegate) NotifyAlive(n *memberlist.Node) error {
	md, err := decodeMeta(n.Meta)
	if err != nil {
		return err
	}
	if md.ID != n.Name {
		return fmt.Errorf("%w: metadata names %q, gossip names %q", ErrBadMeta, md.ID, n.Name)
	}
	return nil
}

func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name == d.m.selfID {
		// Peers know this ID at another address: most likely this node's
		// previous run. Keep announcing until they take the new address.
		d.m.log.Info("overlay: peers still know this node at an older address", "old_addr", other.Address())
		select {
		case d.m.conflict <- struct{}{}:
		default:
		}
		return
	}
	d.m.log.Warn("overlay: two nodes claim one id", "member", existing.Name,
		"addr", existing.Address(), "other_addr", other.Address())
}

func (delegate) AckPayload() []byte { return nil }

func (d delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	d.m.setSuspect(other.Name, false)
}

// logBridge turns memberlist's log lines ("[LEVEL] memberlist: text") into
// debug-level slog records, and notices this node's suspicions of others,
// which memberlist reports nowhere else.
type logBridge struct{ m *Membership }

const suspectPrefix, suspectSuffix = "Suspect ", " has failed, no acks received"

func (b logBridge) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\r\n")
	level := ""
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			level, line = line[1:i], strings.TrimSpace(line[i+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	if rest, ok := strings.CutPrefix(line, suspectPrefix); ok {
		if name, ok := strings.CutSuffix(rest, suspectSuffix); ok {
			b.m.setSuspect(name, true)
		}
	}
	b.m.log.Debug("memberlist: "+line, "memberlist_level", level)
	return len(p), nil
}

// Contact asks the members at addrs to gossip with this node, merging
// clusters that were split (a node restarted alone because its peers were
// down rejoins them this way). It returns how many addresses answered.
func (m *Membership) Contact(ctx context.Context, addrs []string) (int, error) {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return 0, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n, err := m.ml.Join(addrs)
	if err != nil && n == 0 {
		return 0, fmt.Errorf("%w: %s", ErrJoin, oneLine(err))
	}
	return n, nil
}
