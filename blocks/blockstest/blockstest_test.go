package blockstest_test

import (
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
	"cairn/blocks/memory"
)

// The suites hold for the in-memory fake, so a failure elsewhere is the
// implementation's, not the suite's.
func TestMemoryHolder(t *testing.T) {
	blockstest.RunHolder(t, func(testing.TB) blocks.Holder { return memory.New(0) })
}

func TestMemoryJournal(t *testing.T) {
	blockstest.RunJournal(t, func(testing.TB) interface {
		blocks.Journal
		blocks.Holder
	} {
		return memory.New(0)
	})
}
