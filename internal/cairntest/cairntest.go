// Package cairntest holds test harnesses shared by Cairn's packages: real
// `cairn` processes started from a freshly built binary, free ports, and
// the rule for external tools (a missing tool fails the test under CI and
// skips it elsewhere).
package cairntest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NeedTool returns the path of an external program the test needs. Under
// CI (CI=true) a missing tool fails the test: CI must install it. Elsewhere
// the test is skipped with a message.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is required (scripts/deps.sh test installs it): %v", name, err)
	}
	t.Skipf("%s not installed (run scripts/deps.sh test): %v", name, err)
	return ""
}

// NeedRoot fails under CI, and skips elsewhere, when not running as root
// (loop devices and mounts need it).
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs root (loop devices, mount)")
	}
	t.Skip("needs root")
}

// FreePort returns a TCP address on 127.0.0.1 that was free a moment ago
// (see FreePorts for the range).
func FreePort(t testing.TB) string {
	t.Helper()
	return FreePorts(t, "127.0.0.1", 1)
}

// Test servers listen on ports below the kernel's ephemeral range (32768
// and up by default), where the source ports of outgoing connections come
// from: a port probed free and bound by a node a moment later was taken
// once by a connection between other nodes (CI: "bind: address already
// in use" at a node's start-up).
const (
	portLow  = 10000
	portSpan = 22000 // portLow+portSpan+a few < 32768
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/cairn once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "cairn")
		root := moduleRoot()
		// The binary is built without the race detector: the end-to-end
		// tests push hundreds of MiB through it, which -race makes 10x
		// slower. CAIRN_TEST_RACE=1 builds it with -race.
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/cairn")
		if os.Getenv("CAIRN_TEST_RACE") != "" {
			cmd = exec.Command("go", "build", "-race", "-o", binPath, "./cmd/cairn")
		}
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/cairn: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// RemoveBinary removes what Binary built, if it built anything (each
// `go test` of a package using it would otherwise leave a 44 MiB
// directory in the temporary directory). Call it from TestMain after
// m.Run, once no test runs the binary any more.
func RemoveBinary() {
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
}

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Server is a `cairn serve` process, or a `cairn node` process when Listen
// is set (see NewNode).
type Server struct {
	t       testing.TB
	Data    string // data directory
	NBD     string // NBD address host:port
	Raft    string
	Listen  string   // gossip address of a cluster node
	Secret  string   // the cluster secret a first node printed
	Netns   string   // network namespace to run in (see Net)
	Args    []string // extra arguments to serve
	cmd     *exec.Cmd
	logMu   sync.Mutex
	log     bytes.Buffer
	exited  chan struct{}
	waitErr error
}

// NewServer prepares (but does not start) a server with a fresh data
// directory and free ports.
func NewServer(t testing.TB, args ...string) *Server {
	t.Helper()
	return &Server{t: t, Data: filepath.Join(t.TempDir(), "data"), NBD: FreePort(t), Raft: FreePort(t), Args: args}
}

// NewNode prepares a `cairn node` on loopback address ip (127.0.0.x):
// gossip, raft and data transport on three consecutive free ports, NBD on
// a fourth. Join it to a cluster with Args ("--join", addr, "--secret", s).
func NewNode(t testing.TB, ip string, args ...string) *Server {
	t.Helper()
	base := FreePorts(t, ip, 3)
	return &Server{t: t, Data: filepath.Join(t.TempDir(), "data"), Listen: base, NBD: FreePortOn(t, ip), Args: args}
}

// FreePortOn returns a TCP address on ip that was free a moment ago.
func FreePortOn(t testing.TB, ip string) string {
	t.Helper()
	return FreePorts(t, ip, 1)
}

// FreePorts returns ip:p such that TCP ports p..p+n-1 and UDP port p on
// ip were free a moment ago.
func FreePorts(t testing.TB, ip string, n int) string {
	t.Helper()
	for try := 0; try < 200; try++ {
		p := portLow + rand.IntN(portSpan)
		ok := true
		var ls []io.Closer
		for i := 0; i < n && ok; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, p+i))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		if ok {
			u, err := net.ListenPacket("udp", fmt.Sprintf("%s:%d", ip, p))
			if err != nil {
				ok = false
			} else {
				ls = append(ls, u)
			}
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return fmt.Sprintf("%s:%d", ip, p)
		}
	}
	t.Fatalf("no %d free consecutive ports on %s", n, ip)
	return ""
}

// URI returns the NBD URI of export name.
func (s *Server) URI(name string) string { return "nbd://" + s.NBD + "/" + name }

// Start starts the process and waits until it serves NBD. A server that
// is still running at the end of the test is killed.
func (s *Server) Start(ctx context.Context) {
	s.t.Helper()
	bin := Binary(s.t)
	since := len(s.Log()) // the log of earlier runs stays in front
	args := append([]string{"--data", s.Data, "serve", "--nbd", s.NBD, "--raft", s.Raft}, s.Args...)
	if s.Listen != "" {
		args = append([]string{"--data", s.Data, "node", "--listen", s.Listen, "--nbd", s.NBD, "--gossip-profile", "local"}, s.Args...)
	}
	s.cmd = exec.Command(bin, args...)
	if s.Netns != "" {
		s.cmd = exec.Command("ip", append([]string{"netns", "exec", s.Netns, bin}, args...)...)
	}
	s.cmd.Stdout = &lockedWriter{s}
	s.cmd.Stderr = &lockedWriter{s}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	cmd := s.cmd
	s.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-s.exited
		}
		if s.t.Failed() {
			s.t.Logf("cairn serve log:\n%s", s.Log())
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case <-s.exited:
			s.t.Fatalf("cairn serve exited during start-up: %v\n%s", s.waitErr, s.Log())
		default:
		}
		if log := s.Log()[since:]; strings.Contains(log, "serving volume") {
			if i := strings.Index(log, "cluster secret"); i >= 0 && s.Secret == "" {
				line := log[i:]
				if j := strings.IndexByte(line, '\n'); j >= 0 {
					line = line[:j]
				}
				s.Secret = line[strings.LastIndexByte(line, ' ')+1:]
			}
			if c, err := net.DialTimeout("tcp", s.NBD, time.Second); err == nil {
				c.Close()
				return
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.t.Fatalf("cairn serve did not start within 90s:\n%s", s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedWriter struct{ s *Server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.logMu.Lock()
	defer w.s.logMu.Unlock()
	return w.s.log.Write(p)
}

// Log returns everything the process printed so far.
func (s *Server) Log() string {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.log.String()
}

// Kill sends SIGKILL and waits for the process to die.
func (s *Server) Kill() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// Stop sends SIGTERM and waits (at most a minute) for a clean exit.
func (s *Server) Stop() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if s.waitErr != nil {
			s.t.Fatalf("cairn serve exited with %v after SIGTERM:\n%s", s.waitErr, s.Log())
		}
	case <-time.After(time.Minute):
		_ = s.cmd.Process.Kill()
		s.t.Fatalf("cairn serve did not stop within a minute of SIGTERM:\n%s", s.Log())
	}
}

// Cairn runs the cairn CLI against this server's data directory and
// returns its stdout; a non-zero exit fails the test unless wantFail.
func (s *Server) Cairn(args ...string) (string, error) {
	s.t.Helper()
	cmd := exec.Command(Binary(s.t), append([]string{"--data", s.Data}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), fmt.Errorf("cairn %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// Lines splits command output into trimmed non-empty lines.
func Lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}
