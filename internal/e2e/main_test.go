package e2e

import (
	"os"
	"testing"

	"cairn/internal/cairntest"
)

// TestMain removes the cairn binary the tests built once they are done.
func TestMain(m *testing.M) {
	code := m.Run()
	cairntest.RemoveBinary()
	os.Exit(code)
}
