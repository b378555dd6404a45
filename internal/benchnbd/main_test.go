package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "4GiB", want: 4 << 30},
		{in: "512MiB", want: 512 << 20},
		{in: "1g", want: 1 << 30},
		{in: "4096", want: 4096},
		{in: "", bad: true},
		{in: "-1GiB", bad: true},
		{in: "GiB", bad: true},
		{in: "1 parsec", bad: true},
	} {
		got, err := parseSize(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseSize(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseGoBench(t *testing.T) {
	out := `goos: linux
pkg: cairn/internal/node
BenchmarkVolume/RandWrite4K-2         	  659968	     30715 ns/op	 133.35 MB/s
BenchmarkVolume/WriteFlush4K-2        	   45604	     47984 ns/op	  85.36 MB/s	     120 B/op	       3 allocs/op
BenchmarkFile/RandWrite4K-2           	  696052	      3158 ns/op	1297.23 MB/s
BenchmarkFile/Other                   	      10	       100 ns/op
BenchmarkSomethingElse-2              	      10	       100 ns/op
PASS
`
	r, err := parseGoBench(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.order, ","); got != "RandWrite4K,WriteFlush4K,Other" {
		t.Errorf("order = %s", got)
	}
	if r.ns["Volume"]["RandWrite4K"] != 30715 || r.ns["File"]["RandWrite4K"] != 3158 || r.mbps["Volume"]["WriteFlush4K"] != 85.36 {
		t.Errorf("parsed %v %v", r.ns, r.mbps)
	}
	tab := r.table("2s", 1)
	if len(tab.rows) != 3 || tab.rows[0][5] != "0.10x" || tab.rows[1][5] != "n/a" {
		t.Errorf("table rows %q", tab.rows)
	}
}

func TestMedianGo(t *testing.T) {
	round := func(v, f float64) *goResult {
		return &goResult{
			order: []string{"WriteFlush4K"},
			ns:    map[string]map[string]float64{"Volume": {"WriteFlush4K": v}, "File": {"WriteFlush4K": f}},
			mbps:  map[string]map[string]float64{"Volume": {"WriteFlush4K": 1e6 / v}, "File": {"WriteFlush4K": 1e6 / f}},
		}
	}
	late := round(300, 100)
	late.order = append(late.order, "Extra")
	late.ns["Volume"]["Extra"] = 7
	m := medianGo([]*goResult{round(200, 170), late, round(180, 210)})
	if m.ns["Volume"]["WriteFlush4K"] != 200 || m.ns["File"]["WriteFlush4K"] != 170 {
		t.Errorf("medians %v, want volume 200, file 170", m.ns)
	}
	if m.mbps["Volume"]["WriteFlush4K"] != 1e6/200 {
		t.Errorf("MB/s %v is not the median round's", m.mbps["Volume"]["WriteFlush4K"])
	}
	if strings.Join(m.order, ",") != "WriteFlush4K,Extra" || m.ns["Volume"]["Extra"] != 7 {
		t.Errorf("order %v, extra %v", m.order, m.ns["Volume"]["Extra"])
	}
	if _, ok := m.ns["File"]["Extra"]; ok {
		t.Error("a side no round measured got a value")
	}
	if got := medianGo([]*goResult{round(1, 2), round(3, 4)}).ns["Volume"]["WriteFlush4K"]; got != 1 {
		t.Errorf("even count: median %v, want the lower middle 1", got)
	}
}

func TestProcStats(t *testing.T) {
	pid := os.Getpid()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		// burn a little CPU so that utime+stime moves
	}
	cpu, err := cpuTime(pid)
	if err != nil || cpu <= 0 {
		t.Errorf("cpuTime = %v, %v", cpu, err)
	}
	rss, hwm, err := memory(pid)
	if err != nil || rss <= 0 || hwm < rss {
		t.Errorf("memory = %d, %d, %v", rss, hwm, err)
	}
	if anon, err := anonMemory(pid); err != nil || anon <= 0 || anon > hwm {
		t.Errorf("anonMemory = %d, %v (VmHWM %d)", anon, err, hwm)
	}
}

func TestInterpolate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	s := []sample{{t0, 100}, {t0.Add(time.Second), 200}, {t0.Add(3 * time.Second), 400}}
	for _, tc := range []struct {
		at   time.Duration
		want int64
	}{
		{-time.Second, 100}, {0, 100}, {500 * time.Millisecond, 150}, {time.Second, 200},
		{2 * time.Second, 300}, {3 * time.Second, 400}, {10 * time.Second, 400},
	} {
		if got := interpolate(s, t0.Add(tc.at)); got != tc.want {
			t.Errorf("interpolate at %v = %d, want %d", tc.at, got, tc.want)
		}
	}
	if got := interpolate(nil, t0); got != 0 {
		t.Errorf("interpolate(nil) = %d", got)
	}
}

func TestRewrittenSince(t *testing.T) {
	log := `time=2026-01-01T00:00:00Z level=INFO msg="anti-entropy pass" checked=10 repaired=7 unreadable=0
time=2026-01-01T00:00:01Z level=INFO msg="something else" repaired=1000
time=2026-01-01T00:00:02Z level=INFO msg="anti-entropy pass" checked=20 repaired=5 unreadable=0
`
	p := filepath.Join(t.TempDir(), "node.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := rewrittenSince(p, 0); got != 12 {
		t.Errorf("rewrittenSince(0) = %d, want 12", got)
	}
	second := int64(strings.Index(log, "time=2026-01-01T00:00:01Z"))
	if got := rewrittenSince(p, second); got != 5 {
		t.Errorf("rewrittenSince(second line) = %d, want 5", got)
	}
	if got := rewrittenSince(filepath.Join(t.TempDir(), "missing"), 0); got != 0 {
		t.Errorf("rewrittenSince(missing) = %d", got)
	}
}

func TestClusterTarget(t *testing.T) {
	for _, r := range suiteRows {
		want := 0.8
		if strings.Contains(r.name, "write") {
			want = 0.4
		}
		if got := clusterTarget(r); got != want {
			t.Errorf("clusterTarget(%s) = %v, want %v", r.name, got, want)
		}
	}
}

func TestReadFioStream(t *testing.T) {
	in := `fio: some warning
{"jobs": [{"error": 0, "write": {"io_bytes": 4096, "iops": 1}}]}
{"jobs": [{"error": 0, "write": {"io_bytes": 8192, "iops": 2}}]}
{"jobs": [{"error": 0, "write": {"io_bytes": 16384, "iops": 3, "total_ios": 4}}]}
`
	var p progress
	last, got, err := readFioStream(strings.NewReader(in), &p)
	if err != nil || !got {
		t.Fatalf("readFioStream: %v, %v", got, err)
	}
	if len(p.samples) != 3 || p.samples[2].written != 16384 || last.Jobs[0].Write.TotalIOs != 4 {
		t.Errorf("samples %v, last %+v", p.samples, last)
	}
	if _, got, err := readFioStream(strings.NewReader("no json here"), &p); got || err != nil {
		t.Errorf("no JSON: got %v, err %v", got, err)
	}
	if _, _, err := readFioStream(strings.NewReader(`{"jobs": [`), &p); err == nil {
		t.Errorf("truncated JSON: no error")
	}
}

// TestSections: -heal=false drops the healing runs, -absence=false the
// short absence (the cluster section is then the fio suite alone, and
// its report only that table), and -heal-only with -heal=false is
// refused.
func TestSections(t *testing.T) {
	o := options{heal: false, absence: false, healRates: []int64{8 << 20, 0}}
	if err := o.sections(); err != nil || o.healRates != nil {
		t.Fatalf("-heal=false: err %v, heal rates %v; want none", err, o.healRates)
	}
	o = options{heal: true, healRates: []int64{8 << 20, 0}}
	if err := o.sections(); err != nil || len(o.healRates) != 2 {
		t.Fatalf("-heal=true: err %v, heal rates %v; want both", err, o.healRates)
	}
	o = options{heal: false, healOnly: true, healRates: []int64{0}}
	if err := o.sections(); err == nil {
		t.Fatal("-heal-only -heal=false: accepted")
	}
	// The report of a fio-only cluster section is the fio table alone.
	o = options{rows: suiteRows[:1], clusterRounds: 1}
	r := &clusterResult{o: o, cluster: make([]measure, 1), single: make([]measure, 1)}
	if ts := r.tables(); len(ts) != 1 {
		t.Fatalf("fio-only section rendered %d tables, want 1", len(ts))
	}
}
