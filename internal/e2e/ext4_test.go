package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cairn/internal/cairntest"
)

// attachment is a Cairn export seen as a block device: nbdfuse exposes it
// as a file, losetup makes that file a loop device.
type attachment struct {
	t     *testing.T
	fuse  *exec.Cmd
	dir   string
	loop  string
	mount string
}

// attach connects uri through nbdfuse and a loop device. The kernel here
// may have no nbd driver, so this is how a test gets a real block device.
func attach(t *testing.T, uri string) *attachment {
	t.Helper()
	cairntest.NeedRoot(t)
	cairntest.NeedTool(t, "nbdfuse")
	cairntest.NeedTool(t, "losetup")
	a := &attachment{t: t, dir: t.TempDir()}
	a.fuse = exec.Command("nbdfuse", a.dir, uri)
	a.fuse.Stdout, a.fuse.Stderr = os.Stderr, os.Stderr
	if err := a.fuse.Start(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(a.dir, "nbd")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, err := os.Stat(file); err == nil && st.Size() > 0 {
			break
		}
		if time.Now().After(deadline) {
			a.fuse.Process.Kill()
			a.fuse.Wait()
			t.Fatalf("nbdfuse did not expose %s within 30s", file)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, err := exec.Command("losetup", "-f", "--show", "--direct-io=off", file).CombinedOutput()
	if err != nil {
		a.detachFuse()
		t.Fatalf("losetup: %v: %s", err, out)
	}
	a.loop = strings.TrimSpace(string(out))
	t.Cleanup(a.detach)
	return a
}

func (a *attachment) mountAt() string {
	a.t.Helper()
	a.mount = a.t.TempDir()
	Run(a.t, time.Minute, "mount", a.loop, a.mount)
	return a.mount
}

func (a *attachment) umount() {
	if a.mount != "" {
		Run(a.t, time.Minute, "umount", a.mount)
		a.mount = ""
	}
}

func (a *attachment) detachFuse() {
	if a.fuse == nil {
		return
	}
	_ = exec.Command("fusermount3", "-u", a.dir).Run()
	done := make(chan struct{})
	go func() { a.fuse.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		a.fuse.Process.Kill()
		<-done
	}
	a.fuse = nil
}

// detach undoes attach: umount, losetup -d, unmount the FUSE file.
func (a *attachment) detach() {
	if a.mount != "" {
		_ = exec.Command("umount", a.mount).Run()
		a.mount = ""
	}
	if a.loop != "" {
		_ = exec.Command("losetup", "-d", a.loop).Run()
		a.loop = ""
	}
	a.detachFuse()
}

// writeTree writes a deterministic tree of files and returns their hashes.
func writeTree(t *testing.T, root string, seed uint64) map[string]string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	sums := map[string]string{}
	for d := 0; d < 8; d++ {
		dir := filepath.Join(root, fmt.Sprintf("dir%d", d), "sub")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < 12; f++ {
			n := r.IntN(300 << 10)
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			p := filepath.Join(dir, fmt.Sprintf("file%02d.bin", f))
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(root, p)
			sums[rel] = fmt.Sprintf("%x", sha256.Sum256(data))
		}
	}
	return sums
}

func checkTree(t *testing.T, root string, sums map[string]string) {
	t.Helper()
	for rel, want := range sums {
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(data)); got != want {
			t.Errorf("%s: sha256 %s, want %s", rel, got, want)
		}
	}
}

// TestExt4OnCairnSurvivesRestart: mkfs.ext4 on a Cairn disk, a tree of
// files, umount, e2fsck -fn clean; restart cairn; remount; the tree reads
// back exactly and fsck is still clean.
func TestExt4OnCairnSurvivesRestart(t *testing.T) {
	cairntest.NeedTool(t, "mkfs.ext4")
	cairntest.NeedTool(t, "e2fsck")
	ctx := context.Background()
	s := cairntest.NewServer(t, "--size", "512MiB")
	s.Start(ctx)

	a := attach(t, s.URI("default"))
	Run(t, 5*time.Minute, "mkfs.ext4", "-q", "-F", a.loop)
	mnt := a.mountAt()
	sums := writeTree(t, mnt, 42)
	a.umount()
	Run(t, 5*time.Minute, "e2fsck", "-fn", a.loop)
	a.detach()

	s.Stop()
	s.Start(ctx)

	a = attach(t, s.URI("default"))
	Run(t, 5*time.Minute, "e2fsck", "-fn", a.loop)
	mnt = a.mountAt()
	checkTree(t, mnt, sums)
	a.umount()
	a.detach()
}
