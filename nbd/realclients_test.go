package nbd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tests against NBD clients nobody here wrote: libnbd's nbdinfo, nbdcopy
// and nbdsh, and fio's nbd engine. Install them with
//
//	apt-get install -y libnbd-bin fio nbdkit python3-libnbd
//
// Without them these tests skip, except under CI (CI=true), where a
// missing tool fails the test.

// requireTool returns the path of a client tool or skips (fails under CI).
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		p, err = exec.LookPath("/usr/bin/" + name)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI: %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install -y libnbd-bin fio python3-libnbd): %v", name, err)
	}
	return p
}

// run runs a client with a generous timeout and returns its stdout.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// nbdsh needs Debian's python3 (with the nbd module) first on PATH.
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:"+os.Getenv("PATH"))
	cmd.Dir = t.TempDir() // fio leaves verify state files in its working directory
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func uri(addr, name string) string { return "nbd://" + addr + "/" + name }

// nbdinfo --json reports what the server advertised: size, block size
// constraints (spec "Size constraints", NBD_INFO_BLOCK_SIZE) and the
// transmission flags (spec "Transmission flags").
func TestNbdinfo(t *testing.T) {
	nbdinfo := requireTool(t, "nbdinfo")
	exp, disk := testExports()
	_, addr := startServer(t, exp)
	ctx := context.Background()
	disk.WriteAt(ctx, make([]byte, 1<<20), 4<<20)

	var info struct {
		Exports []map[string]any `json:"exports"`
	}
	out := run(t, nbdinfo, "--json", uri(addr, "disk"))
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	e := info.Exports[0]
	for k, want := range map[string]any{
		"export-size": float64(16 << 20), "block_size_minimum": float64(512), "block_size_preferred": float64(4096),
		"block_size_maximum": float64(32 << 20), "is_read_only": false, "can_flush": true, "can_trim": true,
		"can_fua": true, "can_zero": true, "can_fast_zero": true, "can_cache": true, "can_df": true, "can_multi_conn": false,
	} {
		if e[k] != want {
			t.Errorf("nbdinfo %s = %v, want %v", k, e[k], want)
		}
	}
	if !strings.Contains(out, "base:allocation") {
		t.Errorf("base:allocation not listed:\n%s", out)
	}

	out = run(t, nbdinfo, "--json", uri(addr, "ro"))
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo ro: %v\n%s", err, out)
	}
	if e := info.Exports[0]; e["is_read_only"] != true || e["can_trim"] != false || e["export-size"] != float64(1<<20) {
		t.Errorf("read-only export: %v", e)
	}

	// --list shows every export with its description. nbdinfo opens each
	// export with NBD_OPT_GO and exits 1 if one is refused, so the
	// export held by another writer is taken out of the list first.
	exp.mu.Lock()
	delete(exp.devs, "busy")
	exp.mu.Unlock()
	out = run(t, nbdinfo, "--list", "--json", uri(addr, ""))
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo --list: %v\n%s", err, out)
	}
	var names []string
	for _, e := range info.Exports {
		names = append(names, fmt.Sprint(e["export-name"]))
	}
	if got := strings.Join(names, ","); got != "disk,ro" || !strings.Contains(out, "the test disk") {
		t.Errorf("nbdinfo --list exports %q:\n%s", got, out)
	}

	// --map shows the hole structure of base:allocation.
	var m []struct {
		Offset, Length int64
		Type           int
	}
	out = run(t, nbdinfo, "--map", "--json", uri(addr, "disk"))
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("nbdinfo --map: %v\n%s", err, out)
	}
	want := fmt.Sprint([]any{[]int64{0, 4 << 20, 3}, []int64{4 << 20, 1 << 20, 0}, []int64{5 << 20, 11 << 20, 3}})
	var got []any
	for _, x := range m {
		got = append(got, []int64{x.Offset, x.Length, int64(x.Type)})
	}
	if fmt.Sprint(got) != want {
		t.Errorf("nbdinfo --map = %v, want %v\n%s", got, want, out)
	}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// nbdcopy copies a random image in and out unchanged, and copying a sparse
// export out does not read its holes (it follows BLOCK_STATUS).
func TestNbdcopy(t *testing.T) {
	nbdcopy := requireTool(t, "nbdcopy")
	size := int64(64 << 20)
	if testing.Short() {
		size = 16 << 20
	}
	disk := newMem(size)
	sparse := newMem(size)
	exp := &memExports{devs: map[string]*memDevice{"disk": disk, "sparse": sparse}}
	_, addr := startServer(t, exp)
	dir := t.TempDir()

	img := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < len(img); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			img[i+j] = byte(v >> (8 * j))
		}
	}
	in := filepath.Join(dir, "in.img")
	writeFile(t, in, img)
	run(t, nbdcopy, in, uri(addr, "disk"))
	data, durable := disk.snapshot()
	if sha(data) != sha(img) || sha(durable) != sha(img) {
		t.Fatal("image copied in differs (or was not flushed)")
	}
	out := filepath.Join(dir, "out.img")
	run(t, nbdcopy, uri(addr, "disk"), out)
	got, err := os.ReadFile(out)
	if err != nil || sha(got) != sha(img) {
		t.Fatalf("image copied out differs: %v", err)
	}

	// Sparse: 1 MiB of data at 8 MiB and 4 KiB at 12 MiB, the rest holes.
	ctx := context.Background()
	sparse.WriteAt(ctx, img[:1<<20], 8<<20)
	sparse.WriteAt(ctx, img[1<<20:1<<20+4096], 12<<20)
	out2 := filepath.Join(dir, "sparse.img")
	run(t, nbdcopy, uri(addr, "sparse"), out2)
	got, err = os.ReadFile(out2)
	want, _ := sparse.snapshot()
	if err != nil || sha(got) != sha(want) {
		t.Fatalf("sparse image copied out differs: %v", err)
	}
	// nbdcopy reads whole requests (256 KiB) that contain data, and skips
	// requests that BLOCK_STATUS reports as holes.
	overlaps := func(s span, off, n int64) bool { return s.off < off+n && off < s.off+s.n }
	for _, s := range sparse.readSpans() {
		if !overlaps(s, 8<<20, 1<<20) && !overlaps(s, 12<<20, 4096) {
			t.Errorf("nbdcopy read [%d, +%d), which is all hole", s.off, s.n)
		}
	}
	if n := sparse.readBytes.Load(); n > 2<<20 {
		t.Errorf("nbdcopy read %d bytes of a sparse export holding %d", n, 1<<20+4096)
	}
}

// fio's nbd engine: random writes verified with crc32c, two jobs each on
// its own range, at queue depth 1 and 16.
func TestFio(t *testing.T) {
	fio := requireTool(t, "fio")
	if out, _ := exec.Command(fio, "--enghelp").CombinedOutput(); !strings.Contains(string(out), "nbd") {
		if os.Getenv("CI") == "true" {
			t.Fatal("fio lacks the nbd engine")
		}
		t.Skip("fio built without the nbd engine")
	}
	exp, _ := testExports()
	_, addr := startServer(t, exp)
	size := "4m"
	if testing.Short() {
		size = "1m"
	}
	for _, depth := range []string{"1", "16"} {
		t.Run("iodepth="+depth, func(t *testing.T) {
			out := run(t, fio, "--name=verify", "--ioengine=nbd", "--uri="+uri(addr, "disk"),
				"--rw=randwrite", "--bs=4k", "--size="+size, "--offset_increment="+size, "--numjobs=2",
				"--iodepth="+depth, "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0",
				"--group_reporting", "--output-format=json")
			var res struct {
				Jobs []struct {
					Error int `json:"error"`
					Write struct {
						Bytes int64 `json:"io_bytes"`
					} `json:"write"`
					Read struct {
						Bytes int64 `json:"io_bytes"`
					} `json:"read"`
				} `json:"jobs"`
			}
			i := strings.Index(out, "{")
			if i < 0 || json.Unmarshal([]byte(out[i:]), &res) != nil || len(res.Jobs) == 0 {
				t.Fatalf("fio output:\n%s", out)
			}
			for _, j := range res.Jobs {
				// Verification reads back everything written.
				if j.Error != 0 || j.Write.Bytes == 0 || j.Read.Bytes < j.Write.Bytes {
					t.Fatalf("fio job error %d, wrote %d, verified %d:\n%s", j.Error, j.Write.Bytes, j.Read.Bytes, out)
				}
				t.Logf("fio wrote %d bytes and verified %d", j.Write.Bytes, j.Read.Bytes)
			}
		})
	}
}

// nbdsh (libnbd's Python shell) drives single commands with strict mode
// off, so libnbd sends what the server must refuse itself.
func TestNbdsh(t *testing.T) {
	nbdsh := requireTool(t, "nbdsh")
	if err := exec.Command("/usr/bin/python3", "-c", "import nbd").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3-libnbd is required under CI")
		}
		t.Skip("python3 nbd module missing (apt-get install python3-libnbd)")
	}
	exp, disk := testExports()
	_, addr := startServer(t, exp)
	script := `
import errno, nbd

def conn(name):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri("nbd://ADDR/" + name)
    h.set_strict_mode(0)
    return h

def expect_errno(fn, want, what):
    try:
        fn()
    except nbd.Error as e:
        assert e.errnum == want, "%s: errno %s, want %s" % (what, e.errnum, want)
        return
    raise AssertionError(what + ": no error")

h = conn("disk")
size = h.get_size()
assert size == 16 << 20, size
assert h.can_fua() and h.can_trim() and h.can_zero() and h.can_flush()

# Spec "Error values": a read beyond the end is NBD_EINVAL; the
# connection still works afterwards.
expect_errno(lambda: h.pread(512, size), errno.EINVAL, "read past end")
expect_errno(lambda: h.pread(4096, size - 512), errno.EINVAL, "read across end")
assert h.pread(512, 0) == bytes(512)

# FUA write, read back.
data = bytes(range(256)) * 16
h.pwrite(data, 8192, nbd.CMD_FLAG_FUA)
assert h.pread(4096, 8192) == data

# Trim, then the range reads as zeros and is a hole.
h.trim(4096, 8192)
assert h.pread(4096, 8192) == bytes(4096)

# Zero with NO_HOLE: zeros, but allocated.
h.pwrite(data, 65536)
h.zero(4096, 65536, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 65536) == bytes(4096)

# Plain zero may punch a hole.
h.pwrite(data, 131072)
h.zero(4096, 131072)

# BLOCK_STATUS over [0, 192 KiB).
ext = []
def cb(ctx, off, entries, err):
    assert ctx == nbd.CONTEXT_BASE_ALLOCATION, ctx
    ext.extend(entries)
    return 0
h.block_status(196608, 0, cb)
# entries alternate length, flags
pairs = list(zip(ext[0::2], ext[1::2]))
total = 0
status = {}
for (length, flags) in pairs:
    for o in range(total, total + length, 4096):
        status[o] = flags
    total += length
assert total >= 196608, pairs
assert status[8192] == 3, pairs    # trimmed: hole|zero
assert status[65536] == 0, pairs   # NO_HOLE: allocated
assert status[131072] == 3, pairs  # zero without NO_HOLE: hole
assert status[0] == 3, pairs

h.flush()
h.shutdown()

# Spec "Error values": a write or trim on a read-only export is NBD_EPERM.
r = conn("ro")
assert r.is_read_only()
expect_errno(lambda: r.pwrite(bytes(512), 0), errno.EPERM, "write read-only")
expect_errno(lambda: r.trim(512, 0), errno.EPERM, "trim read-only")
assert r.pread(4, 256) == bytes([0, 1, 2, 3])
r.shutdown()

# An export another writer holds is refused by policy; a missing one is unknown.
for name in ("busy", "nope"):
    g = nbd.NBD()
    try:
        g.connect_uri("nbd://ADDR/" + name)
    except nbd.Error as e:
        pass
    else:
        raise AssertionError("connected to " + name)
print("ok")
`
	script = strings.ReplaceAll(script, "ADDR", addr)
	out := run(t, nbdsh, "-c", script)
	if !strings.Contains(out, "ok") {
		t.Fatalf("nbdsh:\n%s", out)
	}
	_, durable := disk.snapshot()
	if !bytes.Equal(durable[65536:65536+4096], make([]byte, 4096)) {
		t.Fatal("zeroed range not flushed")
	}
}
