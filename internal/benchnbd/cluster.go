package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"cairn/internal/admin"
)

// clusterNode is one `cairn node` process of the cluster section, on its
// own loopback IP (127.0.0.2, .3, ...): gossip on listen's port, raft on
// port+1, the data transport on port+2, NBD on nbd.
type clusterNode struct {
	name   string // A, B, C, ...
	data   string
	listen string
	nbd    string
	args   []string // after the fixed ones: --join, --secret, --remove-after
	secret string   // printed by the first node
	proc   *server  // the running process; nil before the first start
	starts int
	adm    *admin.Client
}

// newClusterNode picks free ports on ip for a node whose data lives in
// dir/name.
func newClusterNode(dir, name, ip string, args []string) (*clusterNode, error) {
	listen, err := freePorts(ip, 3)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return nil, fmt.Errorf("no free NBD port on %s: %w", ip, err)
	}
	nbdAddr := l.Addr().String()
	l.Close()
	data := filepath.Join(dir, name)
	return &clusterNode{name: name, data: data, listen: listen, nbd: nbdAddr, args: args,
		adm: admin.NewClient(filepath.Join(data, admin.SocketName))}, nil
}

// freePorts returns ip:p such that TCP ports p..p+n-1 and UDP port p on ip
// were free a moment ago.
func freePorts(ip string, n int) (string, error) {
	for try := 0; try < 200; try++ {
		p := 10000 + rand.IntN(22000) // below the ephemeral ports of outgoing connections
		var closers []interface{ Close() error }
		ok := true
		for i := 0; i < n && ok; i++ {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p+i)))
			if ok = err == nil; ok {
				closers = append(closers, l)
			}
		}
		if ok {
			u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(p)))
			if ok = err == nil; ok {
				closers = append(closers, u)
			}
		}
		for _, c := range closers {
			c.Close()
		}
		if ok {
			return net.JoinHostPort(ip, strconv.Itoa(p)), nil
		}
	}
	return "", fmt.Errorf("no %d free consecutive ports on %s", n, ip)
}

// pprofPortEnv names the environment variable that, when set to a port,
// makes each cluster node serve net/http/pprof on its own IP at that port
// (CAIRN_PPROF=127.0.0.x:port), for profiling a cluster run.
const pprofPortEnv = "BENCHNBD_PPROF_PORT"

func (n *clusterNode) uri(vol string) string { return "nbd://" + n.nbd + "/" + vol }

func (n *clusterNode) pid() int {
	if n.proc == nil {
		return 0
	}
	return n.proc.pid()
}

// start starts (or restarts, with the same arguments and data) the node
// and waits until it prints "serving volume" and its NBD port accepts
// connections. The first node's cluster secret is kept in n.secret.
func (n *clusterNode) start(ctx context.Context, bin string) error {
	n.starts++
	args := append([]string{"--data", n.data, "node", "--listen", n.listen, "--nbd", n.nbd, "--gossip-profile", "local"}, n.args...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return err
	}
	logPath := filepath.Join(filepath.Dir(n.data), fmt.Sprintf("%s.%d.log", n.name, n.starts))
	cmd := exec.Command(bin, args...)
	if port := os.Getenv(pprofPortEnv); port != "" {
		// Each node profiles on its own IP (a shared CAIRN_PPROF
		// address would serve the first node only).
		host, _, _ := net.SplitHostPort(n.listen)
		cmd.Env = append(os.Environ(), "CAIRN_PPROF="+net.JoinHostPort(host, port))
	}
	s, err := start("node "+n.name, cmd, logPath, pw)
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	n.proc = s
	ready := make(chan string, 1) // the secret, "" if none
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		secret, signalled := "", false
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "cluster secret") {
				secret = line[strings.LastIndexByte(line, ' ')+1:]
			}
			if !signalled && strings.Contains(line, "serving volume") {
				ready <- secret
				signalled = true
			}
		}
	}()
	limit := time.After(3 * time.Minute)
	select {
	case secret := <-ready:
		if secret != "" {
			n.secret = secret
		}
	case <-s.done:
		return s.alive()
	case <-ctx.Done():
		n.kill()
		return ctx.Err()
	case <-limit:
		n.kill()
		return fmt.Errorf("node %s did not print \"serving volume\" within 3 minutes; its log:\n%s", n.name, tail(logPath, 20))
	}
	for {
		c, err := net.DialTimeout("tcp", n.nbd, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if err := s.alive(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			n.kill()
			return ctx.Err()
		case <-limit:
			n.kill()
			return fmt.Errorf("node %s: NBD %s does not accept connections: %w", n.name, n.nbd, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill sends SIGKILL to the node's process (by its PID) and waits for it.
func (n *clusterNode) kill() {
	if n.proc == nil {
		return
	}
	select {
	case <-n.proc.done:
	default:
		_ = n.proc.cmd.Process.Kill()
		<-n.proc.done
	}
}

// status asks the node's admin API for its status.
func (n *clusterNode) status(ctx context.Context) (admin.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := n.adm.Status(ctx)
	if err != nil {
		return admin.Status{}, fmt.Errorf("node %s: %w", n.name, err)
	}
	return st, nil
}

// cluster is a set of `cairn node` processes started by the harness.
type cluster struct {
	bin   string
	dir   string
	nodes []*clusterNode
}

// startCluster starts n nodes A, B, ... on 127.0.0.2, .3, ...: A starts
// the cluster, the others join it with its secret. extra goes to every
// node. It returns once every node sees n nodes alive. On error, the
// nodes already started are stopped.
func startCluster(ctx context.Context, bin, dir string, n int, extra ...string) (*cluster, error) {
	c := &cluster{bin: bin, dir: dir}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i+2)
		args := append([]string(nil), extra...)
		if i > 0 {
			a := c.nodes[0]
			args = append([]string{"--join", a.listen, "--secret", a.secret}, args...)
		}
		nd, err := newClusterNode(dir, string(rune('A'+i)), ip, args)
		if err != nil {
			c.stop()
			return nil, err
		}
		c.nodes = append(c.nodes, nd)
		if err := nd.start(ctx, bin); err != nil {
			c.stop()
			return nil, err
		}
		if i == 0 && nd.secret == "" {
			c.stop()
			return nil, fmt.Errorf("node A printed no cluster secret; its log:\n%s", tail(nd.proc.log, 20))
		}
	}
	if _, err := waitUntil(ctx, 2*time.Minute, fmt.Sprintf("every node to see %d nodes alive", n), func() (bool, error) {
		for _, nd := range c.nodes {
			if err := nd.proc.alive(); err != nil {
				return false, err
			}
			st, err := nd.status(ctx)
			if err != nil {
				return false, nil // not up yet, or busy: try again
			}
			if aliveNodes(st) != n {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

func aliveNodes(st admin.Status) int {
	alive := 0
	for _, nd := range st.Nodes {
		if nd.State == "alive" {
			alive++
		}
	}
	return alive
}

// stop stops every node still running: SIGTERM, then SIGKILL after a
// grace period. Node A stops first, then the others in parallel (each
// flushes its volumes).
func (c *cluster) stop() {
	// A first: it exports the volumes, and its shutdown flushes their
	// write-back caches (up to a GiB each) to the others, which must
	// still be up to take them (and to answer the last checkpoint).
	if len(c.nodes) > 0 && c.nodes[0].proc != nil {
		c.nodes[0].proc.stop(time.Minute)
	}
	var wg sync.WaitGroup
	for _, nd := range c.nodes[min(1, len(c.nodes)):] {
		if nd.proc == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.proc.stop(time.Minute)
		}()
	}
	wg.Wait()
}

// pids returns the PIDs of the running nodes.
func (c *cluster) pids() []int {
	var ps []int
	for _, nd := range c.nodes {
		select {
		case <-nd.proc.done:
		default:
			ps = append(ps, nd.pid())
		}
	}
	return ps
}

// alive reports the first node that has exited, except those in dead.
func (c *cluster) alive(dead ...*clusterNode) error {
	for _, nd := range c.nodes {
		if !contains(dead, nd) {
			if err := nd.proc.alive(); err != nil {
				return err
			}
		}
	}
	return nil
}

func contains(ns []*clusterNode, n *clusterNode) bool {
	for _, x := range ns {
		if x == n {
			return true
		}
	}
	return false
}

// cairn runs the cairn CLI against node n's data directory.
func (c *cluster) cairn(ctx context.Context, n *clusterNode, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.bin, append([]string{"--data", n.data}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("cairn %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// createVolume creates a replicas = replicas volume through node A with
// `cairn volume create NAME --size SIZE --policy FILE`.
func (c *cluster) createVolume(ctx context.Context, name string, size int64, replicas int) error {
	pol := filepath.Join(c.dir, name+".toml")
	if err := os.WriteFile(pol, []byte(fmt.Sprintf("[redundancy]\nreplicas = %d\n", replicas)), 0o644); err != nil {
		return err
	}
	// Every node seeing the others alive (startCluster) may come a moment
	// before A's placement view counts them: retry a refusal for too few
	// storage nodes for a few seconds.
	var err error
	for try := 0; try < 20; try++ {
		var out string
		out, err = c.cairn(ctx, c.nodes[0], "volume", "create", name, "--size", strconv.FormatInt(size, 10), "--policy", pol)
		if err == nil || !strings.Contains(out, "storage nodes") {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
	return err
}

// waitUntil polls cond every 250 ms until it reports true, returns an
// error, or limit passes; it returns how long it waited.
func waitUntil(ctx context.Context, limit time.Duration, what string, cond func() (bool, error)) (time.Duration, error) {
	start := time.Now()
	for {
		ok, err := cond()
		if err != nil {
			return time.Since(start), err
		}
		if ok {
			return time.Since(start), nil
		}
		if time.Since(start) > limit {
			return time.Since(start), fmt.Errorf("timed out after %s waiting for %s: %w", limit, what, errTimeout)
		}
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// errTimeout marks a wait that ran out of time.
var errTimeout = errors.New("timeout")
