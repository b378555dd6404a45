// Command benchnbd is Cairn's performance harness, run by `make bench`
// (through scripts/bench-nbd.sh).
//
// It starts `cairn serve` (one node, the default policy: 4 KiB blocks, one
// replica, no compression, no encryption) and `nbdkit file` over a
// preallocated file of the same size, both under one temporary directory
// (so on the same disk), and runs one fio suite through fio's nbd engine
// against each, alternating (cairn, nbdkit, cairn, ...), so that a noisy
// neighbour hurts both sides alike. Reads run over a region that a
// sequential fill wrote first on both. It prints a table of IOPS and MB/s
// per row, the ratio cairn/nbdkit and the targets (>= 0.8x on
// every row, >= 1.0x on the fsync row), cairn's CPU time per I/O (from
// /proc/PID/stat) and its resident memory.
//
// With -cluster (the default) it then runs the cluster section, with
// real `cairn node` processes on 127.0.0.2, .3, ... (--gossip-profile
// local), all sharing this machine's cores:
//
//   - the same fio rows through node A's export of a replicas = 3 volume
//     of a 3-node cluster and through a 1-node `cairn serve` (replicas =
//     1), alternating, with ratios cluster/single and the targets
//     (reads >= 0.8x, writes >= 0.4x);
//   - a short absence on the same cluster: node C is killed (SIGKILL) 5 s
//     into a 30 s write job through A and restarted 10 s later; it reports
//     the bytes handed off for C and given back to it against the bytes
//     the client wrote meanwhile, and how long catching up took;
//   - healing, on a fresh 4-node cluster with --remove-after 10s (a
//     replicas = 3 volume needs a fourth node to heal onto): -heal-size
//     (1 GiB) written through A, C killed for good, and the time until
//     every live node has finished the anti-entropy pass after C's removal
//     with no shard lacking replicas; pieces rewritten; and a 4K random
//     read+write job's IOPS (QD8, through A) before the kill, while C is
//     dead but still placed, and during the rebuild (-heal-load). It
//     runs once per -heal-rates value (the nodes' --repair-rate, default
//     8MiB then 0 = unlimited), each on a fresh cluster, so the report
//     shows the time to heal and the client I/O rate while healing with
//     the repair throttle on and off. -heal-only skips the rest of the
//     cluster section.
//
// -absence=false skips the short absence and -heal=false the healing
// runs: with both, the cluster section is the fio suite only (a minute or
// two instead of ten), for comparing builds.
//
// -single=false skips the single-node section (and the need for nbdkit).
//
// With -go (the default) it then runs the volume-level Go benchmarks of
// internal/node (BenchmarkVolume/* beside BenchmarkFile/*) and prints
// their ratios.
//
// It exits non-zero only when the harness itself fails (a server does not
// start, fio fails, output cannot be parsed), never on a missed target.
// It needs Linux (/proc), fio with its nbd engine, nbdkit (for the
// single-node section), and the loopback addresses 127.0.0.2-5 (Linux
// routes all of 127/8 to lo).
//
//	go run ./internal/benchnbd [-quick] [-out FILE.md] [-bin bin/cairn] [-rounds N] [-go=false]
//	    [-single=false] [-cluster=false] [-cluster-rounds N] [-heal-size 1GiB] [-heal-rates 8MiB,0] [-heal-only]
//	    [-absence=false] [-heal=false]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the harness's flags.
type options struct {
	bin       string        // cairn binary; "" builds one
	dir       string        // parent of the temporary directory
	out       string        // Markdown copy of the tables
	quick     bool          // smoke run
	goBench   bool          // also run the Go benchmarks of internal/node
	rounds    int           // suite repetitions; the best round per row counts
	runtime   time.Duration // measured time per fio run
	ramp      time.Duration // unmeasured warm-up per fio run
	region    int64         // bytes of the volume the suite touches
	size      int64         // size of the volume and of nbdkit's file
	benchtime string        // -benchtime of the Go benchmarks
	goRounds  int           // rounds of the Go benchmarks (median taken)
	rows      []row         // the fio rows to run (-rows filters suiteRows)

	single        bool          // run the single-node section (cairn serve vs nbdkit)
	cluster       bool          // run the cluster section
	clusterRounds int           // rounds of the cluster's fio suite
	clusterRegion int64         // bytes of the cluster's volume the suite touches
	healSize      int64         // bytes written before a node is lost in the healing run
	removeAfter   time.Duration // --remove-after of the healing run's nodes
	healLimit     time.Duration // longest wait for the healing
	healLoad      time.Duration // how long into the rebuild the client job runs
	healRates     []int64       // --repair-rate of each healing run (0: unlimited)
	healOnly      bool          // the cluster section runs only the healing runs
	absence       bool          // the cluster section runs the short-absence run
	heal          bool          // the cluster section runs the healing runs
	nodeArgs      []string      // extra flags for every cluster node (-node-args)
}

func main() {
	var o options
	var region, size string
	flag.StringVar(&o.bin, "bin", "", "cairn binary to benchmark (default: build ./cmd/cairn into the temporary directory)")
	flag.StringVar(&o.dir, "dir", "", "directory for the temporary data (cairn's data and nbdkit's file; default $TMPDIR)")
	flag.StringVar(&o.out, "out", "", "also write the tables as Markdown to this file")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: 1s runs, a small region, one round, short Go benchmarks")
	flag.BoolVar(&o.goBench, "go", true, "also run the volume-level Go benchmarks of internal/node and print their ratios")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds of the fio suite; each row reports its best round")
	flag.DurationVar(&o.runtime, "runtime", 5*time.Second, "measured time of each fio run")
	flag.DurationVar(&o.ramp, "ramp", 2*time.Second, "warm-up time of each fio run (not measured)")
	flag.StringVar(&region, "region", "1GiB", "region of the disk the suite touches (filled before the reads)")
	flag.StringVar(&size, "size", "4GiB", "size of cairn's volume and of nbdkit's file")
	flag.StringVar(&o.benchtime, "benchtime", "2s", "-benchtime of the Go benchmarks")
	flag.IntVar(&o.goRounds, "go-rounds", 3, "rounds of the Go benchmarks, alternating which side runs first; the table gives each side's median")
	flag.BoolVar(&o.single, "single", true, "run the single-node section: cairn serve vs nbdkit")
	flag.BoolVar(&o.cluster, "cluster", true, "run the cluster section: a 3-node replicas = 3 volume vs a 1-node one, a short absence, and healing after a node loss")
	flag.IntVar(&o.clusterRounds, "cluster-rounds", 2, "rounds of the cluster's fio suite, the second with the sides in the other order (as the single-node suite does); each row reports its best round")
	clusterRegion := flag.String("cluster-region", "512MiB", "region of the cluster's volume the suite touches (filled before the reads)")
	healSize := flag.String("heal-size", "1GiB", "bytes written to the cluster before a node is lost for good")
	flag.DurationVar(&o.removeAfter, "remove-after", 10*time.Second, "--remove-after of the healing run's nodes")
	flag.DurationVar(&o.healLimit, "heal-limit", 10*time.Minute, "longest wait for the healing (a miss is reported, not an error)")
	flag.DurationVar(&o.healLoad, "heal-load", 30*time.Second, "how long into the rebuild the client job keeps running (it also runs from the kill to the removal)")
	healRates := flag.String("heal-rates", "8MiB,0", "--repair-rate of the healing runs, comma-separated: one fresh 4-node cluster each (0: unlimited; 8MiB bites on a small machine, where the 64MiB default would not)")
	flag.BoolVar(&o.healOnly, "heal-only", false, "in the cluster section, run only the healing runs")
	flag.BoolVar(&o.absence, "absence", true, "in the cluster section, run the short-absence run after the fio suite (-absence=false skips it)")
	flag.BoolVar(&o.heal, "heal", true, "in the cluster section, run the healing runs (-heal=false skips them; with -absence=false the section is the fio suite only)")
	nodeArgs := flag.String("node-args", "", "extra flags for every cluster node, space-separated (e.g. \"--write-cache 512MiB\")")
	rowsFlag := flag.String("rows", "", "run only the fio rows whose name contains this (e.g. fsync, \"rand read\")")
	flag.Parse()

	var err error
	if o.region, err = parseSize(region); err != nil {
		fatal(err)
	}
	if o.size, err = parseSize(size); err != nil {
		fatal(err)
	}
	if o.clusterRegion, err = parseSize(*clusterRegion); err != nil {
		fatal(err)
	}
	if o.healSize, err = parseSize(*healSize); err != nil {
		fatal(err)
	}
	o.nodeArgs = strings.Fields(*nodeArgs)
	for _, r := range strings.Split(*healRates, ",") {
		r = strings.TrimSpace(r)
		var n int64
		if r != "0" {
			if n, err = parseSize(r); err != nil {
				fatal(fmt.Errorf("-heal-rates: %w", err))
			}
		}
		o.healRates = append(o.healRates, n)
	}
	if err := o.sections(); err != nil {
		fatal(err)
	}
	if o.quick {
		o.runtime, o.ramp, o.rounds, o.clusterRounds, o.benchtime, o.goRounds = time.Second, 0, 1, 1, "100ms", 1
		if !flagSet("region") {
			o.region = 128 << 20
		}
		if !flagSet("cluster-region") {
			o.clusterRegion = 64 << 20
		}
		if !flagSet("heal-size") {
			o.healSize = 64 << 20
		}
	}
	for _, r := range suiteRows {
		if strings.Contains(r.name, *rowsFlag) {
			o.rows = append(o.rows, r)
		}
	}
	if len(o.rows) == 0 {
		fatal(fmt.Errorf("benchnbd: no fio row matches -rows %q", *rowsFlag))
	}
	if o.rounds < 1 || o.goRounds < 1 || o.region <= 0 || o.region > o.size || o.runtime < time.Second {
		fatal(errors.New("benchnbd: need -rounds >= 1, -go-rounds >= 1, 0 < -region <= -size, -runtime >= 1s"))
	}
	if o.clusterRounds < 1 || o.clusterRegion > clusterVolumeSize || o.healSize > clusterVolumeSize || o.removeAfter <= 0 || o.healLimit <= 0 {
		fatal(errors.New("benchnbd: need -cluster-rounds >= 1, -cluster-region and -heal-size <= 2GiB, -remove-after and -heal-limit > 0"))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, o)
	stop()
	if err != nil {
		fatal(err)
	}
}

// sections applies -heal=false (no healing run: no repair rates left)
// and refuses flags that leave the cluster section nothing to run.
func (o *options) sections() error {
	if !o.heal {
		if o.healOnly {
			return errors.New("benchnbd: -heal-only and -heal=false leave nothing to run")
		}
		o.healRates = nil
	}
	return nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "benchnbd:", err)
	os.Exit(1)
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// run does the whole harness; every process it starts and the temporary
// directory are gone when it returns.
func run(ctx context.Context, o options) error {
	tools := []string{"fio"}
	if o.single {
		tools = append(tools, "nbdkit")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (scripts/deps.sh bench installs it): %w", tool, err)
		}
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(o.dir, "cairn-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	bin := o.bin
	if bin == "" {
		bin = filepath.Join(tmp, "cairn")
		fmt.Fprintln(os.Stderr, "benchnbd: building ./cmd/cairn")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/cairn")
		build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building cairn: %w", err)
		}
	} else if bin, err = filepath.Abs(bin); err != nil {
		return err
	}

	var md strings.Builder
	if o.single {
		nbdTable, err := nbdSuite(ctx, o, bin, tmp)
		if err != nil {
			return err
		}
		fmt.Println()
		nbdTable.text(os.Stdout)
		nbdTable.markdown(&md)
	}
	if o.cluster {
		start := time.Now()
		cl, err := clusterSuite(ctx, o, bin, tmp)
		if err != nil {
			return err
		}
		cl.took = time.Since(start)
		for _, t := range cl.tables() {
			fmt.Println()
			t.text(os.Stdout)
			if md.Len() > 0 {
				md.WriteString("\n")
			}
			t.markdown(&md)
		}
	}

	if o.goBench {
		goTable, err := goSuite(ctx, o, root, tmp)
		if err != nil {
			return err
		}
		fmt.Println()
		goTable.text(os.Stdout)
		if md.Len() > 0 {
			md.WriteString("\n")
		}
		goTable.markdown(&md)
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(md.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "benchnbd: wrote", o.out)
	}
	return nil
}

// moduleRoot returns the directory of the go.mod the harness runs in.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run benchnbd inside the cairn module")
	}
	return filepath.Dir(mod), nil
}

// parseSize parses "4GiB", "512MiB", "1g", or a plain number of bytes.
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (write e.g. 1GiB or 512MiB)", s)
	}
	return n * mult, nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 1<<24))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
