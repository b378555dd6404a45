package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
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

// parseGoBench reads `go test -bench` output. Lines that are not results
// are ignored.
func parseGoBench(r io.Reader) (*goResult, error) {
	res := &goResult{ns: map[string]map[string]float64{"Volume": {}, "File": {}}, mbps: map[string]map[string]float64{"Volume": {}, "File": {}}}
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
// output, and returns their ratio table.
func goSuite(ctx context.Context, o options, root string) (*table, error) {
	args := []string{"test", "-run", "^$", "-bench", "^Benchmark(Volume|File)$", "-benchtime", o.benchtime, "-timeout", "20m", "./internal/node"}
	fmt.Fprintf(os.Stderr, "benchnbd: go %v\n", args)
	cmd := exec.CommandContext(ctx, "go", args...)
	var out bytes.Buffer
	cmd.Dir = root
	cmd.Stdout = io.MultiWriter(&out, os.Stderr)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench ./internal/node: %w", err)
	}
	res, err := parseGoBench(&out)
	if err != nil {
		return nil, err
	}
	if len(res.order) == 0 {
		return nil, fmt.Errorf("go test -bench ./internal/node printed no Volume/File results")
	}
	return res.table(o.benchtime), nil
}

func (r *goResult) table(benchtime string) *table {
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
	t.notes = append(t.notes, fmt.Sprintf("go test -run '^$' -bench '^Benchmark(Volume|File)$' -benchtime %s ./internal/node; speed ratio = file ns/op / volume ns/op (1.00x = as fast as the file).", benchtime))
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
