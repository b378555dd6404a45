package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// clusterVolumeSize is the size of the cluster section's volumes and of
// the single node's peer volume.
const clusterVolumeSize = 2 << 30

// clusterTarget is the target for a row of the cluster suite:
// reads at or above 0.8x of the single node, writes at or above 0.4x.
func clusterTarget(r row) float64 {
	if strings.Contains(r.rw, "write") {
		return 0.4
	}
	return 0.8
}

// clusterResult is the outcome of the cluster section.
type clusterResult struct {
	o                 options
	cluster, single   []measure // best round per row
	fillCl, fillSg    measure
	absence           *absenceResult
	heals             []*healResult // one per -heal-rates value
	startup, startup4 time.Duration // time to start the clusters
	took              time.Duration // the whole section
}

// clusterSuite runs the cluster section: the fio suite through node A of
// a 3-node cluster (a replicas = 3 volume) against a 1-node `cairn serve`
// (replicas = 1), alternating; then the short-absence run on the same
// cluster; then the healing run on a 4-node cluster started with
// --remove-after 10s. Every process it starts is stopped when it returns.
func clusterSuite(ctx context.Context, o options, bin, tmp string) (*clusterResult, error) {
	res := &clusterResult{o: o, cluster: make([]measure, len(o.rows)), single: make([]measure, len(o.rows))}
	if !o.healOnly {
		if err := fioAndAbsence(ctx, o, bin, tmp, res); err != nil {
			return nil, err
		}
	}
	for i, rate := range o.healRates {
		fmt.Fprintf(os.Stderr, "benchnbd: cluster: starting 4 cairn nodes with --remove-after %s --repair-rate %d for healing run %d\n", o.removeAfter, rate, i+1)
		t0 := time.Now()
		hc, err := startCluster(ctx, bin, filepath.Join(tmp, fmt.Sprintf("heal%d", i+1)), 4,
			append([]string{"--remove-after", o.removeAfter.String(), "--repair-rate", strconv.FormatInt(rate, 10)}, o.nodeArgs...)...)
		if err != nil {
			return nil, fmt.Errorf("cluster (healing): %w", err)
		}
		res.startup4 = time.Since(t0)
		h, err := healing(ctx, o, hc)
		hc.stop()
		if err != nil {
			return nil, fmt.Errorf("cluster: healing at --repair-rate %d: %w", rate, err)
		}
		h.rate = rate
		res.heals = append(res.heals, h)
	}
	return res, nil
}

// fioAndAbsence runs the fio suite and the short absence on a 3-node
// cluster and a single node, filling res.
func fioAndAbsence(ctx context.Context, o options, bin, tmp string, res *clusterResult) error {
	dir := filepath.Join(tmp, "cluster")
	fmt.Fprintf(os.Stderr, "benchnbd: cluster: starting 3 cairn nodes and 1 cairn serve in %s\n", dir)
	t0 := time.Now()
	cl, err := startCluster(ctx, bin, dir, 3, o.nodeArgs...)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	defer cl.stop()
	res.startup = time.Since(t0)
	if err := cl.createVolume(ctx, "r3", clusterVolumeSize, 3); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	singleDir := filepath.Join(tmp, "single")
	if err := os.MkdirAll(singleDir, 0o755); err != nil {
		return err
	}
	sg, err := startCairn(ctx, bin, singleDir, clusterVolumeSize)
	if err != nil {
		return fmt.Errorf("cluster: the single node: %w", err)
	}
	defer sg.stop(2 * time.Minute)

	a := cl.nodes[0]
	clURI := a.uri("r3")
	fill := []string{"--rw=write", "--bs=1m", "--iodepth=8", "--offset=0",
		"--size=" + strconv.FormatInt(o.clusterRegion, 10), "--end_fsync=1"}
	fmt.Fprintf(os.Stderr, "benchnbd: cluster: filling %d MiB of r3 through node A\n", o.clusterRegion>>20)
	if res.fillCl, err = fioSettled(ctx, a.proc, clURI, fill, 0); err != nil {
		return fmt.Errorf("cluster: filling r3: %w", err)
	}
	fmt.Fprintf(os.Stderr, "benchnbd: cluster: filling %d MiB of the single node\n", o.clusterRegion>>20)
	if res.fillSg, err = fioSettled(ctx, sg, sg.uri, fill, 0); err != nil {
		return fmt.Errorf("cluster: filling the single node: %w", err)
	}

	ro := o
	ro.region = o.clusterRegion
	for round := 0; round < o.clusterRounds; round++ {
		for i, r := range o.rows {
			sides := []string{"cluster", "single"}
			if round%2 == 1 {
				sides = []string{"single", "cluster"}
			}
			for _, side := range sides {
				if err := errors.Join(cl.alive(), sg.alive()); err != nil {
					return err
				}
				uri, pids, best, srv := clURI, cl.pids(), &res.cluster[i], a.proc
				if side == "single" {
					uri, pids, best, srv = sg.uri, []int{sg.pid()}, &res.single[i], sg
				}
				m, err := fioSettled(ctx, srv, uri, jobArgs(r, ro), o.ramp, pids...)
				if err != nil {
					return fmt.Errorf("cluster: %s, %s: %w", side, r.name, err)
				}
				fmt.Fprintf(os.Stderr, "benchnbd: cluster round %d  %-24s %-7s %9.0f IOPS %8.1f MB/s  p99 %v\n",
					round+1, r.name, side, m.iops, m.bw/1e6, m.p99)
				if !best.completed || m.iops > best.iops {
					*best = m
				}
			}
		}
	}
	sg.stop(2 * time.Minute)

	if !o.absence {
		return nil
	}
	if res.absence, err = shortAbsence(ctx, o, cl); err != nil {
		return fmt.Errorf("cluster: short absence: %w", err)
	}
	cl.stop()
	return nil
}

// repairSums sums the hand-off counters of the given nodes' status.
func repairSums(ctx context.Context, ns ...*clusterNode) (handedOff, handedBack int64, pending int, err error) {
	for _, nd := range ns {
		st, err := nd.status(ctx)
		if err != nil {
			return 0, 0, 0, err
		}
		handedOff += st.Repair.HandedOffBytes
		handedBack += st.Repair.HandedBackBytes
		pending += st.Repair.Pending
	}
	return handedOff, handedBack, pending, nil
}

// absenceResult is the short-absence run: C killed during a write job and
// restarted 10 s later.
type absenceResult struct {
	job         measure
	writtenAway int64         // client bytes written between the kill and C serving again
	away        time.Duration // from the kill until C served again
	handedOff   int64         // bytes written to other nodes for C meanwhile
	givenBack   int64         // bytes given back to C
	catchUp     time.Duration // from C serving again until nothing was pending
	caughtUp    bool
	killAt      time.Duration // into the job
	awayFor     time.Duration // from the kill to the restart
}

// shortAbsence kills C 5 s into a 30 s 4K random write job (QD8) through
// A, restarts it 10 s later, and waits until every piece written for C
// meanwhile went back to it.
func shortAbsence(ctx context.Context, o options, cl *cluster) (*absenceResult, error) {
	a, b, c := cl.nodes[0], cl.nodes[1], cl.nodes[2]
	res := &absenceResult{}
	off0, back0, _, err := repairSums(ctx, a, b)
	if err != nil {
		return nil, err
	}
	runtime, killAt, awayFor := 30*time.Second, 5*time.Second, 10*time.Second
	if o.quick {
		runtime, killAt, awayFor = 12*time.Second, 2*time.Second, 5*time.Second
	}
	res.killAt, res.awayFor = killAt, awayFor
	fmt.Fprintf(os.Stderr, "benchnbd: cluster: short absence: %s random write through A; C killed after %s, back %s later\n", runtime, killAt, awayFor)
	// A FLUSH every 256 writes (1 MiB): the write-back cache holds up to
	// a GiB, more than the region, so without them nothing would leave A
	// while C is away and there would be nothing to hand off.
	args := []string{"--rw=randwrite", "--bs=4k", "--iodepth=8", "--offset=0", "--size=" + strconv.FormatInt(o.clusterRegion, 10),
		"--time_based", "--runtime=" + secs(runtime), "--norandommap", "--randrepeat=0", "--fsync=256"}
	prog := &progress{}
	type result struct {
		m   measure
		err error
	}
	done := make(chan result, 1)
	started := time.Now()
	go func() {
		m, err := fioProgress(ctx, a.uri("r3"), args, prog)
		done <- result{m, err}
	}()
	wait := func(d time.Duration) error {
		select {
		case r := <-done:
			done <- r
			if r.err != nil {
				return r.err
			}
			return errors.New("the write job ended before the node came back: make it longer")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := wait(killAt); err != nil {
		return nil, err
	}
	c.kill()
	killed := time.Now()
	if err := wait(time.Until(killed.Add(awayFor))); err != nil {
		return nil, err
	}
	if err := c.start(ctx, cl.bin); err != nil {
		return nil, fmt.Errorf("restarting C: %w", err)
	}
	back := time.Now()
	res.away = back.Sub(killed)
	r := <-done
	if r.err != nil {
		return nil, r.err
	}
	res.job = r.m
	res.writtenAway = prog.at(back) - prog.at(killed)
	fmt.Fprintf(os.Stderr, "benchnbd: cluster: the write job ended %s after it started; waiting for C to catch up\n", time.Since(started).Round(time.Second))

	var off, backB int64
	_, err = waitUntil(ctx, 3*time.Minute, "C to get back what it missed", func() (bool, error) {
		if err := cl.alive(); err != nil {
			return false, err
		}
		o, bk, pending, err := repairSums(ctx, a, b, c)
		if err != nil {
			return false, nil
		}
		off, backB = o-off0, bk-back0
		return pending == 0 && backB >= off, nil
	})
	if err != nil && !errors.Is(err, errTimeout) {
		return nil, err
	}
	res.caughtUp = err == nil
	res.catchUp = time.Since(back)
	res.handedOff, res.givenBack = off, backB
	return res, nil
}

// healResult is the healing run: 1 GiB on a 4-node cluster, C killed for
// good.
type healResult struct {
	written     int64
	fill        measure
	before      measure // the mixed job before the kill
	removed     time.Duration
	healed      time.Duration
	done        bool // healed within the limit
	rewritten   int64
	checked     int64
	deadIOPS    []float64 // mixed jobs while C was dead but still placed
	healingIOPS []float64 // mixed jobs during the rebuild
	limit       time.Duration
	load        time.Duration // how long into the rebuild the client job ran
	removeAfter time.Duration
	runtime     time.Duration // of each mixed job
	rate        int64         // the nodes' --repair-rate (0: unlimited)
	// From the live nodes' status at the end (sums over A, B, D).
	repairedBytes, repairedPieces int64
	throttled                     time.Duration
}

// mixedArgs is the client job of the healing run: 4K random reads and
// writes, half each, QD8, over the written region.
func mixedArgs(region int64, runtime time.Duration) []string {
	return []string{"--rw=randrw", "--rwmixread=50", "--bs=4k", "--iodepth=8", "--offset=0",
		"--size=" + strconv.FormatInt(region, 10), "--time_based", "--runtime=" + secs(runtime),
		"--norandommap", "--randrepeat=0"}
}

// anti-entropy passes log these when they rewrote something.
var (
	passLine     = regexp.MustCompile(`msg="anti-entropy pass"`)
	repairedAttr = regexp.MustCompile(`\brepaired=(\d+)`)
)

// healing writes 1 GiB (-heal-size) to a fresh replicas = 3 volume
// through A, runs the mixed client job once, kills C with SIGKILL, and
// measures the time until every live node has finished an anti-entropy
// pass after C's removal and no shard lacks replicas. The mixed job runs
// again and again through A from the kill until -heal-load after the
// removal (or the end of the healing, if sooner).
func healing(ctx context.Context, o options, cl *cluster) (*healResult, error) {
	a, c := cl.nodes[0], cl.nodes[2]
	live := []*clusterNode{cl.nodes[0], cl.nodes[1], cl.nodes[3]}
	res := &healResult{written: o.healSize, limit: o.healLimit, load: o.healLoad, removeAfter: o.removeAfter, runtime: 3 * time.Second}
	if err := cl.createVolume(ctx, "heal", clusterVolumeSize, 3); err != nil {
		return nil, err
	}
	uri := a.uri("heal")
	fmt.Fprintf(os.Stderr, "benchnbd: cluster: healing: writing %d MiB through A\n", o.healSize>>20)
	var err error
	res.fill, err = fio(ctx, uri, []string{"--rw=write", "--bs=1m", "--iodepth=8", "--offset=0",
		"--size=" + strconv.FormatInt(o.healSize, 10), "--end_fsync=1"}, 0)
	if err != nil {
		return nil, err
	}
	if res.before, err = fio(ctx, uri, mixedArgs(o.healSize, o.runtime), o.ramp); err != nil {
		return nil, err
	}
	passes0 := map[*clusterNode]int{}
	logSize := map[*clusterNode]int64{}
	for _, nd := range live {
		st, err := nd.status(ctx)
		if err != nil {
			return nil, err
		}
		passes0[nd] = st.Repair.ScrubPasses
		if fi, err := os.Stat(nd.proc.log); err == nil {
			logSize[nd] = fi.Size()
		}
	}

	fmt.Fprintf(os.Stderr, "benchnbd: cluster: healing: killing C (SIGKILL), running the mixed job through A until healed\n")
	c.kill()
	killed := time.Now()

	// The client job, again and again, until the healing is over.
	type job struct {
		start, end time.Time
		m          measure
	}
	var (
		jobs   []job
		jobErr error
		wg     sync.WaitGroup
	)
	var removed atomic.Pointer[time.Time] // when A's view dropped C
	jctx, stopJobs := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for jctx.Err() == nil {
			if r := removed.Load(); r != nil && time.Since(*r) >= o.healLoad {
				return // the loaded window of the rebuild is over
			}
			s := time.Now()
			m, err := fio(jctx, uri, mixedArgs(o.healSize, res.runtime), 0)
			if jctx.Err() != nil {
				return // cut short: not a measurement
			}
			if err != nil {
				jobErr = err
				return
			}
			jobs = append(jobs, job{s, time.Now(), m})
		}
	}()

	var removedAt time.Time
	lastReport := time.Now()
	_, err = waitUntil(ctx, o.healLimit, "the anti-entropy passes after C's removal", func() (bool, error) {
		if err := cl.alive(c); err != nil {
			return false, err
		}
		if removedAt.IsZero() {
			st, err := a.status(ctx)
			if err != nil {
				return false, nil
			}
			gone := true
			for _, nd := range st.Nodes {
				if nd.NBD == c.nbd && nd.InView {
					gone = false
				}
			}
			if !gone {
				return false, nil
			}
			removedAt = time.Now()
			removed.Store(&removedAt)
			fmt.Fprintf(os.Stderr, "benchnbd: cluster: healing: C left A's view %s after the kill\n", removedAt.Sub(killed).Round(100*time.Millisecond))
		}
		if time.Since(lastReport) >= 15*time.Second {
			lastReport = time.Now()
			var b strings.Builder
			for _, nd := range live {
				if st, err := nd.status(ctx); err == nil {
					fmt.Fprintf(&b, "  %s: pass %d running=%v scanned %d/%d checked %d rewrote %d (%d MiB) at %d MiB/s under-replicated %d;", nd.name,
						st.Repair.ScrubPasses, st.Repair.ScrubRunning, st.Repair.ScrubScanned, st.Repair.ScrubTotal, st.Repair.ScrubChecked, st.Repair.ScrubRepaired,
						st.Repair.RepairedBytes>>20, st.Repair.RecentRate>>20, st.Repair.UnderReplicated)
				}
			}
			fmt.Fprintf(os.Stderr, "benchnbd: cluster: healing, %s after the kill:%s\n", time.Since(killed).Round(time.Second), b.String())
		}
		under := 0
		for _, nd := range live {
			st, err := nd.status(ctx)
			if err != nil {
				return false, nil
			}
			if st.Repair.ScrubRunning || st.Repair.ScrubPasses <= passes0[nd] || !st.Repair.ScrubDone.After(removedAt) {
				return false, nil
			}
			under += st.Repair.UnderReplicated
		}
		return under == 0, nil
	})
	healedAt := time.Now()
	stopJobs()
	wg.Wait()
	if err != nil && !errors.Is(err, errTimeout) {
		return nil, err
	}
	if jobErr != nil {
		return nil, fmt.Errorf("the client job during healing: %w", jobErr)
	}
	res.done = err == nil
	res.healed = healedAt.Sub(killed)
	if !removedAt.IsZero() {
		res.removed = removedAt.Sub(killed)
	}
	for _, nd := range live {
		st, err := nd.status(ctx)
		if err != nil {
			return nil, err
		}
		res.checked += st.Repair.ScrubChecked
		res.repairedBytes += st.Repair.RepairedBytes
		res.repairedPieces += st.Repair.RepairedPieces
		res.throttled += st.Repair.Throttled
		res.rewritten += rewrittenSince(nd.proc.log, logSize[nd])
	}
	for _, j := range jobs {
		mid := j.start.Add(j.end.Sub(j.start) / 2)
		iops := j.m.readIOPS + j.m.writeIOPS
		switch {
		case removedAt.IsZero() || mid.Before(removedAt):
			res.deadIOPS = append(res.deadIOPS, iops)
		case mid.Before(healedAt):
			res.healingIOPS = append(res.healingIOPS, iops)
		}
	}
	return res, nil
}

// rewrittenSince sums repaired=N of the "anti-entropy pass" lines that a
// node logged after the first from bytes of its log.
func rewrittenSince(log string, from int64) int64 {
	f, err := os.Open(log)
	if err != nil {
		return 0
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return 0
	}
	var sum int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !passLine.MatchString(line) {
			continue
		}
		if m := repairedAttr.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			sum += n
		}
	}
	return sum
}

// progress records a running fio job's bytes written over time.
type progress struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	t       time.Time
	written int64
}

func (p *progress) add(t time.Time, written int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.samples = append(p.samples, sample{t, written})
}

// at estimates the bytes written by time t, interpolating between the
// samples around it.
func (p *progress) at(t time.Time) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return interpolate(p.samples, t)
}

func interpolate(s []sample, t time.Time) int64 {
	if len(s) == 0 {
		return 0
	}
	if !t.After(s[0].t) {
		return s[0].written // before the first sample: as at the first
	}
	for i := 1; i < len(s); i++ {
		if t.After(s[i].t) {
			continue
		}
		a, b := s[i-1], s[i]
		span := b.t.Sub(a.t)
		if span <= 0 {
			return b.written
		}
		return a.written + int64(float64(b.written-a.written)*float64(t.Sub(a.t))/float64(span))
	}
	return s[len(s)-1].written
}

// fioProgress runs a fio job with --status-interval=1 and records its
// cumulative bytes written in p as the status reports arrive; it returns
// the final summary.
func fioProgress(ctx context.Context, uri string, args []string, p *progress) (measure, error) {
	full := append([]string{"--name=bench", "--ioengine=nbd", "--uri=" + uri, "--output-format=json", "--status-interval=1"}, args...)
	cmd := exec.CommandContext(ctx, "fio", full...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return measure{}, err
	}
	if err := cmd.Start(); err != nil {
		return measure{}, fmt.Errorf("starting fio: %w", err)
	}
	last, got, decErr := readFioStream(stdout, p)
	_, _ = io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		return measure{}, fmt.Errorf("fio %v: %w\n%s", args, err, stderr.String())
	}
	if decErr != nil || !got {
		return measure{}, fmt.Errorf("parsing fio's JSON: %v", decErr)
	}
	if len(last.Jobs) != 1 || last.Jobs[0].Error != 0 {
		return measure{}, fmt.Errorf("fio %v: unexpected result: %s", args, stderr.String())
	}
	w := last.Jobs[0].Write
	return measure{iops: w.IOPS, bw: w.BW, ios: w.TotalIOs, writeIOPS: w.IOPS, readIOPS: last.Jobs[0].Read.IOPS,
		p99: time.Duration(w.Clat.Percentile["99.000000"]), completed: true}, nil
}

// readFioStream decodes the JSON objects fio prints with
// --status-interval, skipping any text around them (fio prints warnings,
// and "fio: ..." lines, on stdout too), and records each one's cumulative
// bytes written in p. It returns the last object, whether there was one,
// and the first decoding error (an object cut short at the end).
func readFioStream(r io.Reader, p *progress) (last fioJSON, got bool, err error) {
	br := bufio.NewReader(r)
	var obj []byte // the object being read, from its first line
	for {
		line, rerr := br.ReadBytes('\n')
		if len(obj) == 0 && bytes.HasPrefix(line, []byte("{")) {
			obj = append(obj, line...)
		} else if len(obj) > 0 {
			obj = append(obj, line...)
		}
		if len(obj) > 0 && bytes.HasSuffix(bytes.TrimSpace(line), []byte("}")) && json.Valid(obj) {
			var out fioJSON
			if err := json.Unmarshal(obj, &out); err != nil {
				return last, got, err
			}
			obj = obj[:0]
			if len(out.Jobs) == 1 {
				p.add(time.Now(), out.Jobs[0].Write.IOBytes)
			}
			last, got = out, true
		}
		if rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				return last, got, rerr
			}
			if len(bytes.TrimSpace(obj)) > 0 {
				return last, got, fmt.Errorf("fio's JSON cut short: %d bytes", len(obj))
			}
			return last, got, nil
		}
	}
}
