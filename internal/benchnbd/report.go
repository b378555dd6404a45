package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// table is a titled grid of cells, printed as aligned text or Markdown.
type table struct {
	title  string
	header []string
	rows   [][]string
	notes  []string
}

func (t *table) text(w io.Writer) {
	fmt.Fprintln(w, t.title)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(t.header, "\t"))
	for _, r := range t.rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	for _, n := range t.notes {
		fmt.Fprintln(w, n)
	}
}

func (t *table) markdown(w io.Writer) {
	fmt.Fprintf(w, "### %s\n\n", t.title)
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.header, " | "))
	fmt.Fprintf(w, "|%s\n", strings.Repeat(" --- |", len(t.header)))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range t.notes {
			fmt.Fprintf(w, "%s  \n", n)
		}
	}
}

func perf(m measure) string {
	return fmt.Sprintf("%.0f IOPS / %.1f MB/s", m.iops, m.bw/1e6)
}

func micros(d time.Duration) string {
	return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond))
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// nbdTable renders the fio suite.
func (r *nbdResult) table() *table {
	t := &table{
		title:  "fio over NBD: cairn serve vs nbdkit file (same disk)",
		header: []string{"row", "cairn", "nbdkit", "cairn/nbdkit", "target", "", "cairn CPU µs/IO", "nbdkit CPU µs/IO", "cairn p99", "nbdkit p99"},
	}
	missed := 0
	for i, row := range r.o.rows {
		c, k := r.cairn[i], r.nbdkit[i]
		ratio := 0.0
		if k.iops > 0 {
			ratio = c.iops / k.iops
		}
		verdict := "pass"
		if ratio < row.target {
			verdict = "MISS"
			missed++
		}
		t.rows = append(t.rows, []string{
			row.name, perf(c), perf(k), fmt.Sprintf("%.2fx", ratio), fmt.Sprintf(">= %.1fx", row.target), verdict,
			micros(c.cpuPerIO), micros(k.cpuPerIO), c.p99.Round(time.Microsecond).String(), k.p99.Round(time.Microsecond).String(),
		})
	}
	o := r.o
	t.notes = append(t.notes,
		fmt.Sprintf("%d of %d targets missed. Each row: best of %d round(s), fio nbd engine, %s measured after %s ramp, region %d MiB of a %d MiB disk, servers alternating.",
			missed, len(o.rows), o.rounds, o.runtime, o.ramp, o.region>>20, o.size>>20),
		fmt.Sprintf("Fill (1M seq write QD8 + fsync): cairn %s, nbdkit %s.", perf(r.fillCairn), perf(r.fillNbdkit)),
		fmt.Sprintf("cairn RSS: %s at rest, %s after the fill, max %s (after %q), peak (VmHWM) %s; its own memory (RssAnon) at most %s, the rest being page-cache pages of the segments it reads through mappings.",
			mib(r.rssRest), mib(r.rssFilled), mib(r.rssMax), r.rssMaxRow, mib(r.hwm), mib(r.anonMax)),
		"CPU µs/IO: utime+stime of the server process over the measured window / I/Os (10 ms clock resolution; the fsync row counts writes, each with its flush).",
	)
	return t
}

func (r *nbdResult) text(w io.Writer)     { r.table().text(w) }
func (r *nbdResult) markdown(w io.Writer) { r.table().markdown(w) }
