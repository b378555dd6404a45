package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// row is one line of the fio suite.
type row struct {
	name   string
	rw     string // fio --rw
	bs     string // fio --bs
	depth  int    // fio --iodepth
	fsync  bool   // fio --fsync=1: a FLUSH after every write
	mbps   bool   // the row is about bandwidth, not IOPS
	target float64
}

var suiteRows = []row{
	{name: "4K rand read QD1", rw: "randread", bs: "4k", depth: 1, target: 0.8},
	{name: "4K rand read QD32", rw: "randread", bs: "4k", depth: 32, target: 0.8},
	{name: "4K rand write QD1", rw: "randwrite", bs: "4k", depth: 1, target: 0.8},
	{name: "4K rand write QD32", rw: "randwrite", bs: "4k", depth: 32, target: 0.8},
	{name: "4K rand write+fsync QD1", rw: "randwrite", bs: "4k", depth: 1, fsync: true, target: 1.0},
	{name: "1M seq read QD8", rw: "read", bs: "1m", depth: 8, mbps: true, target: 0.8},
	{name: "1M seq write QD8", rw: "write", bs: "1m", depth: 8, mbps: true, target: 0.8},
}

// measure is one fio run against one server.
type measure struct {
	iops      float64 // of the write side when the job wrote, else of the read side
	bw        float64 // bytes/s, of the same side
	readIOPS  float64 // both sides apart, for mixed jobs
	writeIOPS float64
	ios       int64 // I/Os completed in the measured window
	cpuPerIO  time.Duration
	rss       int64 // VmRSS at the end of the run
	p99       time.Duration
	completed bool
}

// fioJSON is the part of `fio --output-format=json` the harness reads.
type fioJSON struct {
	Jobs []struct {
		Error int      `json:"error"`
		Read  fioStats `json:"read"`
		Write fioStats `json:"write"`
	} `json:"jobs"`
}

type fioStats struct {
	IOPS     float64 `json:"iops"`
	BW       float64 `json:"bw_bytes"`
	TotalIOs int64   `json:"total_ios"`
	IOBytes  int64   `json:"io_bytes"`
	Clat     struct {
		Percentile map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// What cairn logs when a client's export is attached, and once it is
// closed (the cache the client left dirty is written back by then) or its
// close failed.
const (
	attachLine     = "nbd: export attached"
	detachLine     = "nbd: export detached"
	detachFailLine = "nbd: closing export failed"
)

// attachments counts the attach lines and the detach (or failed close)
// lines in a cairn server's log.
func attachments(s *server) (attached, detached int) {
	b, _ := os.ReadFile(s.log)
	return bytes.Count(b, []byte(attachLine)), bytes.Count(b, []byte(detachLine)) + bytes.Count(b, []byte(detachFailLine))
}

// settle waits, up to limit, until cairn server s has closed every export
// it attached, and at least one since before detaches: when fio
// disconnects, cairn closes the export, which writes back what the run
// left in its write cache (hundreds of MiB after a write row), and that
// must not overlap the next measurement, whoever it is of. Every fio run
// attaches twice: its nbd engine first connects to ask for the size and
// disconnects at once, then runs the job on a second connection. (Until
// the eleventh session settle waited for one detach, the probe's: the
// job's write-back then ran into the next row. On the cluster's
// write+fsync row, after the 4K QD32 write rows, a CPU profile of the
// four processes found node A still pushing the QD32 row's data to B and
// C, and the single node still writing back its own, through the whole
// measured window.)
func settle(s *server, before int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	done := func() bool {
		a, d := attachments(s)
		return d > before && d >= a
	}
	for !done() && time.Now().Before(deadline) && s.alive() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if !done() {
		fmt.Fprintf(os.Stderr, "benchnbd: %s did not close every export within %s\n", s.name, limit)
	}
}

// settleFile writes back what nbdkit's run left dirty in the page cache
// of its image (fdatasync), as cairn's detach writes back its cache
// (settle): neither server's write-back may fall into the next
// measurement.
func settleFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = syscall.Fdatasync(int(f.Fd()))
	return errors.Join(err, f.Close())
}

// fioSettled is fio against cairn server s, then settle.
func fioSettled(ctx context.Context, s *server, uri string, args []string, ramp time.Duration, cpuPIDs ...int) (measure, error) {
	_, before := attachments(s)
	m, err := fio(ctx, uri, args, ramp, cpuPIDs...)
	if err == nil {
		settle(s, before, 5*time.Minute)
	}
	return m, err
}

// fio runs one fio job against uri and returns its parsed summary.
// cpuPIDs (zeros ignored) are the server processes whose CPU time, summed,
// is sampled once the ramp is over and again when fio exits.
func fio(ctx context.Context, uri string, args []string, ramp time.Duration, cpuPIDs ...int) (measure, error) {
	full := append([]string{"--name=bench", "--ioengine=nbd", "--uri=" + uri, "--output-format=json"}, args...)
	cmd := exec.CommandContext(ctx, "fio", full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return measure{}, fmt.Errorf("starting fio: %w", err)
	}
	type sample struct {
		cpu time.Duration
		err error
	}
	first := make(chan sample, 1)
	var pids []int
	for _, p := range cpuPIDs {
		if p != 0 {
			pids = append(pids, p)
		}
	}
	cpuSum := func() (s sample) {
		for _, p := range pids {
			c, err := cpuTime(p)
			s.cpu += c
			s.err = errors.Join(s.err, err)
		}
		return s
	}
	timer := time.AfterFunc(ramp, func() { first <- cpuSum() })
	err := cmd.Wait()
	last := cpuSum()
	if err != nil {
		timer.Stop()
		return measure{}, fmt.Errorf("fio %v: %w\n%s%s", args, err, stderr.String(), tailBytes(stdout.Bytes(), 2000))
	}
	var m measure
	var out fioJSON
	js := stdout.Bytes()
	if i := bytes.IndexByte(js, '{'); i > 0 {
		js = js[i:] // fio may print warnings before the JSON
	}
	if err := json.Unmarshal(js, &out); err != nil {
		return measure{}, fmt.Errorf("parsing fio's JSON: %w\n%s", err, tailBytes(stdout.Bytes(), 2000))
	}
	if len(out.Jobs) != 1 || out.Jobs[0].Error != 0 {
		return measure{}, fmt.Errorf("fio %v: unexpected result (jobs %d): %s", args, len(out.Jobs), stderr.String())
	}
	j := out.Jobs[0]
	st := j.Read
	if j.Write.TotalIOs > 0 {
		st = j.Write
	}
	m.iops, m.bw, m.ios = st.IOPS, st.BW, st.TotalIOs
	m.readIOPS, m.writeIOPS = j.Read.IOPS, j.Write.IOPS
	m.p99 = time.Duration(st.Clat.Percentile["99.000000"])
	if len(pids) > 0 {
		s0 := <-first // the timer has fired: the ramp is shorter than the run
		if err := errors.Join(s0.err, last.err); err != nil {
			return measure{}, fmt.Errorf("reading cpu time: %w", err)
		}
		if m.ios > 0 {
			m.cpuPerIO = (last.cpu - s0.cpu) / time.Duration(m.ios)
		}
	}
	m.completed = true
	return m, nil
}

func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// jobArgs returns fio's arguments for a row.
func jobArgs(r row, o options) []string {
	args := []string{
		"--rw=" + r.rw, "--bs=" + r.bs, "--iodepth=" + strconv.Itoa(r.depth),
		"--offset=0", "--size=" + strconv.FormatInt(o.region, 10),
		"--time_based", "--runtime=" + secs(o.runtime), "--norandommap", "--randrepeat=0",
	}
	if o.ramp > 0 {
		args = append(args, "--ramp_time="+secs(o.ramp))
	}
	if r.fsync {
		args = append(args, "--fsync=1")
	}
	return args
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }

// nbdResult is the outcome of the fio suite.
type nbdResult struct {
	o                  options
	cairn, nbdkit      []measure // best round per row
	rssRest, rssFilled int64
	rssMax             int64
	rssMaxRow          string
	anonMax            int64 // RssAnon's largest value after a row
	hwm                int64
	fillCairn          measure
	fillNbdkit         measure
}

// nbdSuite starts both servers, fills the region on both, runs the rows
// alternating between them, and stops both.
func nbdSuite(ctx context.Context, o options, bin, tmp string) (*nbdResult, error) {
	res := &nbdResult{o: o, cairn: make([]measure, len(o.rows)), nbdkit: make([]measure, len(o.rows))}
	fmt.Fprintf(os.Stderr, "benchnbd: starting cairn serve and nbdkit file in %s\n", tmp)
	c, err := startCairn(ctx, bin, tmp, o.size)
	if err != nil {
		return nil, err
	}
	defer c.stop(2 * time.Minute)
	k, err := startNbdkit(ctx, tmp, o.size)
	if err != nil {
		return nil, err
	}
	defer k.stop(30 * time.Second)

	if res.rssRest, _, err = memory(c.pid()); err != nil {
		return nil, err
	}
	fill := []string{"--rw=write", "--bs=1m", "--iodepth=8", "--offset=0",
		"--size=" + strconv.FormatInt(o.region, 10), "--end_fsync=1"}
	for _, s := range []*server{c, k} {
		fmt.Fprintf(os.Stderr, "benchnbd: filling %d MiB of %s\n", o.region>>20, s.name)
		run := fio
		if s == c {
			run = func(ctx context.Context, uri string, args []string, ramp time.Duration, pids ...int) (measure, error) {
				return fioSettled(ctx, c, uri, args, ramp, pids...)
			}
		}
		m, err := run(ctx, s.uri, fill, 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		if s == c {
			res.fillCairn = m
		} else {
			res.fillNbdkit = m
		}
	}
	if res.rssFilled, _, err = memory(c.pid()); err != nil {
		return nil, err
	}

	for round := 0; round < o.rounds; round++ {
		for i, r := range o.rows {
			order := []*server{c, k}
			if round%2 == 1 {
				order = []*server{k, c} // cancel any bias from going first
			}
			for _, s := range order {
				if err := s.alive(); err != nil {
					return nil, err
				}
				var m measure
				if s == c {
					m, err = fioSettled(ctx, c, s.uri, jobArgs(r, o), o.ramp, s.pid())
				} else {
					m, err = fio(ctx, s.uri, jobArgs(r, o), o.ramp, s.pid())
					if err == nil {
						err = settleFile(s.file)
					}
				}
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", s.name, r.name, err)
				}
				best := &res.nbdkit[i]
				if s == c {
					best = &res.cairn[i]
					rss, _, err := memory(c.pid())
					if err != nil {
						return nil, err
					}
					m.rss = rss
					if rss > res.rssMax {
						res.rssMax, res.rssMaxRow = rss, r.name
					}
					if anon, err := anonMemory(c.pid()); err == nil && anon > res.anonMax {
						res.anonMax = anon
					}
				}
				fmt.Fprintf(os.Stderr, "benchnbd: round %d  %-24s %-6s %9.0f IOPS %8.1f MB/s  p99 %v\n",
					round+1, r.name, s.name, m.iops, m.bw/1e6, m.p99)
				if !best.completed || m.iops > best.iops {
					*best = m
				}
			}
		}
	}
	if _, res.hwm, err = memory(c.pid()); err != nil {
		return nil, err
	}
	return res, nil
}
