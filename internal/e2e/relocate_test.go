package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// TestRelocateReads: with --relocate-reads, an image written in 4 KiB
// blocks in a shuffled order (nbdsh), flushed every four blocks (without
// the flushes the write-back cache would push them in order), and read back in large requests
// (nbdcopy) has its blocks moved into read order, which `cairn status`
// counts, and it reads back byte for byte before and after the moves and
// after a restart.
func TestRelocateReads(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	cairntest.NeedTool(t, "nbdsh")
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "32MiB", "--relocate-reads")
	s.Start(ctx)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.img")
	const size = 32 << 20
	makeImage(t, in, size, 5)
	want := fileSHA(t, in)
	script := fmt.Sprintf(`
import random
data = open(%q, "rb").read()
order = list(range(len(data) // 4096))
random.Random(7).shuffle(order)
for n, i in enumerate(order):
    h.pwrite(data[i*4096:(i+1)*4096], i*4096)
    if n %% 4 == 3:
        h.flush()
h.flush()
`, in)
	if out, err := nbdsh(t, s.URI("default"), script); err != nil {
		t.Fatalf("nbdsh: %v\n%s", err, out)
	}
	copyOut := func(when string) {
		t.Helper()
		out := filepath.Join(dir, "out.img")
		Run(t, 5*time.Minute, "nbdcopy", s.URI("default"), out)
		if got := fileSHA(t, out); got != want {
			t.Fatalf("%s: sha256 %s, wrote %s", when, got, want)
		}
	}
	movedRE := regexp.MustCompile(`(\d+) moved into read order`)
	moved := func() int {
		st, err := s.Cairn("status")
		if err != nil {
			t.Fatal(err)
		}
		m := movedRE.FindStringSubmatch(st)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	copyOut("first read")
	// Two thirds of the image is data: 5,461 blocks of 4 KiB, all apart.
	deadline := time.Now().Add(time.Minute)
	for moved() < 4000 {
		if time.Now().After(deadline) {
			t.Fatalf("%d blocks moved into read order after a minute of reads, want at least 4000\n%s", moved(), s.Log())
		}
		copyOut("read while moving")
		time.Sleep(100 * time.Millisecond)
	}
	copyOut("read after the moves")
	s.Stop()
	s.Start(ctx)
	copyOut("read after a restart")
	// The moved blocks are in order now: a read judges few requests
	// scattered (those holding blocks no read got to move before).
	if n := moved(); n > 200 {
		t.Errorf("a restart's first read moved %d blocks again, want few: they were in order", n)
	}
}
