package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cairn/internal/admin"
	"cairn/internal/cairntest"
)

// startCluster starts n `cairn node` processes on 127.0.0.2, .3, ...: the
// first starts the cluster, the others join it with its secret.
func startCluster(t *testing.T, n int, args ...string) []*cairntest.Server {
	t.Helper()
	ctx := context.Background()
	first := cairntest.NewNode(t, "127.0.0.2", args...)
	first.Start(ctx)
	if first.Secret == "" {
		t.Fatalf("the first node printed no cluster secret:\n%s", first.Log())
	}
	nodes := []*cairntest.Server{first}
	for i := 1; i < n; i++ {
		s := cairntest.NewNode(t, fmt.Sprintf("127.0.0.%d", i+2), append([]string{"--join", first.Listen, "--secret", first.Secret}, args...)...)
		s.Start(ctx)
		nodes = append(nodes, s)
	}
	waitFor(t, 60*time.Second, "every node to see every node alive", func() bool {
		for _, s := range nodes {
			if alive(t, s) != n || !replicated(t, s, n) {
				return false
			}
		}
		return true
	})
	return nodes
}

// alive counts the nodes s's gossip sees alive.
func alive(t *testing.T, s *cairntest.Server) int {
	t.Helper()
	n := 0
	for _, nd := range status(t, s).Nodes {
		if nd.State == "alive" {
			n++
		}
	}
	return n
}

// replicated reports whether every raft shard, as s sees it, has a leader
// and min(n, 5) replicas.
func replicated(t *testing.T, s *cairntest.Server, n int) bool {
	t.Helper()
	st := status(t, s)
	if len(st.Shards) == 0 {
		return false
	}
	for _, sh := range st.Shards {
		if sh.Leader == 0 || sh.Replicas < min(n, 5) {
			return false
		}
	}
	return true
}

func status(t *testing.T, s *cairntest.Server) admin.Status {
	t.Helper()
	c := admin.NewClient(filepath.Join(s.Data, admin.SocketName))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		return admin.Status{}
	}
	return st
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return time.Since(start)
}

func writePolicy(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestClusterSurvivesNodeLossAndCatchesUp: 3 nodes, a replicas = 3
// volume, fio verify writing through node A; node C is killed with
// SIGKILL mid-run and the run still verifies. When C comes back it gets
// exactly the pieces written while it was away, not a full copy.
func TestClusterSurvivesNodeLossAndCatchesUp(t *testing.T) {
	cairntest.NeedTool(t, "fio")
	nodes := startCluster(t, 3)
	a, c := nodes[0], nodes[2]
	if out, err := a.Cairn("volume", "create", "r3", "--size", "512MiB", "--policy", writePolicy(t, "[redundancy]\nreplicas = 3\n")); err != nil {
		t.Fatal(err, out)
	}
	fio := exec.Command("fio", "--name=v", "--verify_state_save=0", "--ioengine=nbd", "--uri="+a.URI("r3"),
		"--rw=randwrite", "--bs=4k", "--size=160m", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1", "--fsync=64")
	var out bytes.Buffer
	fio.Stdout, fio.Stderr = &out, &out
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	c.Kill()
	killedAt := time.Now()
	if err := fio.Wait(); err != nil || !strings.Contains(out.String(), "err= 0") {
		t.Fatalf("fio with a node killed mid-run: %v\n%s", err, out.String())
	}
	if time.Since(killedAt) < 2*time.Second {
		t.Logf("warning: fio finished %s after the kill", time.Since(killedAt))
	}
	st := status(t, a)
	away := st.Repair.HandedOffBytes
	t.Logf("written while C was away: %d MiB handed to other nodes (%d pieces waiting)", away>>20, st.Repair.Pending)
	if away == 0 {
		t.Fatalf("nothing was handed off while C was dead: the kill did not land during the writes")
	}

	c.Start(context.Background())
	took := waitFor(t, 3*time.Minute, "C to get back what it missed", func() bool {
		st := status(t, a)
		return st.Repair.Pending == 0 && st.Repair.HandedBackBytes >= away
	})
	st = status(t, a)
	t.Logf("C caught up in %s: %d MiB copied back for %d MiB written while it was away (of 160 MiB written in all, 480 MiB stored)",
		took.Round(time.Second), st.Repair.HandedBackBytes>>20, away>>20)
	if st.Repair.HandedBackBytes > away+away/10 {
		t.Errorf("catching up copied %d bytes for %d written meanwhile", st.Repair.HandedBackBytes, away)
	}
	// Everything still verifies, read through C's own export.
	vout := Run(t, 5*time.Minute, "fio", "--name=v", "--verify_state_save=0", "--ioengine=nbd", "--uri="+c.URI("r3"),
		"--rw=randwrite", "--bs=4k", "--size=160m", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1", "--verify_only")
	if !strings.Contains(vout, "err= 0") {
		t.Fatalf("verify through C after catching up:\n%s", vout)
	}
}

// TestClusterExporterDies: the node serving a client's export is killed;
// the client reconnects to another node's export (after the attach lease
// runs out) and every byte flushed before the kill reads back.
func TestClusterExporterDies(t *testing.T) {
	cairntest.NeedTool(t, "nbdsh")
	nodes := startCluster(t, 3)
	a, b := nodes[0], nodes[1]
	if out, err := a.Cairn("volume", "create", "r3", "--size", "256MiB", "--policy", writePolicy(t, "[redundancy]\nreplicas = 3\n")); err != nil {
		t.Fatal(err, out)
	}
	holder := exec.Command("nbdsh", "-u", a.URI("r3"), "-c", `
import random, sys
random.seed(11)
for i in range(2000):
    h.pwrite(random.randbytes(4096), i * 4096 * 13)
h.flush()
print("flushed", flush=True)
sys.stdin.readline()
`)
	holder.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
	stdin, _ := holder.StdinPipe()
	stdout, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 8)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "flushed\n" {
		t.Fatalf("writer: %q %v", line, err)
	}
	a.Kill() // with the client still attached
	stdin.Close()
	holder.Wait()
	start := time.Now()
	var out string
	waitFor(t, 3*time.Minute, "another node's export to take the volume over", func() bool {
		o, err := nbdsh(t, b.URI("r3"), `
import random
random.seed(11)
bad = 0
for i in range(2000):
    if h.pread(4096, i * 4096 * 13) != random.randbytes(4096):
        bad += 1
print("bad", bad)
`)
		out = o
		return err == nil && strings.Contains(o, "bad ")
	})
	t.Logf("node B served the volume %s after A was killed: %s", time.Since(start).Round(time.Second), strings.TrimSpace(out))
	if !strings.Contains(out, "bad 0") {
		t.Fatalf("flushed data lost when the exporting node died: %s", out)
	}
}

// TestClusterErasureCodedSurvivesTwoLosses: 5 nodes, a data = 3,
// parity = 2 volume; any 2 nodes killed, every flushed byte reads back.
func TestClusterErasureCodedSurvivesTwoLosses(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	nodes := startCluster(t, 5)
	a := nodes[0]
	if out, err := a.Cairn("volume", "create", "ec", "--size", "64MiB", "--policy", writePolicy(t, "block_size = \"64KiB\"\n[redundancy]\ndata = 3\nparity = 2\n")); err != nil {
		t.Fatal(err, out)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.img")
	makeImage(t, in, 64<<20, 3)
	Run(t, 5*time.Minute, "nbdcopy", "--flush", in, a.URI("ec"))
	nodes[2].Kill()
	nodes[4].Kill()
	out := filepath.Join(dir, "out.img")
	Run(t, 5*time.Minute, "nbdcopy", a.URI("ec"), out)
	if x, y := fileSHA(t, in), fileSHA(t, out); x != y {
		t.Fatalf("after losing 2 of 5 nodes the volume reads differently: %s vs %s", x, y)
	}
}

// TestStrangerCannotJoin: a node with another cluster's secret cannot
// join; the cluster never lists it.
func TestStrangerCannotJoin(t *testing.T) {
	nodes := startCluster(t, 2)
	stranger := cairntest.NewNode(t, "127.0.0.9", "--join", nodes[0].Listen, "--secret", "cairn1-"+strings.Repeat("A", 43))
	out, err := RunErr(t, 2*time.Minute, cairntest.Binary(t), "--data", stranger.Data, "node", "--listen", stranger.Listen, "--nbd", stranger.NBD,
		"--join", nodes[0].Listen, "--secret", "cairn1-"+strings.Repeat("A", 43), "--gossip-profile", "local")
	if err == nil {
		t.Fatalf("a node with the wrong secret started:\n%s", out)
	}
	t.Logf("stranger refused: %s", lastLine(out))
	st := status(t, nodes[0])
	if len(st.Nodes) != 2 {
		b, _ := json.Marshal(st.Nodes)
		t.Fatalf("the cluster lists %d nodes after a stranger tried to join: %s", len(st.Nodes), b)
	}
}

func lastLine(s string) string {
	ls := cairntest.Lines(s)
	if len(ls) == 0 {
		return ""
	}
	return ls[len(ls)-1]
}

// TestClusterRollingRestart: every node restarted cleanly, one at a time,
// while fio writes and verifies through node A (A's own restart comes
// between fio's write phase and a verify-only pass, since restarting the
// node a client is attached to ends its connection): no I/O error, no
// lost byte.
func TestClusterRollingRestart(t *testing.T) {
	cairntest.NeedTool(t, "fio")
	ctx := context.Background()
	nodes := startCluster(t, 3)
	a := nodes[0]
	if out, err := a.Cairn("volume", "create", "r3", "--size", "512MiB", "--policy", writePolicy(t, "[redundancy]\nreplicas = 3\n")); err != nil {
		t.Fatal(err, out)
	}
	job := []string{"--name=roll", "--verify_state_save=0", "--ioengine=nbd", "--rw=randwrite", "--bs=4k", "--size=200m",
		"--iodepth=8", "--verify=crc32c", "--verify_fatal=1", "--randseed=77"}
	fio := exec.Command("fio", append(job, "--uri="+a.URI("r3"), "--fsync=32")...)
	var out bytes.Buffer
	fio.Stdout, fio.Stderr = &out, &out
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fio.Wait() }()
	for _, s := range nodes[1:] {
		time.Sleep(time.Second)
		s.Stop()
		s.Start(ctx)
		// As an operator would: wait until the node is back before the next.
		waitFor(t, time.Minute, "the restarted node alive again", func() bool { return alive(t, a) == len(nodes) })
	}
	if err := <-done; err != nil || !strings.Contains(out.String(), "err= 0") {
		t.Fatalf("fio during the rolling restart of B and C: %v\n%s", err, out.String())
	}
	a.Stop()
	a.Start(ctx)
	vout := Run(t, 5*time.Minute, "fio", append(job, "--uri="+a.URI("r3"), "--verify_only")...)
	if !strings.Contains(vout, "err= 0") {
		t.Fatalf("verify after restarting A:\n%s", vout)
	}
}

// TestSplitBrain: node A, attached as the volume's writer, is cut off from
// B and C. A cannot complete a write (its FLUSH fails: the majority does
// not see it); B takes the volume over once A's lease runs out and its
// writes succeed; after the partition heals, the volume holds B's data,
// never A's unacknowledged write. Two writers never both succeed.
func TestSplitBrain(t *testing.T) {
	cairntest.NeedTool(t, "nbdsh")
	// Each node runs on a host of its own (a network namespace), so that
	// A can be cut off from B and C while the test still reaches A.
	nw := cairntest.NewNet(t, 3)
	ctx := context.Background()
	a := cairntest.NewNodeIn(t, nw, 0)
	a.Start(ctx)
	var nodes []*cairntest.Server
	nodes = append(nodes, a)
	for i := 1; i < 3; i++ {
		s := cairntest.NewNodeIn(t, nw, i, "--join", a.Listen, "--secret", a.Secret)
		s.Start(ctx)
		nodes = append(nodes, s)
	}
	b := nodes[1]
	// The cut must come after every raft shard has its three replicas: a
	// young shard still on {A, B} would lose its quorum with A.
	waitFor(t, time.Minute, "3 nodes alive and every shard on all of them", func() bool { return alive(t, a) == 3 && replicated(t, a, 3) })
	if out, err := a.Cairn("volume", "create", "r3", "--size", "64MiB", "--policy", writePolicy(t, "[redundancy]\nreplicas = 3\n")); err != nil {
		t.Fatal(err, out)
	}
	w := exec.Command("nbdsh", "-u", a.URI("r3"), "-c", `
import sys, nbd
h.pwrite(b"X" * 4096, 0)
h.flush()
print("x-flushed", flush=True)
sys.stdin.readline()
try:
    h.pwrite(b"Y" * 4096, 0)
    h.flush()
    print("y-flushed", flush=True)
except nbd.Error as e:
    print("y-failed", e, flush=True)
`)
	w.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
	stdin, _ := w.StdinPipe()
	var wout, werr bytes.Buffer // wout is written by the copier below until copied is closed
	pr, pw := io.Pipe()
	w.Stdout, w.Stderr = pw, &werr
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 10)
	if _, err := io.ReadFull(pr, line); err != nil || string(line) != "x-flushed\n" {
		t.Fatalf("writer on A: %q %v", line, err)
	}
	copied := make(chan struct{})
	go func() { io.Copy(&wout, pr); close(copied) }()

	heal := nw.Cut(0)
	defer heal()
	stdin.Write([]byte("go\n"))
	stdin.Close()
	wdone := make(chan error, 1)
	go func() { wdone <- w.Wait() }()

	// The majority side takes the volume over and writes.
	start := time.Now()
	var zout string
	waitFor(t, 2*time.Minute, "B to take the volume over", func() bool {
		o, err := nbdsh(t, b.URI("r3"), `
h.pwrite(b"Z" * 4096, 0)
h.flush()
print("z-flushed")
`)
		zout = o
		return err == nil && strings.Contains(o, "z-flushed")
	})
	t.Logf("B wrote and flushed %s after the partition", time.Since(start).Round(time.Second))
	select {
	case <-wdone:
	case <-time.After(3 * time.Minute):
		w.Process.Kill()
		t.Fatalf("A's writer hung for 3 minutes")
	}
	pw.Close()
	<-copied
	if strings.Contains(wout.String(), "y-flushed") {
		t.Fatalf("the cut-off node A completed a flush: %s (and B: %s)", wout.String(), zout)
	}
	if !strings.Contains(wout.String(), "y-failed") {
		t.Fatalf("A's writer: %s %s", wout.String(), werr.String())
	}
	t.Logf("A's write: %s", lastLine(wout.String()))
	heal()
	time.Sleep(3 * time.Second)
	out, err := nbdsh(t, b.URI("r3"), `print("first", h.pread(4096, 0)[:1])`)
	if err != nil || !strings.Contains(out, "b'Z'") {
		t.Fatalf("after healing, offset 0 holds %s (want B's Z): %v", out, err)
	}
}

// TestClusterHealsAfterNodeRemovedForGood: 4 nodes, a replicas = 3
// volume; one node dies for good. Without any command, once it has been
// gone longer than --remove-after, every block gets its third copy back on
// the remaining nodes and every raft shard drops the dead replica; the
// test reports how long that took. Every byte still reads back.
func TestClusterHealsAfterNodeRemovedForGood(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	nodes := startCluster(t, 4, "--remove-after", "10s")
	a, d := nodes[0], nodes[3]
	if out, err := a.Cairn("volume", "create", "r3", "--size", "32MiB", "--policy", writePolicy(t, "[redundancy]\nreplicas = 3\n")); err != nil {
		t.Fatal(err, out)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.img")
	makeImage(t, in, 32<<20, 5)
	Run(t, 5*time.Minute, "nbdcopy", "--flush", in, a.URI("r3"))
	d.Kill()
	killed := time.Now()
	live := nodes[:3]
	took := waitFor(t, 5*time.Minute, "the anti-entropy pass after the removal, and every shard without the dead replica", func() bool {
		under := 0
		for _, s := range live {
			st := status(t, s)
			if st.Repair.ScrubRunning || st.Repair.ScrubDone.Before(killed.Add(10*time.Second)) {
				return false // the pass that follows the removal has not finished everywhere
			}
			under += st.Repair.UnderReplicated
		}
		return under == 0
	})
	var rewrote int64
	for _, s := range live {
		rewrote += status(t, s).Repair.ScrubRepaired
	}
	if rewrote == 0 {
		t.Fatalf("the automatic pass after the removal rewrote nothing: the dead node's copies were not replaced")
	}
	// A fresh pass on every node finds nothing left to rewrite: the
	// automatic one already brought every block back to 3 copies.
	for _, s := range live {
		out, err := s.Cairn("scrub")
		if err != nil || !strings.Contains(out, "rewrote 0 pieces") {
			t.Fatalf("a manual pass after healing still found work: %v %s", err, out)
		}
	}
	t.Logf("the automatic passes rewrote %d pieces", rewrote)
	t.Logf("healed %s after the kill (the node was dropped from placement after 10 s)", took.Round(time.Second))
	out := filepath.Join(dir, "out.img")
	Run(t, 5*time.Minute, "nbdcopy", a.URI("r3"), out)
	if x, y := fileSHA(t, in), fileSHA(t, out); x != y {
		o, _ := RunErr(t, time.Minute, "cmp", "-l", in, out)
		lines := cairntest.Lines(o)
		t.Fatalf("data differs after healing: %d bytes differ, first: %v", len(lines), lines[:min(5, len(lines))])
	}
	st := status(t, a)
	t.Logf("node A: %d blocks checked in its last pass", st.Repair.ScrubChecked)
}
