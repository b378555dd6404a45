package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// TestClusterFsyncPerWriteLosesNothing: 3 nodes, a replicas = 3 volume,
// a writer that flushes after every 4 KiB write through node A (the
// FLUSH path that appends the journal record with a sync of each journal
// holder in one round trip, and skips the holders that sync covered).
// Journal holder C is killed with SIGKILL between two halves of the
// writes, and restarted; then A, the writer, is killed with SIGKILL, and
// node B, taking the volume over, must read back every flushed block.
func TestClusterFsyncPerWriteLosesNothing(t *testing.T) {
	cairntest.NeedTool(t, "nbdsh")
	nodes := startCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]
	if out, err := a.Cairn("volume", "create", "r3", "--size", "64MiB", "--policy", writePolicy(t, "[redundancy]\nreplicas = 3\n")); err != nil {
		t.Fatal(err, out)
	}
	// Block i of the 300 goes to slot i*7 (never rewritten), its bytes
	// from a seeded generator; each pwrite is followed by a flush.
	write := func(from, to int) {
		t.Helper()
		out, err := nbdsh(t, a.URI("r3"), `
import random
for i in range(`+strconv.Itoa(from)+`, `+strconv.Itoa(to)+`):
    random.seed(1000 + i)
    h.pwrite(random.randbytes(4096), i * 4096 * 7)
    h.flush()
print("flushed")
`)
		if err != nil || !strings.Contains(out, "flushed") {
			t.Fatalf("writing blocks %d..%d through A: %v\n%s", from, to, err, out)
		}
	}
	write(0, 150)
	c.Kill()
	write(150, 300) // with a journal holder and a piece holder gone
	c.Start(context.Background())
	waitFor(t, 2*time.Minute, "C back in every node's view", func() bool {
		return alive(t, a) == 3 && alive(t, b) == 3
	})
	write(300, 350) // C's journal copy is rebuilt on its first use
	a.Kill()
	var out string
	waitFor(t, 3*time.Minute, "node B to take the volume over", func() bool {
		o, err := nbdsh(t, b.URI("r3"), `
import random
bad = 0
for i in range(350):
    random.seed(1000 + i)
    if h.pread(4096, i * 4096 * 7) != random.randbytes(4096):
        bad += 1
print("bad", bad)
`)
		out = o
		return err == nil && strings.Contains(o, "bad ")
	})
	if !strings.Contains(out, "bad 0") {
		t.Fatalf("flushed blocks lost after the writer died: %s", strings.TrimSpace(out))
	}
}
