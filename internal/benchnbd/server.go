package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one NBD server process under test.
type server struct {
	name string
	uri  string
	cmd  *exec.Cmd
	log  string        // its stdout and stderr
	file string        // nbdkit's disk image ("" for cairn)
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, valid after done
}

// pid returns the server's process ID.
func (s *server) pid() int { return s.cmd.Process.Pid }

// alive reports whether the process still runs.
func (s *server) alive() error {
	select {
	case <-s.done:
		return fmt.Errorf("%s exited (%v); its log:\n%s", s.name, s.err, tail(s.log, 20))
	default:
		return nil
	}
}

// start starts cmd with its output in logPath; the process is killed if
// the harness dies (Pdeathsig).
func start(name string, cmd *exec.Cmd, logPath string, stdout io.Writer) (*server, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
	if stdout != nil {
		cmd.Stdout = stdout
	} else {
		cmd.Stdout = logf
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	return s, nil
}

// stop sends SIGTERM, waits up to grace for a clean exit, then kills.
func (s *server) stop(grace time.Duration) {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(grace):
		fmt.Fprintf(os.Stderr, "benchnbd: %s did not stop in %s; killing it\n", s.name, grace)
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// startCairn starts `cairn serve` with its data in dir and waits until it
// prints "serving volume".
func startCairn(ctx context.Context, bin, dir string, size int64) (*server, error) {
	nbdAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	raftAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--data", filepath.Join(dir, "cairn-data"), "serve",
		"--nbd", nbdAddr, "--raft", raftAddr, "--size", strconv.FormatInt(size, 10))
	s, err := start("cairn", cmd, filepath.Join(dir, "cairn.log"), pw)
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	s.uri = "nbd://" + nbdAddr + "/default"
	ready := make(chan struct{})
	go func() {
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "serving volume") {
				close(ready)
				signalled = true
			}
		}
	}()
	select {
	case <-ready:
		return s, nil
	case <-s.done:
		return nil, s.alive()
	case <-ctx.Done():
		s.stop(time.Minute)
		return nil, ctx.Err()
	case <-time.After(3 * time.Minute):
		s.stop(time.Minute)
		return nil, fmt.Errorf("cairn did not print \"serving volume\" within 3 minutes; its log:\n%s", tail(s.log, 20))
	}
}

// startNbdkit preallocates a file of size bytes in dir and serves it with
// `nbdkit file`, waiting until the port accepts connections.
func startNbdkit(ctx context.Context, dir string, size int64) (*server, error) {
	path := filepath.Join(dir, "nbdkit.img")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		f.Close()
		return nil, fmt.Errorf("preallocating %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("nbdkit", "-f", "-p", port, "-i", "127.0.0.1", "--exit-with-parent", "file", path)
	s, err := start("nbdkit", cmd, filepath.Join(dir, "nbdkit.log"), nil)
	if err != nil {
		return nil, err
	}
	s.uri = "nbd://" + addr + "/default"
	s.file = path
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		if err := s.alive(); err != nil {
			return nil, err
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			s.stop(10 * time.Second)
			return nil, fmt.Errorf("nbdkit did not accept connections on %s: %w", addr, errors.Join(ctx.Err(), err))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freeAddr returns a 127.0.0.1 address that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpuTime returns the user+system CPU time the process (all its threads)
// has used so far, from /proc/PID/stat (10 ms resolution).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces and parens):
	// state is field 3, utime field 14, stime field 15.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// memory returns VmRSS and VmHWM (peak RSS) of the process in bytes.
func memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		var kb int64
		if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
			return 0, 0, fmt.Errorf("unexpected %s line in /proc/%d/status: %q", k, pid, line)
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	return rss, hwm, nil
}

// anonMemory returns RssAnon of the process in bytes: its resident memory
// without file pages (cairn maps its segments to read them, so pages of
// the page cache it has read count in VmRSS too).
func anonMemory(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("unexpected RssAnon line in /proc/%d/status: %q", pid, line)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no RssAnon in /proc/%d/status", pid)
}
