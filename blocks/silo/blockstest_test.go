package silo

import (
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
)

// The shared conformance suites, beside this package's own contract tests.
func TestBlockstestHolder(t *testing.T) {
	blockstest.RunHolder(t, func(t testing.TB) blocks.Holder {
		return openT(t, t.TempDir(), Options{SegmentSize: 1 << 20})
	})
}

func TestBlockstestJournal(t *testing.T) {
	blockstest.RunJournal(t, func(t testing.TB) blockstest.JournalHolder {
		return openT(t, t.TempDir(), Options{SegmentSize: 1 << 20})
	})
}
