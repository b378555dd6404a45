package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// nbdinfoJSON runs `nbdinfo --json` and returns its first export.
func nbdinfoJSON(t *testing.T, args ...string) []map[string]any {
	t.Helper()
	cairntest.NeedTool(t, "nbdinfo")
	out := Run(t, time.Minute, "nbdinfo", append([]string{"--json"}, args...)...)
	var doc struct {
		Exports []map[string]any `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	return doc.Exports
}

// TestNBDInfoSeesAnHonestDisk: nbdinfo reports the size, block sizes and
// every capability, and --list shows every volume, snapshots read-only.
func TestNBDInfoSeesAnHonestDisk(t *testing.T) {
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "1GiB")
	s.Start(ctx)

	ex := nbdinfoJSON(t, s.URI("default"))
	if len(ex) != 1 {
		t.Fatalf("nbdinfo: %d exports, want 1", len(ex))
	}
	e := ex[0]
	want := map[string]any{
		"export-size":          float64(1 << 30),
		"block_size_minimum":   float64(512),
		"block_size_preferred": float64(4096),
		"can_flush":            true,
		"can_fua":              true,
		"can_trim":             true,
		"can_zero":             true,
		"is_read_only":         false,
	}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("nbdinfo %s = %v, want %v (all: %v)", k, e[k], v, e)
		}
	}

	if out, err := s.Cairn("volume", "create", "second", "--size", "64MiB"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := s.Cairn("volume", "snapshot", "second", "second-snap"); err != nil {
		t.Fatal(err, out)
	}
	list := nbdinfoJSON(t, "--list", "nbd://"+s.NBD)
	got := map[string]bool{}
	for _, e := range list {
		name, _ := e["export-name"].(string)
		got[name] = e["is_read_only"] == true
	}
	for name, ro := range map[string]bool{"default": false, "second": false, "second-snap": true} {
		if r, ok := got[name]; !ok || r != ro {
			t.Errorf("nbdinfo --list: export %q present=%v read-only=%v, want present, read-only=%v (got %v)", name, ok, r, ro, got)
		}
	}
}

// makeImage writes a file of size bytes: random data, with every third
// 4 MiB stretch left as a hole.
func makeImage(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 4<<20)
	for off, i := int64(0), 0; off < size; off, i = off+int64(len(buf)), i+1 {
		if i%3 == 2 {
			continue // a hole
		}
		for j := 0; j < len(buf); j += 8 {
			v := r.Uint64()
			for k := 0; k < 8; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestNBDCopyRoundTripSkipsHoles: a 256 MiB image with holes copied in and
// out with nbdcopy reads back byte for byte, and the copy out leaves the
// holes unallocated because BLOCK_STATUS reported them.
func TestNBDCopyRoundTripSkipsHoles(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "256MiB")
	s.Start(ctx)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.img"), filepath.Join(dir, "out.img")
	const size = 256 << 20
	makeImage(t, in, size, 1)

	Run(t, 5*time.Minute, "nbdcopy", in, s.URI("default"))
	Run(t, 5*time.Minute, "nbdcopy", s.URI("default"), out)
	if a, b := fileSHA(t, in), fileSHA(t, out); a != b {
		t.Fatalf("sha256 in %s, out %s", a, b)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(out, &st); err != nil {
		t.Fatal(err)
	}
	allocated := st.Blocks * 512
	// A third of the image is holes: the copy out must not have written them.
	if allocated > size*3/4 {
		t.Errorf("copy out allocated %d of %d bytes: holes were copied as data", allocated, size)
	}
	m := Run(t, time.Minute, "nbdinfo", "--map", s.URI("default"))
	if !strings.Contains(m, "hole") {
		t.Errorf("nbdinfo --map shows no hole:\n%s", m)
	}
}

// TestFioVerify: fio's nbd engine writes random 4 KiB blocks with several
// jobs and queue depths and verifies every one (crc32c).
func TestFioVerify(t *testing.T) {
	cairntest.NeedTool(t, "fio")
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "512MiB")
	s.Start(ctx)
	for _, depth := range []string{"1", "32"} {
		t.Run("iodepth="+depth, func(t *testing.T) {
			out := Run(t, 10*time.Minute, "fio", "--name=verify", "--verify_state_save=0", "--ioengine=nbd", "--uri="+s.URI("default"),
				"--rw=randwrite", "--bs=4k", "--size=32m", "--numjobs=2", "--offset_increment=64m",
				"--iodepth="+depth, "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--group_reporting")
			if strings.Contains(out, "verify:") && strings.Contains(out, "bad") {
				t.Fatalf("fio reported verify errors:\n%s", out)
			}
			if !strings.Contains(out, "err= 0") {
				t.Fatalf("fio did not report err= 0:\n%s", out)
			}
		})
	}
	// Also mixed sizes with sha256 and write+flush (fsync) cycles.
	out := Run(t, 10*time.Minute, "fio", "--name=mixed", "--verify_state_save=0", "--ioengine=nbd", "--uri="+s.URI("default"),
		"--rw=randwrite", "--bsrange=512-64k", "--size=16m", "--offset=256m", "--iodepth=8", "--fsync=16",
		"--verify=sha256", "--verify_fatal=1")
	if !strings.Contains(out, "err= 0") {
		t.Fatalf("fio mixed:\n%s", out)
	}
}

// nbdsh runs a Python snippet in nbdsh connected to uri.
func nbdsh(t *testing.T, uri, script string) (string, error) {
	t.Helper()
	cairntest.NeedTool(t, "nbdsh")
	return RunErr(t, 3*time.Minute, "nbdsh", "-u", uri, "-c", script)
}

// TestKill9LosesNothingFlushed: a writer writes random 4 KiB blocks and
// flushes every 50, then (second round) after every write, as a database
// commits, which the node writes behind (see volume's WriteBehind), then
// every 7; after each FLUSH returns it records what it wrote. The
// node is killed with SIGKILL at a random moment (checkpoints run every
// 100 ms, so kills land mid-checkpoint too), restarted, and every recorded
// block must read back. Each 4 KiB slot is written at most once, so a
// block written after the last flush can never mask a flushed one.
func TestKill9LosesNothingFlushed(t *testing.T) {
	cairntest.NeedTool(t, "nbdsh")
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "256MiB", "--checkpoint-every", "100ms")
	s.Start(ctx)
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 4))
	const slots = 256 << 20 / 4096
	perm := r.Perm(slots)
	var records []string
	every := []int{50, 1, 7}
	for round := 0; round < 3; round++ {
		rec := filepath.Join(dir, fmt.Sprintf("flushed-%d.txt", round))
		records = append(records, rec)
		mine := perm[round*(slots/3) : (round+1)*(slots/3)]
		slotList := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(mine[:6000])), ","), "[]")
		writer := fmt.Sprintf(`
import random
random.seed(%d)
slots = [%s]
out = open(%q, "w", buffering=1)
pending = []
for i, slot in enumerate(slots):
    off = slot * 4096
    buf = random.randbytes(4096)
    h.pwrite(buf, off)
    pending.append((off, buf.hex()))
    if i %% %d == %d:
        h.flush()
        for o, b in pending:
            out.write("%%d %%s\n" %% (o, b))
        pending = []
`, round, slotList, rec, every[round], every[round]-1)
		cmd := exec.Command("nbdsh", "-u", s.URI("default"), "-c", writer)
		cmd.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
		var wout bytes.Buffer
		cmd.Stdout, cmd.Stderr = &wout, &wout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(700+r.IntN(2000)) * time.Millisecond)
		s.Kill()
		_ = cmd.Wait() // it fails: its server is gone
		if _, err := os.Stat(rec); err != nil {
			t.Fatalf("round %d: the writer wrote nothing: %v\n%s", round, err, wout.String())
		}
		s.Start(ctx)
	}
	quoted := make([]string, len(records))
	for i, r := range records {
		quoted[i] = fmt.Sprintf("%q", r)
	}
	check := `
bad = n = 0
for path in [` + strings.Join(quoted, ", ") + `]:
    for line in open(path):
        parts = line.split()
        if len(parts) != 2 or len(parts[1]) != 8192:
            continue  # the writer died mid-line
        off, want = int(parts[0]), bytes.fromhex(parts[1])
        n += 1
        if h.pread(4096, off) != want:
            bad += 1
print("checked", n, "bad", bad)
`
	out := Run(t, 3*time.Minute, "nbdsh", "-u", s.URI("default"), "-c", check)
	var n, bad int
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "checked %d bad %d", &n, &bad); err != nil {
		t.Fatalf("check output %q: %v", out, err)
	}
	if n < 100 {
		t.Fatalf("only %d flushed blocks recorded: the writer did not get going (%s)", n, out)
	}
	if bad != 0 {
		t.Fatalf("%d of %d flushed blocks lost or wrong after kill -9", bad, n)
	}
	t.Logf("%d flushed blocks survived 3 kill -9s", n)
}

// TestSecondWriterAndReadOnly: while an NBD client has the volume
// attached, a second writer (here `cairn volume import`) is refused with a
// clear message and the first client keeps working; a snapshot export
// refuses writes with EPERM and serves reads.
func TestSecondWriterAndReadOnly(t *testing.T) {
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "64MiB")
	s.Start(ctx)
	cairntest.NeedTool(t, "nbdsh")
	holder := exec.Command("nbdsh", "-u", s.URI("default"), "-c", `
import sys, time
h.pwrite(b"A" * 4096, 0)
h.flush()
print("ready", flush=True)
sys.stdin.readline()
assert h.pread(4096, 0) == b"A" * 4096
h.pwrite(b"A" * 4096, 4096)
h.flush()
print("first still works", flush=True)
`)
	holder.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var hout bytes.Buffer
	pr, pw := io.Pipe()
	holder.Stdout, holder.Stderr = pw, &hout
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 6)
	if _, err := io.ReadFull(pr, line); err != nil || string(line) != "ready\n" {
		t.Fatalf("holder: %q %v %s", line, err, hout.String())
	}
	var rest bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&rest, pr); close(copied) }()
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("B"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := s.Cairn("volume", "import", "-q", "default", img)
	if err == nil {
		t.Fatalf("import into an attached volume succeeded:\n%s", out)
	}
	if !strings.Contains(out, "attached") {
		t.Errorf("import refusal does not say the volume is attached: %s", out)
	}
	stdin.Write([]byte("go\n"))
	stdin.Close()
	werr := holder.Wait()
	pw.Close()
	<-copied
	if werr != nil {
		t.Fatalf("first writer failed after the refusal: %v\n%s%s", werr, rest.String(), hout.String())
	}
	if !strings.Contains(rest.String(), "first still works") {
		t.Fatalf("first writer: %s%s", rest.String(), hout.String())
	}

	if o, err := s.Cairn("volume", "snapshot", "default", "snap"); err != nil {
		t.Fatal(err, o)
	}
	ro := `
import nbd, errno
h.set_strict_mode(0)  # let the write reach the server
assert h.is_read_only()
assert h.pread(4096, 0) == b"A" * 4096
try:
    h.pwrite(b"C" * 512, 0)
    print("write accepted")
except nbd.Error as e:
    print("write refused errno", e.errnum == errno.EPERM)
`
	out, err = nbdsh(t, s.URI("snap"), ro)
	if err != nil {
		t.Fatalf("nbdsh: %v\n%s", err, out)
	}
	if !strings.Contains(out, "write refused errno True") {
		t.Fatalf("read-only export: want EPERM:\n%s", out)
	}
}

// TestOutOfRangeAndGarbage: an out-of-range read gets EINVAL and the
// connection goes on; garbage on a raw socket closes only that connection.
func TestOutOfRangeAndGarbage(t *testing.T) {
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "64MiB")
	s.Start(ctx)
	for i := 0; i < 20; i++ {
		c, err := net.DialTimeout("tcp", s.NBD, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 1+i*97)
		for j := range junk {
			junk[j] = byte(j*31 + i)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(junk)
		io.Copy(io.Discard, io.LimitReader(c, 1<<16))
		c.Close()
	}
	script := `
import nbd, errno
h.set_strict_mode(0)  # let the request reach the server: libnbd would refuse it itself
size = h.get_size()
try:
    h.pread(4096, size)
    print("read past end accepted")
except nbd.Error as e:
    print("einval", e.errnum == errno.EINVAL)
h.pwrite(b"x" * 512, 0)
h.flush()
assert h.pread(512, 0) == b"x" * 512
print("still serving")
`
	out, err := nbdsh(t, s.URI("default"), script)
	if err != nil {
		t.Fatalf("nbdsh: %v\n%s", err, out)
	}
	if !strings.Contains(out, "einval True") || !strings.Contains(out, "still serving") {
		t.Fatalf("%s", out)
	}
	if !bytes.Contains([]byte(s.Log()), []byte("serving volume")) {
		t.Fatal("server log lost its start line")
	}
}
