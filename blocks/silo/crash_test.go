package silo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cairn/blocks"
)

const (
	helperEnv      = "SILO_CRASH_HELPER" // mode: mixed or compact
	helperDirEnv   = "SILO_CRASH_DIR"
	helperStartEnv = "SILO_CRASH_START"
)

func crashPieceSize(i int) int { return 4096 + i*131%5000 }

func crashOptions(mode string) Options {
	switch mode {
	case "compact":
		return Options{SegmentSize: 32 << 10, CompactRatio: 0.3}
	case "relocate":
		return Options{SegmentSize: 32 << 10, CompactRatio: 0.3, Relocate: true}
	}
	return Options{SegmentSize: 256 << 10}
}

// TestHelperProcess is the child of the crash tests: it runs operations
// from op SILO_CRASH_START on, syncs after every few (writing behind
// before half of the syncs), and prints "synced N"
// after each Sync that covered ops up to N, until it is killed. Op i puts
// piece i (or, when i%4 == 3, deletes piece i-2) and appends journal seq
// i+1; after each report it trims the journal 100 seqs behind.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("the child process of the crash tests")
	}
	if err := runHelper(mode, os.Getenv(helperDirEnv), os.Getenv(helperStartEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

func runHelper(mode, dir, startStr string) error {
	ctx := context.Background()
	start, err := strconv.Atoi(startStr)
	if err != nil {
		return err
	}
	s, err := Open(ctx, dir, crashOptions(mode))
	if err != nil {
		return err
	}
	if mode == "compact" || mode == "relocate" {
		go func() {
			for {
				if err := s.Compact(ctx); err != nil {
					fmt.Fprintln(os.Stderr, "compact:", err)
					os.Exit(3)
				}
			}
		}()
	}
	var top atomic.Int64 // ops issued
	if mode == "relocate" {
		// Large reads of recent pieces in a shuffled order: the relocator
		// moves them while they are deleted, synced and compacted.
		go viewScattered(s, &top, start)
	}
	rnd := rand.New(rand.NewPCG(uint64(start), 7))
	out := bufio.NewWriter(os.Stdout)
	log := logOf(1)
	for i := start; ; {
		for range 1 + rnd.IntN(12) {
			if i%4 == 3 {
				err = s.DeletePiece(ctx, keyOf(i-2))
			} else {
				err = s.PutPiece(ctx, keyOf(i), pieceData(i, crashPieceSize(i)))
			}
			if err != nil {
				return err
			}
			if err := s.Append(ctx, log, 1, uint64(i+1), recData(uint64(i+1))); err != nil {
				return err
			}
			i++
			top.Store(int64(i))
		}
		if rnd.IntN(2) == 0 {
			// As a volume does between a WRITE's reply and its FLUSH: a
			// kill between the two must lose only what Sync never covered.
			if err := s.WriteBehind(); err != nil {
				return err
			}
		}
		if err := s.Sync(ctx); err != nil {
			return err
		}
		fmt.Fprintf(out, "synced %d\n", i-1)
		if mode == "relocate" {
			fmt.Fprintf(out, "relocated %d\n", s.Stats().Relocated)
		}
		if err := out.Flush(); err != nil {
			return err
		}
		if i > 100 {
			if err := s.Trim(ctx, log, uint64(i-100)); err != nil {
				return err
			}
		}
	}
}

// viewScattered views 64 of the last 256 pieces put (once the child has
// put 64), in a random order,
// over and over, and exits the process if a view holds wrong bytes.
func viewScattered(s *Silo, top *atomic.Int64, start int) {
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(uint64(start), 13))
	keys := make([]blocks.Addr, 64)
	idx := make([]int, 64)
	views := make([][]byte, 64)
	for {
		hi := int(top.Load())
		if hi < start+64 {
			time.Sleep(time.Millisecond)
			continue
		}
		for j := range idx {
			idx[j] = hi - 1 - rnd.IntN(min(hi, 256))
			keys[j] = keyOf(idx[j])
		}
		clear(views)
		release := s.ViewPieces(ctx, keys, views)
		for j, v := range views {
			if v != nil && !bytes.Equal(v, pieceData(idx[j], crashPieceSize(idx[j]))) {
				fmt.Fprintln(os.Stderr, "wrong view of piece", idx[j])
				os.Exit(4)
			}
		}
		release()
	}
}

// TestCrashKill9 runs the helper in a child process and kills it with
// SIGKILL at random points (with mode compact, while it compacts without
// pause), then checks the silo: every op reported synced is there
// byte-exact, no piece deleted and synced is back, nothing returns wrong
// bytes. Each round continues in the same directory.
func TestCrashKill9(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip()
	}
	rounds := 4
	if testing.Short() {
		rounds = 2
	}
	for _, mode := range []string{"mixed", "compact", "relocate"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			rnd := rand.New(rand.NewPCG(uint64(len(mode)), 11))
			synced, prevSynced := -1, -1
			var moved int
			for round := range rounds {
				last, prev, m := runChild(t, mode, dir, synced+1, 3+rnd.IntN(40), time.Duration(rnd.IntN(3000))*time.Microsecond)
				if last >= 0 {
					synced = last
					if prev >= 0 {
						prevSynced = prev
					}
				}
				moved += m
				checkCrashed(t, mode, dir, synced, prevSynced)
				t.Logf("round %d: synced up to op %d, %d pieces moved into read order", round, synced, m)
			}
			if mode == "relocate" && moved == 0 {
				t.Error("the children moved no piece into read order")
			}
		})
	}
}

// runChild starts the helper, reads its reports until it has made lines
// of them, waits delay, kills it with SIGKILL, and returns the last op it
// reported synced and the one before (-1 if none), and the last count of
// pieces it reported relocated.
func runChild(t *testing.T, mode, dir string, start, lines int, delay time.Duration) (last, prev, moved int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperDirEnv+"="+dir, helperStartEnv+"="+strconv.Itoa(start))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer watchdog.Stop()
	last, prev = -1, -1
	sc := bufio.NewScanner(stdout)
	read := func(limit int) {
		for n := 0; n < limit && sc.Scan(); {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "relocated "); ok {
				if moved, err = strconv.Atoi(v); err != nil {
					t.Fatalf("bad line %q", line)
				}
			}
			if v, ok := strings.CutPrefix(line, "synced "); ok {
				prev = last
				if last, err = strconv.Atoi(v); err != nil {
					t.Fatalf("bad line %q", line)
				}
				n++
			}
		}
	}
	read(lines)
	time.Sleep(delay)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	read(math.MaxInt) // what the child reported before it died
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != -1 {
		t.Fatalf("child did not die by the kill: %v\nstderr:\n%s", err, stderr.String())
	}
	return last, prev, moved
}

func checkCrashed(t *testing.T, mode, dir string, synced, prevSynced int) {
	t.Helper()
	ctx := context.Background()
	s := openT(t, dir, crashOptions(mode))
	defer s.Close()
	// Pieces: ops up to synced are durable; later ones may or may not be.
	for i := 0; i <= synced+200; i++ {
		if i%4 == 3 {
			continue
		}
		got, err := s.GetPiece(ctx, keyOf(i))
		deleter := 1 << 62 // never deleted
		if i%4 == 1 {
			deleter = i + 2
		}
		switch {
		case err == nil:
			if !bytes.Equal(got, pieceData(i, crashPieceSize(i))) {
				t.Fatalf("piece %d: wrong bytes", i)
			}
			if deleter <= synced {
				t.Fatalf("piece %d: deleted and synced (op %d <= %d), but back", i, deleter, synced)
			}
		case errors.Is(err, blocks.ErrNotFound):
			// (A delete after the last report may have run: then either.)
			if i <= synced && i%4 != 1 {
				t.Fatalf("piece %d: synced (up to op %d) but lost", i, synced)
			}
		default:
			t.Fatalf("piece %d: %v", i, err)
		}
	}
	// Journal: seq = op+1. Seqs in the last 99 synced are never trimmed.
	var seqs []uint64
	err := s.Replay(ctx, logOf(1), 0, func(e blocks.Epoch, seq uint64, rec []byte) error {
		if e != 1 || !bytes.Equal(rec, recData(seq)) {
			t.Fatalf("journal seq %d: wrong record", seq)
		}
		seqs = append(seqs, seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	have := map[uint64]bool{}
	for i, q := range seqs {
		if i > 0 && q != seqs[i-1]+1 {
			t.Fatalf("journal has a hole: %d then %d", seqs[i-1], q)
		}
		have[q] = true
	}
	for q := max(1, synced+1-98); q <= synced+1; q++ {
		if !have[uint64(q)] {
			t.Fatalf("journal: synced seq %d lost (synced up to %d)", q, synced+1)
		}
	}
	if prevSynced >= 0 {
		// The trim made after the previous report was synced by the last.
		if trimmed := prevSynced + 1 - 100; trimmed > 1 && have[uint64(trimmed-1)] {
			t.Fatalf("journal: seq %d is back after a synced trim to %d", trimmed-1, trimmed)
		}
	}
}
