package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// goBenchLine matches a line of `go test -bench` output, e.g.
//
//	BenchmarkVolume/RandWrite4K-2   659968   30715 ns/op   133.35 MB/s
var goBenchLine = regexp.MustCompile(`^Benchmark(Volume|File)/(\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op(?:\s+([0-9.]+) MB/s)?`)

// goResult holds ns/op and MB/s per side ("Volume", "File") and sub-benchmark.
type goResult struct {
	order []string
	ns    map[string]map[string]float64
	mbps  map[string]map[string]float64
}

// newGoResult returns an empty result for both sides.
func newGoResult() *goResult {
	return &goResult{ns: map[string]map[string]float64{"Volume": {}, "File": {}}, mbps: map[string]map[string]float64{"Volume": {}, "File": {}}}
}

// parseGoBench reads `go test -bench` output. Lines that are not results
// are ignored.
func parseGoBench(r io.Reader) (*goResult, error) {
	res := newGoResult()
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := goBenchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		side, name := m[1], m[2]
		ns, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("bad ns/op in %q: %w", sc.Text(), err)
		}
		if _, seen := res.ns["Volume"][name]; !seen {
			if _, seen := res.ns["File"][name]; !seen {
				res.order = append(res.order, name)
			}
		}
		res.ns[side][name] = ns
		if m[4] != "" {
			res.mbps[side][name], _ = strconv.ParseFloat(m[4], 64)
		}
	}
	return res, sc.Err()
}

// goSuite runs the volume-level benchmarks of internal/node, echoing their
// output, and returns their ratio table. The test binary is built once; each
// of o.goRounds rounds runs both sides, one process each, the volume first
// in odd rounds and the file first in even ones, so that a drift of the
// disk's speed during the run (seen here: the same fdatasync loop took 165
// µs in one minute and 210 µs in the next) does not fall on one side only.
// The table gives each side's median over the rounds.
func goSuite(ctx context.Context, o options, root, tmp string) (*table, error) {
	bin := filepath.Join(tmp, "node.test")
	build := []string{"test", "-c", "-o", bin, "./internal/node"}
	fmt.Fprintf(os.Stderr, "benchnbd: go %v\n", build)
	cmd := exec.CommandContext(ctx, "go", build...)
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -c ./internal/node: %w", err)
	}
	var rounds []*goResult
	for r := 0; r < o.goRounds; r++ {
		sides := []string{"Volume", "File"}
		if r%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		var out bytes.Buffer
		for _, side := range sides {
			args := []string{"-test.run", "^$", "-test.bench", "^Benchmark" + side + "$", "-test.benchtime", o.benchtime, "-test.timeout", "20m"}
			fmt.Fprintf(os.Stderr, "benchnbd: go round %d: node.test %v\n", r+1, args)
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = filepath.Join(root, "internal", "node")
			cmd.Stdout = io.MultiWriter(&out, os.Stderr)
			cmd.Stderr = os.Stderr
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("internal/node benchmarks (%s): %w", side, err)
			}
		}
		res, err := parseGoBench(&out)
		if err != nil {
			return nil, err
		}
		if len(res.order) == 0 {
			return nil, fmt.Errorf("internal/node benchmarks printed no Volume/File results")
		}
		rounds = append(rounds, res)
	}
	return medianGo(rounds).table(o.benchtime, len(rounds)), nil
}

// medianGo merges rounds into one result holding, per side and benchmark,
// the median ns/op over the rounds that have it (the lower middle one of an
// even count) and the MB/s of that same round.
func medianGo(rounds []*goResult) *goResult {
	res := newGoResult()
	seen := map[string]bool{}
	for _, r := range rounds {
		for _, name := range r.order {
			if !seen[name] {
				seen[name] = true
				res.order = append(res.order, name)
			}
		}
	}
	type obs struct{ ns, mbps float64 }
	for _, side := range []string{"Volume", "File"} {
		for _, name := range res.order {
			var all []obs
			for _, r := range rounds {
				if ns, ok := r.ns[side][name]; ok {
					all = append(all, obs{ns, r.mbps[side][name]})
				}
			}
			if len(all) == 0 {
				continue
			}
			slices.SortFunc(all, func(a, b obs) int { return cmp.Compare(a.ns, b.ns) })
			m := all[(len(all)-1)/2]
			res.ns[side][name], res.mbps[side][name] = m.ns, m.mbps
		}
	}
	return res
}

func (r *goResult) table(benchtime string, rounds int) *table {
	t := &table{
		title:  "Go benchmarks over the real stack (internal/node): volume vs os.File (same disk)",
		header: []string{"benchmark", "volume µs/op", "volume MB/s", "file µs/op", "file MB/s", "volume/file speed"},
	}
	for _, name := range r.order {
		v, vok := r.ns["Volume"][name]
		f, fok := r.ns["File"][name]
		ratio := "n/a"
		if vok && fok && v > 0 {
			ratio = fmt.Sprintf("%.2fx", f/v)
		}
		t.rows = append(t.rows, []string{
			name, us(v, vok), mb(r.mbps["Volume"][name], vok), us(f, fok), mb(r.mbps["File"][name], fok), ratio,
		})
	}
	t.notes = append(t.notes, fmt.Sprintf("go test -c ./internal/node, then -test.bench '^BenchmarkVolume$' and '^BenchmarkFile$' -test.benchtime %s, one process each, in %d round(s) alternating which side goes first; each side's median round; speed ratio = file ns/op / volume ns/op (1.00x = as fast as the file).", benchtime, rounds))
	return t
}

func us(ns float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1f", ns/float64(time.Microsecond))
}

func mb(v float64, ok bool) string {
	if !ok || v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}
