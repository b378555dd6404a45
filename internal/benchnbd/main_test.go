package main

import (
	"os"
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
	tab := r.table("2s")
	if len(tab.rows) != 3 || tab.rows[0][5] != "0.10x" || tab.rows[1][5] != "n/a" {
		t.Errorf("table rows %q", tab.rows)
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
}
