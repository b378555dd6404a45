package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// copiedBytes sums what the nodes' background copies wrote: pieces
// anti-entropy rewrote and pieces given back to a returning holder.
func copiedBytes(t *testing.T, nodes ...*cairntest.Server) int64 {
	t.Helper()
	var sum int64
	for _, s := range nodes {
		st := status(t, s)
		sum += st.Repair.RepairedBytes + st.Repair.HandedBackBytes
	}
	return sum
}

// passedSince reports whether s finished an anti-entropy pass after t,
// with none running and no piece waiting for its holder.
func passedSince(t *testing.T, s *cairntest.Server, since time.Time) bool {
	t.Helper()
	st := status(t, s)
	return !st.Repair.ScrubRunning && st.Repair.ScrubDone.After(since) && st.Repair.Pending == 0
}

// filledVolume creates volume name (48 MiB, policy pol) through s and
// copies in, flushed, a new image in dir (32 MiB of data from seed, four
// 4 MiB holes), whose path it returns.
func filledVolume(t *testing.T, s *cairntest.Server, dir, name, pol string, seed uint64) string {
	t.Helper()
	if out, err := s.Cairn("volume", "create", name, "--size", "48MiB", "--policy", pol); err != nil {
		t.Fatal(err, out)
	}
	img := filepath.Join(dir, name+".img")
	makeImage(t, img, 48<<20, seed)
	Run(t, 5*time.Minute, "nbdcopy", "--flush", img, s.URI(name))
	return img
}

// passesSince waits until every node of nodes has finished a pass
// after since (see passedSince) and returns how long that took.
func passesSince(t *testing.T, what string, since time.Time, nodes ...*cairntest.Server) time.Duration {
	t.Helper()
	return waitFor(t, 5*time.Minute, what, func() bool {
		for _, s := range nodes {
			if !passedSince(t, s, since) {
				return false
			}
		}
		return true
	})
}

// TestNodeBackAfterRemovalCopiesOnlyWhatItMissed: 4 nodes, replicas = 3.
// Node D dies and stays away longer than --remove-after, so its copies are
// rebuilt on the others. Then more data is written, and D comes back with
// its disk: the passes that follow copy to it only the blocks written
// while it was away, not everything it holds a share of, and every byte
// reads back through D. `cairn status` reports the copies.
func TestNodeBackAfterRemovalCopiesOnlyWhatItMissed(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	nodes := startCluster(t, 4, "--remove-after", "5s", "--repair-rate", "4MiB")
	a, d := nodes[0], nodes[3]
	live := nodes[:3]
	pol := writePolicy(t, "[redundancy]\nreplicas = 3\n")
	dir := t.TempDir()
	oldImg := filledVolume(t, a, dir, "old", pol, 11)

	d.Kill()
	killed := time.Now()
	var removed time.Time
	waitFor(t, 3*time.Minute, "D to leave A's view", func() bool {
		for _, nd := range status(t, a).Nodes {
			if nd.NBD == d.NBD && nd.InView {
				return false
			}
		}
		removed = time.Now()
		return true
	})
	// A node drops D from its view on its own clock, no sooner than
	// --remove-after after the kill; A may be the last, and a heal pass
	// can finish within a second, so the passes count from there, not
	// from when A's view changed.
	removable := killed.Add(5 * time.Second)
	took := passesSince(t, "the passes after D's removal", removable, live...)
	healCopied := copiedBytes(t, live...)
	t.Logf("D removed %s after the kill; healed %s later, copying %.1f MiB (D's share of the 96 MiB stored: 24 MiB)",
		removed.Sub(killed).Round(time.Second), took.Round(time.Second), float64(healCopied)/(1<<20))
	if healCopied == 0 {
		t.Fatal("the passes after D's removal copied nothing")
	}
	// Only the copies D took with it: the holders that moved up a rank
	// keep theirs (redundant.ReplicaFinder). Copying one piece per moved
	// rank too cost 61-62 MiB.
	if healCopied > 30<<20 {
		t.Errorf("the heal after D's removal copied %.1f MiB, want about D's share (24 MiB, at most 30 with metadata)", float64(healCopied)/(1<<20))
	}

	// New data while D is away.
	if out, err := a.Cairn("volume", "create", "new", "--size", "4MiB", "--policy", pol); err != nil {
		t.Fatal(err, out)
	}
	newImg := filepath.Join(dir, "new.img")
	makeImage(t, newImg, 4<<20, 12) // 4 MiB of data
	Run(t, 5*time.Minute, "nbdcopy", "--flush", newImg, a.URI("new"))

	before := copiedBytes(t, live...)
	d.Start(context.Background())
	var back time.Time
	waitFor(t, 3*time.Minute, "D back in every node's view", func() bool {
		for _, s := range nodes {
			in := false
			for _, nd := range status(t, s).Nodes {
				if nd.NBD == d.NBD && nd.InView && nd.State == "alive" {
					in = true
				}
			}
			if !in {
				return false
			}
		}
		back = time.Now()
		return true
	})
	// The passes the view change kicked, and one more on each node run
	// by hand, so that every pass counted started with D in the view.
	var dropped int64
	for _, s := range live {
		out, err := s.Cairn("scrub")
		if err != nil {
			t.Fatal(err, out)
		}
		t.Logf("%s: cairn scrub: %s", s.NBD, strings.TrimSpace(out))
	}
	passesSince(t, "the passes after D's return", back, live...)
	returnCopied := copiedBytes(t, nodes...) - before
	for _, s := range live {
		dropped += status(t, s).Repair.DroppedPieces
	}
	t.Logf("D's return copied %.1f MiB (32 MiB of old data and 4 MiB of new, 3 copies each; D's share of the old data took %.1f MiB to rebuild)",
		float64(returnCopied)/(1<<20), float64(healCopied)/(1<<20))
	// What D missed is the new data: 3 of 4 new blocks have a piece on D
	// (3 MiB), plus metadata; the holders whose rank moved when D came
	// back keep serving the copies they have. A refill of D's share of
	// the old data would be about 24 MiB.
	if returnCopied > 5<<20 || returnCopied >= healCopied/2 {
		t.Errorf("D's return copied %d bytes: more than what it missed (about 3 MiB); the heal of its old share copied %d", returnCopied, healCopied)
	}
	t.Logf("the passes dropped %d surplus copies (made while D was away, or moved by the heal)", dropped)
	if dropped == 0 {
		t.Errorf("no surplus copy was dropped after D's return: the copies made while it was away stay on nodes that are no holder")
	}
	if returnCopied == 0 {
		t.Errorf("D's return copied nothing: the data written while it was away has no copy on it")
	}

	out, err := a.Cairn("status")
	if err != nil || !strings.Contains(out, "repairing:") || !strings.Contains(out, "4 MiB/s while clients are busy") {
		t.Errorf("cairn status lacks the repair lines: %v\n%s", err, out)
	}
	t.Logf("cairn status on A:\n%s", out)

	// Every byte reads back through D's export.
	for _, v := range []struct{ name, img string }{{"old", oldImg}, {"new", newImg}} {
		got := filepath.Join(dir, v.name+".out")
		Run(t, 5*time.Minute, "nbdcopy", d.URI(v.name), got)
		if fileSHA(t, v.img) != fileSHA(t, got) {
			t.Fatalf("volume %s differs after D's return", v.name)
		}
	}
}

// TestClusterErasureHealsAfterNodeRemovedForGood: 5 nodes, data = 2,
// parity = 2. Node E dies and stays away longer than --remove-after:
// without any command, the passes rebuild E's shards on the others, and
// only those (the holders that moved up a rank keep the shards they
// have; rebuilding each moved rank's shard too would copy about 2.5
// times E's share). A manual pass then finds nothing to do, and every
// byte reads back through two nodes.
func TestClusterErasureHealsAfterNodeRemovedForGood(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	nodes := startCluster(t, 5, "--remove-after", "5s")
	a, b, e := nodes[0], nodes[1], nodes[4]
	live := nodes[:4]
	pol := writePolicy(t, "block_size = \"64KiB\"\n[redundancy]\ndata = 2\nparity = 2\n")
	dir := t.TempDir()
	in := filledVolume(t, a, dir, "ec", pol, 13)

	// Passes the nodes' joins kicked may still be copying: what they
	// copy is not the heal's.
	waitFor(t, 2*time.Minute, "the passes before the kill", func() bool {
		for _, s := range nodes {
			if st := status(t, s); st.Repair.ScrubRunning {
				return false
			}
		}
		return true
	})
	before := copiedBytes(t, live...)
	e.Kill()
	removable := time.Now().Add(5 * time.Second)
	took := passesSince(t, "the passes after E's removal", removable, live...)
	copied := copiedBytes(t, live...) - before
	t.Logf("healed %s after E could be removed, copying %.1f MiB (E's share of the 64 MiB of shards stored: 12.8 MiB; %.1f MiB copied before the kill)",
		took.Round(time.Second), float64(copied)/(1<<20), float64(before)/(1<<20))
	if copied == 0 {
		t.Fatal("the passes after E's removal copied nothing")
	}
	// Rebuilding each moved rank's shard too would copy about 32 MiB;
	// sending a rebuilt data shard twice (the heal's read repaired it,
	// then the heal wrote it) cost 19 MiB.
	if copied > 16<<20 {
		t.Errorf("the heal after E's removal copied %.1f MiB, want about E's share (12.8 MiB, at most 16 with metadata)", float64(copied)/(1<<20))
	}
	for _, s := range live {
		out, err := s.Cairn("scrub")
		if err != nil || !strings.Contains(out, "rewrote 0 pieces") {
			t.Fatalf("%s: a manual pass after healing still found work: %v %s", s.NBD, err, out)
		}
	}
	for _, s := range []*cairntest.Server{a, b} {
		got := filepath.Join(dir, "out.img")
		Run(t, 5*time.Minute, "nbdcopy", s.URI("ec"), got)
		if fileSHA(t, in) != fileSHA(t, got) {
			t.Fatalf("the volume read through %s differs after the heal", s.NBD)
		}
	}
}
