// Package e2e holds Cairn's end-to-end tests: real `cairn` processes
// driven by real clients nobody here wrote (nbdinfo, nbdcopy, nbdsh, fio,
// nbdfuse with a loop device, mkfs.ext4, e2fsck), killed with SIGKILL and
// restarted. The tests are in the _test.go files; this file only holds
// their shared helpers.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Run runs a program with a deadline and returns its combined output; a
// failure fails the test with the output.
func Run(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(t, timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// RunErr is Run returning the error instead of failing.
func RunErr(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	// nbdsh and libnbd's Python module need Debian's python3, not another
	// one that may come first on PATH.
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/usr/sbin:/bin:/sbin:"+os.Getenv("PATH"))
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", timeout, err)
	}
	return b.String(), err
}
