package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// parseSize reads a volume size such as "10GiB", "512MiB", "1T" or
// "1073741824". Units are binary (K, M, G, T, P with or without "iB");
// decimal units ("GB") are refused so that nobody gets 7% less than asked.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, usagef("size %q: write a number with a binary unit, e.g. 10GiB", s)
	}
	var shift uint
	switch strings.ToLower(unit) {
	case "", "b":
		shift = 0
	case "k", "kib":
		shift = 10
	case "m", "mib":
		shift = 20
	case "g", "gib":
		shift = 30
	case "t", "tib":
		shift = 40
	case "p", "pib":
		shift = 50
	case "kb", "mb", "gb", "tb", "pb":
		return 0, usagef("size %q: decimal units are ambiguous; write %s%ciB", s, num, unit[0]&^0x20)
	default:
		return 0, usagef("size %q: unknown unit %q; write B, KiB, MiB, GiB, TiB or PiB", s, unit)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 {
		return 0, usagef("size %q: write a positive number with a binary unit, e.g. 10GiB", s)
	}
	v := f * float64(uint64(1)<<shift)
	if v > math.MaxInt64/2 {
		return 0, usagef("size %q is too large", s)
	}
	n := int64(v)
	if n%512 != 0 {
		return 0, usagef("size %q (%d bytes) is not a multiple of 512; try %d", s, n, (n/512+1)*512)
	}
	return n, nil
}

// formatSize prints n bytes in the largest binary unit that keeps it exact
// to one decimal.
func formatSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f := float64(n)
	u := 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	if u == 0 {
		return fmt.Sprintf("%d B", n)
	}
	if f == math.Trunc(f) {
		return fmt.Sprintf("%.0f %s", f, units[u])
	}
	return fmt.Sprintf("%.1f %s", f, units[u])
}
