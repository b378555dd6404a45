package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSettleWaitsForEveryExport: fio's probe connection detaches at once;
// settle must keep waiting until the job's connection has detached too
// (or failed to close), not return at the first detach after before.
func TestSettleWaitsForEveryExport(t *testing.T) {
	log := filepath.Join(t.TempDir(), "cairn.log")
	write := func(lines ...string) {
		t.Helper()
		f, err := os.OpenFile(log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if _, err := f.WriteString("level=INFO msg=\"" + l + "\" export=default\n"); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
	s := &server{name: "cairn", log: log, done: make(chan struct{})}
	write(attachLine, detachLine) // an earlier run
	_, before := attachments(s)
	// This run: the probe comes and goes, the job's connection stays.
	write(attachLine, detachLine, attachLine)
	settled := make(chan struct{})
	go func() {
		settle(s, before, 10*time.Second)
		close(settled)
	}()
	select {
	case <-settled:
		t.Fatal("settle returned while the job's export was still attached")
	case <-time.After(300 * time.Millisecond):
	}
	write(detachFailLine) // the job's close fails: nothing more will come
	select {
	case <-settled:
	case <-time.After(5 * time.Second):
		t.Fatal("settle still waiting after every export was closed")
	}
	if a, d := attachments(s); a != 3 || d != 3 {
		t.Fatalf("attachments = %d, %d; want 3, 3", a, d)
	}
}
