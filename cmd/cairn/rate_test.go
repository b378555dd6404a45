package main

import (
	"strings"
	"testing"

	"cairn/internal/admin"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"64MiB", 64 << 20, true},
		{"64MiB/s", 64 << 20, true},
		{"1GiB", 1 << 30, true},
		{"0", 0, true},
		{"unlimited", 0, true},
		{"off", 0, true},
		{"64MB", 0, false},
		{"fast", 0, false},
		{"-1MiB", 0, false},
	} {
		got, err := parseRate(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseRate(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestPrintRepair(t *testing.T) {
	var b strings.Builder
	printRepair(&b, admin.RepairStatus{
		Pending: 3, ScrubRunning: true, ScrubTotal: 1000, ScrubScanned: 250,
		RepairedPieces: 10, RepairedBytes: 40 << 10, GivenBackPieces: 2, HandedBackBytes: 8 << 10,
		Rate: 64 << 20, RecentRate: 5 << 20, UnderReplicated: 1,
	})
	out := b.String()
	for _, want := range []string{
		"repairing:\t753 pieces waiting; anti-entropy pass 25% (250 of 1000 pieces checked)",
		"40 KiB in 10 pieces repaired, 8 KiB in 2 pieces given back",
		"5 MiB/s over the last 10s (limit 64 MiB/s while clients are busy",
		"under-replicated:\t1 shards",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

func TestValidCCName(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"cubic", true},
		{"reno", true},
		{"bbr", true},
		{"", true}, // the system's default
		{"BBR", false},
		{"cubic reno", false},
		{"../../etc", false},
		{"a_name_too_long_", false},
	} {
		if got := validCCName(tc.in); got != tc.ok {
			t.Errorf("validCCName(%q) = %v, want %v", tc.in, got, tc.ok)
		}
	}
}
