package e2e

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// diskBytes is what the files under dir occupy on disk (allocated blocks).
func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err == nil {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSpaceComesBack: overwriting a 256 MiB region 8 times with fresh
// random data (flushing each time) and collecting garbage leaves the silo
// under 2x the live data; deleting the volume and collecting again gives
// nearly everything back.
func TestSpaceComesBack(t *testing.T) {
	cairntest.NeedTool(t, "fio")
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "64MiB")
	s.Start(ctx)
	if out, err := s.Cairn("volume", "create", "space", "--size", "512MiB"); err != nil {
		t.Fatal(err, out)
	}
	silo := filepath.Join(s.Data, "silo")
	base := diskBytes(t, silo)
	const live = 256 << 20
	for round := 0; round < 8; round++ {
		Run(t, 5*time.Minute, "fio", "--name=overwrite", "--verify_state_save=0", "--ioengine=nbd", "--uri="+s.URI("space"),
			"--rw=write", "--bs=1m", "--size=256m", "--iodepth=8", "--refill_buffers",
			fmt.Sprintf("--randseed=%d", round+1), "--end_fsync=1")
	}
	before := diskBytes(t, silo)
	out, err := s.Cairn("gc")
	if err != nil {
		t.Fatal(err, out)
	}
	after := diskBytes(t, silo)
	t.Logf("8 x 256 MiB written: silo %d MiB before gc, %d MiB after (%s)", before>>20, after>>20, strings.TrimSpace(out))
	if after-base > 2*live {
		t.Errorf("after gc the silo holds %d MiB for %d MiB of live data: want under 2x", (after-base)>>20, live>>20)
	}
	if before < 4*live {
		t.Errorf("before gc the silo held only %d MiB after 2 GiB of overwrites: the test did not write what it meant to", before>>20)
	}
	if out, err := s.Cairn("volume", "delete", "space"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := s.Cairn("gc"); err != nil {
		t.Fatal(err, out)
	}
	final := diskBytes(t, silo)
	t.Logf("after delete and gc: silo %d MiB (empty volume: %d MiB)", final>>20, base>>20)
	if final > base+32<<20 {
		t.Errorf("after deleting the volume and gc the silo holds %d MiB, want near %d MiB", final>>20, base>>20)
	}
}

// TestGarbageCollectsItself: with --gc-every, overwritten data gives its
// space back without anyone running cairn gc, and the data reads back.
func TestGarbageCollectsItself(t *testing.T) {
	cairntest.NeedTool(t, "fio")
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "64MiB", "--gc-every", "1s")
	s.Start(ctx)
	if out, err := s.Cairn("volume", "create", "auto", "--size", "256MiB"); err != nil {
		t.Fatal(err, out)
	}
	silo := filepath.Join(s.Data, "silo")
	base := diskBytes(t, silo)
	const live = 64 << 20
	for round := range 4 {
		Run(t, 5*time.Minute, "fio", "--name=overwrite", "--verify_state_save=0", "--ioengine=nbd", "--uri="+s.URI("auto"),
			"--rw=write", "--bs=1m", "--size=64m", "--iodepth=8", "--refill_buffers",
			fmt.Sprintf("--randseed=%d", round+1), "--end_fsync=1", "--verify=crc32c", "--do_verify=0")
	}
	took := waitFor(t, 2*time.Minute, "the silo to give the overwritten space back by itself", func() bool {
		return diskBytes(t, silo)-base < 2*live
	})
	t.Logf("silo back under 2x the live data %s after the writes (%d MiB over the empty volume's)", took.Round(time.Second), (diskBytes(t, silo)-base)>>20)
	if !strings.Contains(s.Log(), "automatic garbage collection") {
		t.Fatalf("no automatic collection in the log:\n%s", s.Log())
	}
	out, err := s.Cairn("status")
	if err != nil || !strings.Contains(out, "last gc:") || !strings.Contains(out, "(automatic, took") {
		t.Fatalf("cairn status does not show the last automatic collection: %v\n%s", err, out)
	}
	Run(t, 5*time.Minute, "fio", "--name=overwrite", "--verify_state_save=0", "--ioengine=nbd", "--uri="+s.URI("auto"),
		"--rw=write", "--bs=1m", "--size=64m", "--iodepth=8", "--refill_buffers", "--randseed=4",
		"--verify=crc32c", "--verify_only", "--verify_fatal=1")
}
