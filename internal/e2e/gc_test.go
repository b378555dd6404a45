package e2e

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// siloBytes sums what the nodes' silos occupy on disk.
func siloBytes(t *testing.T, nodes []*cairntest.Server) int64 {
	t.Helper()
	var n int64
	for _, s := range nodes {
		n += diskBytes(t, filepath.Join(s.Data, "silo"))
	}
	return n
}

// TestClusterGarbageCollection: on 3 nodes and replicas = 3 volumes,
// collections run from node B again and again while fio writes and
// verifies through node A (nothing the writer still uses may go); then
// overwriting a volume 4 times and collecting gives the space back on
// every node, and deleting the volume gives back nearly all of it.
func TestClusterGarbageCollection(t *testing.T) {
	cairntest.NeedTool(t, "fio")
	nodes := startCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	pol := writePolicy(t, "[redundancy]\nreplicas = 3\n")
	for _, v := range []string{"busy", "space"} {
		if out, err := a.Cairn("volume", "create", v, "--size", "256MiB", "--policy", pol); err != nil {
			t.Fatal(err, out)
		}
	}

	// Collections while a writer is at work, overwriting its own blocks.
	fio := exec.Command("fio", "--name=v", "--verify_state_save=0", "--ioengine=nbd", "--uri="+a.URI("busy"),
		"--rw=randwrite", "--bs=4k", "--size=24m", "--loops=3", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1", "--fsync=32")
	var fout bytes.Buffer
	fio.Stdout, fio.Stderr = &fout, &fout
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fio.Wait() }()
	var runs atomic.Int32
	var fioErr error
collect:
	for {
		select {
		case fioErr = <-done:
			break collect
		default:
		}
		out, err := b.Cairn("gc")
		if err != nil {
			fio.Process.Kill()
			<-done
			t.Fatalf("gc during writes: %v\n%s", err, out)
		}
		runs.Add(1)
		if runs.Load() == 1 {
			t.Logf("gc during writes: %s", strings.TrimSpace(out))
		}
	}
	if fioErr != nil || !strings.Contains(fout.String(), "err= 0") {
		t.Fatalf("fio with collections running (%d of them): %v\n%s", runs.Load(), fioErr, fout.String())
	}
	t.Logf("%d collections ran while fio wrote and verified", runs.Load())
	if runs.Load() < 2 {
		t.Errorf("only %d collection overlapped the writes", runs.Load())
	}
	if out, err := c.Cairn("gc"); err != nil {
		t.Fatal(err, out)
	}
	vout := Run(t, 5*time.Minute, "fio", "--name=v", "--verify_state_save=0", "--ioengine=nbd", "--uri="+c.URI("busy"),
		"--rw=randwrite", "--bs=4k", "--size=24m", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1", "--verify_only")
	if !strings.Contains(vout, "err= 0") {
		t.Fatalf("verify through C after the collections:\n%s", vout)
	}

	// Space: 4 overwrites of 48 MiB, 3 copies each.
	base := siloBytes(t, nodes)
	const live = 48 << 20 * 3
	for round := range 4 {
		Run(t, 5*time.Minute, "fio", "--name=overwrite", "--verify_state_save=0", "--ioengine=nbd", "--uri="+a.URI("space"),
			"--rw=write", "--bs=1m", "--size=48m", "--iodepth=8", "--refill_buffers",
			fmt.Sprintf("--randseed=%d", round+1), "--end_fsync=1", "--verify=crc32c", "--do_verify=0")
	}
	before := siloBytes(t, nodes)
	out, err := b.Cairn("gc")
	if err != nil {
		t.Fatal(err, out)
	}
	after := siloBytes(t, nodes)
	t.Logf("4 x 48 MiB x 3 copies written: silos %d MiB before gc, %d MiB after (%d MiB before the writes): %s",
		before>>20, after>>20, base>>20, strings.TrimSpace(out))
	if before-base < 3*live {
		t.Fatalf("the overwrites added only %d MiB to the silos: the test did not write what it meant to", (before-base)>>20)
	}
	if after-base > 2*live {
		t.Errorf("after gc the silos hold %d MiB more than before the writes, for %d MiB of live data: want under 2x", (after-base)>>20, live>>20)
	}
	// The last round's data is what reads back.
	Run(t, 5*time.Minute, "fio", "--name=overwrite", "--verify_state_save=0", "--ioengine=nbd", "--uri="+c.URI("space"),
		"--rw=write", "--bs=1m", "--size=48m", "--iodepth=8", "--refill_buffers", "--randseed=4",
		"--verify=crc32c", "--verify_only", "--verify_fatal=1")

	if out, err := a.Cairn("volume", "delete", "space"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := a.Cairn("gc"); err != nil {
		t.Fatal(err, out)
	}
	final := siloBytes(t, nodes)
	t.Logf("after delete and gc: silos %d MiB (%d MiB before the volume was written)", final>>20, base>>20)
	if final > base+live/2 {
		t.Errorf("after deleting the volume and gc the silos hold %d MiB, want near %d MiB", final>>20, base>>20)
	}

	// A member down: its memory and its silo cannot be asked, so no
	// collection runs, and the data is untouched.
	c.Kill()
	out, err = a.Cairn("gc")
	if err == nil {
		t.Fatalf("gc ran with node C down: %s", out)
	}
	if !strings.Contains(out, "every member") && !strings.Contains(out, "unavailable") {
		t.Errorf("gc with node C down failed without saying why: %s", out)
	}
	t.Logf("gc with C down: %s", strings.TrimSpace(lastLine(out)))
	vout = Run(t, 5*time.Minute, "fio", "--name=v", "--verify_state_save=0", "--ioengine=nbd", "--uri="+b.URI("busy"),
		"--rw=randwrite", "--bs=4k", "--size=24m", "--iodepth=8", "--verify=crc32c", "--verify_fatal=1", "--verify_only")
	if !strings.Contains(vout, "err= 0") {
		t.Fatalf("verify through B after the refused collection:\n%s", vout)
	}
}
