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
	cairntest.NeedRoot(t)
	for _, tool := range []string{"mkfs.ext4", "mount", "umount", "nbdcopy"} {
		cairntest.NeedTool(t, tool)
	}
	ctx := context.Background()
	dir := t.TempDir()
	fsImg, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
	if err := os.WriteFile(fsImg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(fsImg, 300<<20); err != nil {
		t.Fatal(err)
	}
	Run(t, time.Minute, "mkfs.ext4", "-q", "-F", fsImg)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	Run(t, time.Minute, "mount", "-o", "loop", fsImg, mnt)
	// Registered before the server's cleanup, so it runs after it (the
	// server is killed first, then the file system unmounted).
	t.Cleanup(func() {
		if out, err := RunErr(t, time.Minute, "umount", mnt); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})

	s := cairntest.NewServer(t, "--size", "1GiB")
	s.Data = filepath.Join(mnt, "data")
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
