package main

import (
	"fmt"
	"time"
)

// tables renders the cluster section: the fio suite, the short absence,
// and the healing run.
func (r *clusterResult) tables() []*table {
	o := r.o
	t := &table{
		title:  "fio over NBD: 3-node cluster (replicas = 3, through node A) vs 1-node cairn serve (replicas = 1)",
		header: []string{"row", "cluster", "single", "cluster/single", "target", "", "cluster CPU µs/IO (3 nodes)", "single CPU µs/IO", "cluster p99", "single p99"},
	}
	missed := 0
	for i, row := range o.rows {
		c, s := r.cluster[i], r.single[i]
		ratio := 0.0
		if s.iops > 0 {
			ratio = c.iops / s.iops
		}
		target := clusterTarget(row)
		verdict := "pass"
		if ratio < target {
			verdict = "MISS"
			missed++
		}
		t.rows = append(t.rows, []string{
			row.name, perf(c), perf(s), fmt.Sprintf("%.2fx", ratio), fmt.Sprintf(">= %.1fx", target), verdict,
			micros(c.cpuPerIO), micros(s.cpuPerIO), c.p99.Round(time.Microsecond).String(), s.p99.Round(time.Microsecond).String(),
		})
	}
	t.notes = append(t.notes,
		fmt.Sprintf("%d of %d targets missed (reads >= 0.8x, writes >= 0.4x of the single node). Each row: best of %d round(s), %s measured after %s ramp, region %d MiB of a %d MiB volume, sides alternating.",
			missed, len(o.rows), o.clusterRounds, o.runtime, o.ramp, o.clusterRegion>>20, clusterVolumeSize>>20),
		"All 4 processes (3 nodes + the single node) share this machine's cores, so the cluster's 3 copies cost CPU the single node does not pay; cluster CPU µs/IO is summed over the 3 nodes.",
		fmt.Sprintf("Fill (1M seq write QD8 + fsync): cluster %s, single %s. Cluster start-up (3 nodes, all alive): %s.",
			perf(r.fillCl), perf(r.fillSg), r.startup.Round(100*time.Millisecond)),
	)
	tables := []*table{t}
	if o.healOnly {
		tables = nil
	}

	if a := r.absence; a != nil {
		at := &table{title: fmt.Sprintf("Short absence: node C killed (SIGKILL) %s into a 4K random write job (QD8) through A, restarted %s later", a.killAt, a.awayFor),
			header: []string{"measure", "value"}}
		caught := fmt.Sprintf("%s after C served again", a.catchUp.Round(100*time.Millisecond))
		if !a.caughtUp {
			caught = fmt.Sprintf("NOT within %s (pending pieces left, or less given back than handed off)", a.catchUp.Round(time.Second))
		}
		ratio := "n/a"
		if a.writtenAway > 0 {
			ratio = fmt.Sprintf("%.2fx", float64(a.givenBack)/float64(a.writtenAway))
		}
		at.rows = [][]string{
			{"C away (kill to serving again)", a.away.Round(100 * time.Millisecond).String()},
			{"client bytes written while C was away", mib(a.writtenAway)},
			{"handed off for C (status: handed off, A+B)", mib(a.handedOff)},
			{"given back to C (status: given back)", mib(a.givenBack)},
			{"given back / written while away", ratio},
			{"caught up", caught},
			{"write job over the whole run", perf(a.job)},
		}
		at.notes = append(at.notes, "Bytes written while away: fio's cumulative write bytes (--status-interval=1) interpolated at the kill and at C's return. Catching up: every node's pending pieces at 0 and given back >= handed off.")
		tables = append(tables, at)
	}

	if len(r.heals) > 0 {
		tables = append(tables, r.healTable())
	}
	return tables
}

// iopsSummary is the mean of runs and its ratio to before.
func iopsSummary(runs []float64, before float64) string {
	if len(runs) == 0 {
		return "no complete run in this phase"
	}
	sum := 0.0
	for _, x := range runs {
		sum += x
	}
	mean := sum / float64(len(runs))
	ratio := 0.0
	if before > 0 {
		ratio = mean / before
	}
	return fmt.Sprintf("%.0f (%.2fx of before; mean of %d runs)", mean, ratio, len(runs))
}

// healTable renders the healing runs side by side, one column per
// --repair-rate.
func (r *clusterResult) healTable() *table {
	h0 := r.heals[0]
	ht := &table{title: fmt.Sprintf("Healing: 4-node cluster (--remove-after %s), %s written to a replicas = 3 volume through A, node C killed for good; one fresh cluster per repair throttle", h0.removeAfter, mib(h0.written)),
		header: []string{"measure"}}
	rows := [][]string{
		{"repair throttle (--repair-rate on every node)"},
		{"write of the data (1M seq QD8 + fsync)"},
		{"C dropped from placement (A's view)"},
		{"healed (every live node's pass after the removal done, no shard lacking replicas)"},
		{"time to heal: rebuilding (removal to healed)"},
		{"bytes rewritten (status: repaired, sum of A, B, D)"},
		{"heal rate (rewritten bytes / rebuilding time)"},
		{"pieces rewritten (passes after the kill, sum of A, B, D)"},
		{"blocks checked (last pass, sum of A, B, D)"},
		{"time background copies waited for the throttle (sum)"},
		{"client 4K randrw QD8 IOPS before the kill"},
		{"client IOPS with C dead, before the removal"},
		{"client IOPS during the rebuild"},
	}
	for _, h := range r.heals {
		ht.header = append(ht.header, "rate "+rateName(h.rate))
		healed := fmt.Sprintf("%s after the kill", h.healed.Round(100*time.Millisecond))
		if !h.done {
			healed = fmt.Sprintf("NOT within %s of the kill", h.limit)
		}
		removed := "not seen"
		if h.removed > 0 {
			removed = fmt.Sprintf("%s after the kill", h.removed.Round(100*time.Millisecond))
		}
		rebuild, healRate := "n/a", "n/a"
		if h.done && h.removed > 0 {
			d := h.healed - h.removed
			rebuild = d.Round(100 * time.Millisecond).String()
			if d > 0 {
				healRate = fmt.Sprintf("%.1f MiB/s", float64(h.repairedBytes)/(1<<20)/d.Seconds())
			}
		}
		before := h.before.readIOPS + h.before.writeIOPS
		vals := []string{
			rateName(h.rate),
			perf(h.fill),
			removed,
			healed,
			rebuild,
			mib(h.repairedBytes),
			healRate,
			fmt.Sprint(h.rewritten),
			fmt.Sprint(h.checked),
			h.throttled.Round(100 * time.Millisecond).String(),
			fmt.Sprintf("%.0f (read %.0f + write %.0f)", before, h.before.readIOPS, h.before.writeIOPS),
			iopsSummary(h.deadIOPS, before),
			iopsSummary(h.healingIOPS, before),
		}
		for i := range rows {
			rows[i] = append(rows[i], vals[i])
		}
	}
	ht.rows = rows
	ht.notes = append(ht.notes,
		fmt.Sprintf("The client job (4K random read+write 50/50, QD8, over the written region) runs back to back in %s runs through A from the kill until %s into the rebuild (or until healed, if sooner); each run counts in the phase holding its midpoint. The rest of the rebuild runs without client load.", h0.runtime, h0.load),
		"The throttle paces each node's background copies (every piece anti-entropy reads or rewrites, every piece given back) while clients do I/O through that node (here only A); with no client I/O for a second they run unthrottled.",
		fmt.Sprintf("4-node cluster start-up (last run): %s. The whole cluster section took %s.", r.startup4.Round(100*time.Millisecond), r.took.Round(time.Second)))
	return ht
}

// rateName prints a --repair-rate.
func rateName(rate int64) string {
	if rate == 0 {
		return "unlimited"
	}
	return mib(rate) + "/s"
}
