package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// TestFullDisk: a node whose data directory sits on a small file system
// (300 MiB of ext4 on a loop device), with thin volumes larger than it.
// Filling it through NBD gets the client an ENOSPC reply to its FLUSH,
// without a hang and without dropping the node; what another volume had
// flushed before reads back; `cairn gc` then gives the unreferenced
// pieces' space back on the full disk itself (tombstones and compaction
// use the silo's reserve) and writes go through again; and a node stopped
// with its disk full starts again (the reserve makes room for raft's
// log) and serves its data.
func TestFullDisk(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	ctx := context.Background()
	dir := t.TempDir()
	data := smallDisk(t, dir, 300<<20) // before the server: unmounted after its cleanup
	s := cairntest.NewServer(t, "--size", "1GiB")
	s.Data = data
	s.Start(ctx)
	if out, err := s.Cairn("volume", "create", "keep", "--size", "32MiB"); err != nil {
		t.Fatal(err, out)
	}
	keepImg, bigImg := filepath.Join(dir, "keep.img"), filepath.Join(dir, "big.img")
	makeImage(t, keepImg, 32<<20, 21)
	makeImage(t, bigImg, 600<<20, 22) // 400 MiB of data: more than the disk holds
	Run(t, 2*time.Minute, "nbdcopy", "--flush", keepImg, s.URI("keep"))
	checkKeep := func(when string) {
		t.Helper()
		got := filepath.Join(dir, "keep.out")
		Run(t, 2*time.Minute, "nbdcopy", s.URI("keep"), got)
		if fileSHA(t, got) != fileSHA(t, keepImg) {
			t.Fatalf("%s: the flushed volume does not read back", when)
		}
	}
	fill := func(when string) {
		t.Helper()
		// The old silo tried to make a whole segment for every chunk
		// once the disk was full: 7 minutes before the FLUSH failed.
		out, err := RunErr(t, 3*time.Minute, "nbdcopy", "--flush", bigImg, s.URI("default"))
		if err == nil || !strings.Contains(out, "No space left on device") || strings.Contains(out, "timed out") {
			t.Fatalf("%s: filling the disk: %v, want an ENOSPC reply:\n%s", when, err, out)
		}
		if _, err := s.Cairn("status"); err != nil {
			t.Fatalf("%s: the node does not answer after ENOSPC: %v", when, err)
		}
	}

	fill("first fill")
	checkKeep("after the disk filled")
	out, err := s.Cairn("gc")
	if err != nil {
		t.Fatalf("gc on a full disk: %v\n%s", err, out)
	}
	t.Logf("gc on the full disk: %s", strings.TrimSpace(out))
	after := filepath.Join(dir, "after.img")
	makeImage(t, after, 16<<20, 23)
	if out, err := s.Cairn("volume", "create", "after", "--size", "16MiB"); err != nil {
		t.Fatal(err, out)
	}
	Run(t, 2*time.Minute, "nbdcopy", "--flush", after, s.URI("after"))

	fill("second fill")
	s.Stop()
	if !strings.Contains(s.Log(), "written but never flushed could not be stored") || strings.Contains(s.Log(), "every write was flushed") {
		t.Errorf("the node claimed at its stop to have stored writes its store refused:\n%s", s.Log())
	}
	s.Start(ctx) // on a full disk
	if !strings.Contains(s.Log(), "the reserve is released so that the node can start") {
		t.Errorf("the node started on a full disk without releasing its reserve:\n%s", s.Log())
	}
	checkKeep("after a restart on a full disk")
	if out, err := s.Cairn("gc"); err != nil {
		t.Fatalf("gc after a restart on a full disk: %v\n%s", err, out)
	}
	got := filepath.Join(dir, "after.out")
	Run(t, 2*time.Minute, "nbdcopy", s.URI("after"), got)
	if fileSHA(t, got) != fileSHA(t, after) {
		t.Fatal("the volume written after the first gc does not read back")
	}
}

// smallDisk mounts a file system of size bytes (ext4 on a loop device,
// its image in dir) until the test ends, and returns a data directory on
// it; it needs root and the tools to make and mount it. The unmount is registered before the caller's servers, so it runs
// after they are killed.
func smallDisk(t *testing.T, dir string, size int64) string {
	t.Helper()
	cairntest.NeedRoot(t)
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		cairntest.NeedTool(t, tool)
	}
	fsImg, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.WriteFile(fsImg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(fsImg, size); err != nil {
		t.Fatal(err)
	}
	Run(t, time.Minute, "mkfs.ext4", "-q", "-F", fsImg)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	Run(t, time.Minute, "mount", "-o", "loop", fsImg, mnt)
	t.Cleanup(func() {
		if out, err := RunErr(t, time.Minute, "umount", mnt); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return filepath.Join(mnt, "data")
}

// TestClusterNodeDiskFull: 3 nodes, a replicas = 3 volume, and node C's
// data directory on a 300 MiB file system. Writing 400 MiB through A
// fills C's disk part way: the writes and their FLUSHes still succeed
// (C's pieces go to the other nodes, noted for give-back), C stays in
// the cluster and answers, and every byte reads back through A and
// through C's own export.
func TestClusterNodeDiskFull(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	ctx := context.Background()
	dir := t.TempDir()
	cData := smallDisk(t, dir, 300<<20)
	a := cairntest.NewNode(t, "127.0.0.2")
	a.Start(ctx)
	b := cairntest.NewNode(t, "127.0.0.3", "--join", a.Listen, "--secret", a.Secret)
	b.Start(ctx)
	c := cairntest.NewNode(t, "127.0.0.4", "--join", a.Listen, "--secret", a.Secret)
	c.Data = cData
	c.Start(ctx)
	nodes := []*cairntest.Server{a, b, c}
	waitFor(t, 60*time.Second, "every node to see every node alive", func() bool {
		for _, s := range nodes {
			if alive(t, s) != 3 || !replicated(t, s, 3) {
				return false
			}
		}
		return true
	})
	if out, err := a.Cairn("volume", "create", "big", "--size", "600MiB", "--policy", writePolicy(t, "[redundancy]\nreplicas = 3\n")); err != nil {
		t.Fatal(err, out)
	}
	img := filepath.Join(dir, "big.img")
	makeImage(t, img, 600<<20, 31) // 400 MiB of data: more than C's disk holds
	if out, err := RunErr(t, 5*time.Minute, "nbdcopy", "--flush", img, a.URI("big")); err != nil {
		t.Fatalf("writing 400 MiB while C's disk fills: %v\n%s", err, out)
	}
	st := status(t, a)
	t.Logf("A: %d pieces waiting for their holder, %d MiB handed off", st.Repair.Pending, st.Repair.HandedOffBytes>>20)
	if st.Repair.Pending == 0 {
		t.Errorf("no piece waits for C: its disk did not fill, or its pieces were lost")
	}
	if _, err := c.Cairn("status"); err != nil {
		t.Fatalf("C does not answer with its disk full: %v", err)
	}
	for _, s := range []*cairntest.Server{a, c} {
		got := filepath.Join(dir, "big.out")
		Run(t, 5*time.Minute, "nbdcopy", s.URI("big"), got)
		if fileSHA(t, got) != fileSHA(t, img) {
			t.Fatalf("the volume does not read back through %s with C's disk full", s.NBD)
		}
		_ = os.Remove(got)
	}
}
