package main

import (
	"strings"
)

// parseRate reads a byte rate per second such as "64MiB", "64MiB/s" or
// "512KiB"; "0", "off" and "unlimited" mean no limit (0). Units are those
// of parseSize.
func parseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	switch strings.ToLower(t) {
	case "0", "off", "unlimited", "none":
		return 0, nil
	}
	t = strings.TrimSuffix(strings.TrimSuffix(t, "/s"), "ps")
	n, err := parseSize(t)
	if err != nil {
		return 0, usagef("--repair-rate %q: write bytes per second with a binary unit, e.g. 64MiB, or 0 for no limit", s)
	}
	return n, nil
}
