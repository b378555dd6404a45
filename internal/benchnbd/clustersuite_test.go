package main

import (
	"strings"
	"testing"
)

// TestReadFioStreamSkipsText checks that text fio prints between its
// JSON status objects (warnings, "fio: ..." lines) is skipped, with
// pretty-printed objects as fio writes them.
func TestReadFioStreamSkipsText(t *testing.T) {
	in := "{\n  \"jobs\" : [\n    {\"error\": 0, \"write\": {\"io_bytes\": 4096}}\n  ]\n}\n" +
		"fio: a warning between objects\n" +
		"{\n  \"jobs\" : [\n    {\"error\": 0, \"write\": {\"io_bytes\": 8192, \"total_ios\": 2}}\n  ]\n}\n"
	var p progress
	last, got, err := readFioStream(strings.NewReader(in), &p)
	if err != nil || !got {
		t.Fatalf("readFioStream: %v, %v", got, err)
	}
	if len(p.samples) != 2 || last.Jobs[0].Write.TotalIOs != 2 {
		t.Fatalf("samples %v, last %+v", p.samples, last)
	}
}
