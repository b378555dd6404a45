package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// exitCode returns the exit status carried by err from Server.Cairn.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}

// TestVolumeCommands drives the CLI against a running node: create with a
// policy, list, inspect, resize, snapshot, clone, import and export (with
// their progress bars), delete, status and gc; and the errors a user can
// cause, with their exit codes.
func TestVolumeCommands(t *testing.T) {
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "64MiB")
	s.Start(ctx)
	root := filepath.Join("..", "..", "examples", "policies")

	mustRun := func(args ...string) string {
		t.Helper()
		out, err := s.Cairn(args...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return out
	}
	out := mustRun("volume", "create", "db", "--size", "128MiB", "--policy", filepath.Join(root, "single.toml"))
	if !strings.Contains(out, "128 MiB") {
		t.Errorf("create output lacks the size:\n%s", out)
	}
	// examples/policies/media.toml spreads 6 pieces over 6 nodes; on one
	// node the pieces must be allowed to share it.
	media := filepath.Join(t.TempDir(), "media1.toml")
	os.WriteFile(media, []byte("block_size = \"1MiB\"\ncompression = \"lz4\"\n[redundancy]\ndata = 4\nparity = 2\n[placement]\nspread = \"none\"\n"), 0o644)
	mustRun("volume", "create", "media", "--size", "256MiB", "--policy", media)
	list := mustRun("volume", "list")
	for _, want := range []string{"default", "db", "media", "4+2 erasure coding"} {
		if !strings.Contains(list, want) {
			t.Errorf("volume list lacks %q:\n%s", want, list)
		}
	}

	// import a 10 MiB image, export it, compare.
	dir := t.TempDir()
	img := filepath.Join(dir, "in.img")
	data := bytes.Repeat([]byte("0123456789abcdef"), 10<<20/16)
	copy(data[5<<20:], bytes.Repeat([]byte{0}, 1<<20)) // a zero stretch stays a hole
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	out = mustRun("volume", "import", "db", img)
	if !strings.Contains(out, "imported 10 MiB into db") {
		t.Errorf("import output:\n%s", out)
	}
	exp := filepath.Join(dir, "out.img")
	mustRun("volume", "export", "db", exp)
	got, err := os.ReadFile(exp)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 128<<20 || !bytes.Equal(got[:len(data)], data) || !bytes.Equal(got[len(data):], make([]byte, len(got)-len(data))) {
		t.Errorf("export differs from the imported image (len %d)", len(got))
	}
	info := mustRun("volume", "inspect", "db")
	if !strings.Contains(info, "written:     9 MiB") && !strings.Contains(info, "written:") {
		t.Errorf("inspect:\n%s", info)
	}

	mustRun("volume", "resize", "db", "--size", "256MiB")
	if info := mustRun("volume", "inspect", "db"); !strings.Contains(info, "256 MiB") {
		t.Errorf("after resize:\n%s", info)
	}
	mustRun("volume", "snapshot", "db", "db-snap")
	mustRun("volume", "clone", "db-snap", "db-clone")
	exp2 := filepath.Join(dir, "clone.img")
	mustRun("volume", "export", "-q", "db-clone", exp2)
	got2, _ := os.ReadFile(exp2)
	if len(got2) < len(data) || !bytes.Equal(got2[:len(data)], data) {
		t.Errorf("clone does not hold the snapshot's data")
	}
	mustRun("volume", "delete", "db-clone")

	st := mustRun("status")
	for _, want := range []string{"node:", "nbd:", "storage:", "shards:"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}
	mustRun("gc")

	// Errors a user can cause: message and exit code.
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"volume", "create", "x", "--size", "10GB"}, 2, "write 10GiB"},
		{[]string{"volume", "create", "x", "--size", "1000"}, 2, "not a multiple of 512"},
		{[]string{"volume", "create", "db", "--size", "1GiB"}, 1, "already exists"},
		{[]string{"volume", "create", "Bad Name!", "--size", "1GiB"}, 1, "name"},
		{[]string{"volume", "inspect", "nope"}, 3, "no such volume"},
		{[]string{"volume", "delete", "nope"}, 3, "no such volume"},
		{[]string{"volume", "create", "big", "--size", "1GiB", "--policy", filepath.Join(root, "database.toml")}, 1, "replicas = 3"},
		{[]string{"volume", "inspect"}, 2, "exactly one volume name"},
		{[]string{"volume", "frobnicate"}, 2, ""},
		{[]string{"serve", "--write-cache", "12x"}, 2, "--write-cache"},
		{[]string{"serve", "--write-cache", "1KiB"}, 2, "at least 1MiB"},
		{[]string{"serve", "--nbd-loopback-cc", "BBR!"}, 2, "--nbd-loopback-cc"},
	} {
		out, err := s.Cairn(tc.args...)
		if code := exitCode(err); code != tc.code {
			t.Errorf("cairn %s: exit %d, want %d\n%s", strings.Join(tc.args, " "), code, tc.code, out)
		}
		if !strings.Contains(out, tc.msg) {
			t.Errorf("cairn %s: message lacks %q:\n%s", strings.Join(tc.args, " "), tc.msg, out)
		}
	}

	// With no node running, commands say so (exit 4).
	s.Stop()
	out, err = s.Cairn("volume", "list")
	if exitCode(err) != 4 || !strings.Contains(out, "no Cairn node is running") {
		t.Errorf("volume list without a node: exit %d\n%s", exitCode(err), out)
	}
}

// TestPolicyCheck: `cairn policy check` explains good files and points at
// the line of bad ones.
func TestPolicyCheck(t *testing.T) {
	bin := cairntest.Binary(t)
	out := Run(t, time.Minute, bin, "policy", "check", filepath.Join("..", "..", "examples", "policies", "media.toml"))
	if !strings.Contains(out, "ok") || !strings.Contains(out, "4+2") {
		t.Errorf("policy check media.toml:\n%s", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("name = \"x\"\nblock_size = \"3KiB\"\ncompresion = \"lz4\"\n"), 0o644)
	out, err := RunErr(t, time.Minute, bin, "policy", "check", bad)
	if err == nil {
		t.Fatalf("bad policy accepted:\n%s", out)
	}
	for _, want := range []string{"bad.toml:2:", "power of two", "bad.toml:3:", "compression"} {
		if !strings.Contains(out, want) {
			t.Errorf("policy check bad.toml lacks %q:\n%s", want, out)
		}
	}
	out, err = RunErr(t, time.Minute, bin, "policy", "check", "--nodes", "3", filepath.Join("..", "..", "examples", "policies", "media.toml"))
	if err == nil || !strings.Contains(out, "6") {
		t.Errorf("media.toml on 3 nodes should be refused:\n%s", out)
	}
}

// TestSIGTERMFlushesEverything: writes that no client flushed are still
// there after a clean stop (SIGTERM) and a restart.
func TestSIGTERMFlushesEverything(t *testing.T) {
	cairntest.NeedTool(t, "nbdsh")
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "64MiB")
	s.Start(ctx)
	holder := exec.Command("nbdsh", "-u", s.URI("default"), "-c", `
import sys
for i in range(256):
    h.pwrite(bytes([i]) * 4096, i * 4096)
print("written", flush=True)
sys.stdin.readline()
`)
	holder.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
	stdin, _ := holder.StdinPipe()
	outp, _ := holder.StdoutPipe()
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := outp.Read(buf); err != nil || !strings.HasPrefix(string(buf), "written") {
		t.Fatalf("holder: %q %v", buf, err)
	}
	// The client is still connected and never flushed.
	s.Stop()
	stdin.Close()
	holder.Wait()
	s.Start(ctx)
	out, err := nbdsh(t, s.URI("default"), `
bad = 0
for i in range(256):
    if h.pread(4096, i * 4096) != bytes([i]) * 4096:
        bad += 1
print("bad", bad)
`)
	if err != nil || !strings.Contains(out, "bad 0") {
		t.Fatalf("unflushed writes lost across a clean stop: %v\n%s", err, out)
	}
}
