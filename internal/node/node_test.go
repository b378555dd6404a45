package node

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/internal/cairntest"
	"cairn/policies"
	"cairn/volume"
)

// openNode starts a node on dir with a free raft port (recorded at first
// start, reused at reopen) and closes it at the end of the test.
func openNode(t testing.TB, dir string) *Node {
	t.Helper()
	ctx := context.Background()
	addr := ""
	if _, err := os.Stat(filepath.Join(dir, identityFile)); err != nil {
		addr = cairntest.FreePort(t)
	}
	n, err := Open(ctx, Config{DataDir: dir, RaftAddress: addr, Shards: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(context.Background()) })
	return n
}

func mustPolicy(t testing.TB, text string) policies.Policy {
	t.Helper()
	p, err := policies.Parse("test.toml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// writeFlush writes p at off through a freshly opened volume, flushes and
// closes it.
func writeFlush(t testing.TB, n *Node, name string, writes map[int64][]byte) {
	t.Helper()
	ctx := context.Background()
	v, err := n.Catalog().Open(ctx, name, volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for off, p := range writes {
		if err := v.WriteAt(ctx, p, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestPoliciesAtWork: the numbers of `volume inspect` show lz4 and dedup
// at work.
func TestPoliciesAtWork(t *testing.T) {
	ctx := context.Background()
	n := openNode(t, t.TempDir())
	const mib = 1 << 20

	// lz4: compressible data is stored in less space.
	if _, err := n.Catalog().Create(ctx, "lz", 64*mib, mustPolicy(t, "compression = \"lz4\"\n")); err != nil {
		t.Fatal(err)
	}
	line := []byte("Cairn pools the disks of many machines into one store. ")
	text := bytes.Repeat(line, 16*mib/len(line)+1)[:16*mib]
	writeFlush(t, n, "lz", map[int64][]byte{0: text})

	// dedup: the same 16 MiB at two offsets is stored once.
	if _, err := n.Catalog().Create(ctx, "dd", 64*mib, mustPolicy(t, "dedup = true\n")); err != nil {
		t.Fatal(err)
	}
	same := randBytes(1, 16*mib)
	writeFlush(t, n, "dd", map[int64][]byte{0: same, 32 * mib: same})

	// A control with neither: random data, stored at full size.
	if _, err := n.Catalog().Create(ctx, "plain", 64*mib, policies.Default()); err != nil {
		t.Fatal(err)
	}
	writeFlush(t, n, "plain", map[int64][]byte{0: randBytes(2, 16*mib)})

	if _, err := n.CollectGarbage(ctx); err != nil {
		t.Fatal(err)
	}
	inspect := func(name string) volume.Info {
		info, err := n.Catalog().Inspect(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: written %d stored %d", name, info.Written, info.Stored)
		return info
	}
	if lz := inspect("lz"); lz.Written != 16*mib || lz.Stored > lz.Written/4 {
		t.Errorf("lz4 volume: written %d, stored %d: want 16 MiB written and under a quarter stored", lz.Written, lz.Stored)
	}
	if dd := inspect("dd"); dd.Written != 32*mib || dd.Stored > 17*mib {
		t.Errorf("dedup volume: written %d, stored %d: want 32 MiB written, about 16 MiB stored", dd.Written, dd.Stored)
	}
	if pl := inspect("plain"); pl.Stored < 16*mib {
		t.Errorf("plain volume: stored %d < written 16 MiB: the measurement is off", pl.Stored)
	}
}

// containsInFiles reports whether pattern occurs in any file under dir.
func containsInFiles(t *testing.T, dir string, pattern []byte) string {
	t.Helper()
	found := ""
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Type()&fs.ModeSocket != 0 {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, pattern) {
			found = path
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestEncryptionLeavesNoPlaintext: with encryption on, a known plaintext
// pattern written to a volume appears in no file under the data
// directory; without it (the control) the same search finds it.
func TestEncryptionLeavesNoPlaintext(t *testing.T) {
	ctx := context.Background()
	// Each chunk differs (a counter) so that neither dedup nor lz4 hides the pattern.
	var data []byte
	for i := 0; len(data) < 4<<20; i++ {
		data = append(data, []byte("THE-SECRET-PATTERN-OF-CAIRN-")...)
		data = append(data, byte(i), byte(i>>8), byte(i>>16))
	}
	pattern := []byte("THE-SECRET-PATTERN-OF-CAIRN-")
	for _, tc := range []struct {
		policy  string
		visible bool
	}{
		{"", true},
		{"[encryption]\ncipher = \"aes-256-gcm\"\n", false},
		{"compression = \"lz4\"\ndedup = true\n[encryption]\ncipher = \"xchacha20-poly1305\"\n", false},
	} {
		dir := t.TempDir()
		n := openNode(t, dir)
		if _, err := n.Catalog().Create(ctx, "v", 64<<20, mustPolicy(t, tc.policy)); err != nil {
			t.Fatal(err)
		}
		writeFlush(t, n, "v", map[int64][]byte{4096: data})
		if err := n.Close(ctx); err != nil {
			t.Fatal(err)
		}
		where := containsInFiles(t, dir, pattern)
		if tc.visible && where == "" {
			t.Errorf("policy %q: the plaintext is not found even without encryption: the search is broken", tc.policy)
		}
		if !tc.visible && where != "" {
			t.Errorf("policy %q: plaintext found in %s", tc.policy, where)
		}
		// The data reads back after a restart.
		n = openNode(t, dir)
		v, err := n.Catalog().Open(ctx, "v", volume.OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		if err := v.ReadAt(ctx, got, 4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("policy %q: data differs after restart", tc.policy)
		}
		v.Close(ctx)
	}
}

// TestCorruptSiloNeverServesWrongData: bytes flipped anywhere in the silo's
// files make reads fail with a corruption error (one copy) or get repaired
// from redundancy (replicas, erasure coding); no read returns wrong data.
func TestCorruptSiloNeverServesWrongData(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, policy string
		repairs      bool
	}{
		{"single", "", false},
		{"replicated", "[redundancy]\nreplicas = 3\n[placement]\nspread = \"none\"\n", true},
		{"erasure", "[redundancy]\ndata = 4\nparity = 2\n[placement]\nspread = \"none\"\n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			n := openNode(t, dir)
			if _, err := n.Catalog().Create(ctx, "v", 16<<20, mustPolicy(t, tc.policy)); err != nil {
				t.Fatal(err)
			}
			data := randBytes(9, 8<<20)
			writeFlush(t, n, "v", map[int64][]byte{0: data})
			if err := n.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// Flip 20 bytes in the silo's segment files, away from the
			// first 64 KiB of each file (headers are tested in the silo).
			r := rand.New(rand.NewPCG(5, 6))
			var segs []string
			filepath.WalkDir(filepath.Join(dir, "silo"), func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					if st, _ := d.Info(); st != nil && st.Size() > 1<<20 {
						segs = append(segs, p)
					}
				}
				return nil
			})
			if len(segs) == 0 {
				t.Fatal("no silo segment files found")
			}
			for i := 0; i < 20; i++ {
				p := segs[r.IntN(len(segs))]
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				st, _ := f.Stat()
				off := 64<<10 + r.Int64N(st.Size()-64<<10)
				b := []byte{0}
				f.ReadAt(b, off)
				b[0] ^= 0x5a
				f.WriteAt(b, off)
				f.Close()
			}
			n = openNode(t, dir)
			v, err := n.Catalog().Open(ctx, "v", volume.OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close(ctx)
			bad, failed := 0, 0
			buf := make([]byte, 4096)
			for off := 0; off < len(data); off += len(buf) {
				err := v.ReadAt(ctx, buf, int64(off))
				switch {
				case err != nil:
					if !errors.Is(err, blocks.ErrCorrupt) && !errors.Is(err, blocks.ErrNotFound) {
						t.Errorf("read at %d: %v, want a corruption error", off, err)
					}
					failed++
				case !bytes.Equal(buf, data[off:off+len(buf)]):
					bad++
				}
			}
			t.Logf("%d of %d reads failed cleanly", failed, len(data)/len(buf))
			if bad > 0 {
				t.Fatalf("%d reads returned wrong data", bad)
			}
			if tc.repairs && failed > 0 {
				t.Errorf("%d reads failed although the policy keeps redundancy", failed)
			}
		})
	}
}

// TestRaftStaysOffTheWritePath: 10,000 write+Flush pairs on a real node
// make only lease and checkpoint proposals.
func TestRaftStaysOffTheWritePath(t *testing.T) {
	ctx := context.Background()
	n := openNode(t, t.TempDir())
	if _, err := n.Catalog().Create(ctx, "v", 1<<30, policies.Default()); err != nil {
		t.Fatal(err)
	}
	v, err := n.Catalog().Open(ctx, "v", volume.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := n.Consensus().Stats().Proposals
	start := time.Now()
	buf := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	const pairs = 10000
	for i := 0; i < pairs; i++ {
		buf[0], buf[1] = byte(i), byte(i>>8)
		if err := v.WriteAt(ctx, buf, r.Int64N(1<<30/4096)*4096); err != nil {
			t.Fatal(err)
		}
		if err := v.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	proposals := n.Consensus().Stats().Proposals - before
	// Lease renewals (every 5 s) and checkpoints (every 30 s, or every
	// 4,096 journal records) are the only proposals allowed.
	allowed := uint64(elapsed/(5*time.Second)) + uint64(elapsed/(30*time.Second)) + pairs/4096 + 4
	t.Logf("%d write+flush pairs in %s: %d proposals (allowed %d)", pairs, elapsed.Round(time.Millisecond), proposals, allowed)
	if proposals > allowed {
		t.Fatalf("%d proposals during %d write+flush pairs: raft is on the write path", proposals, pairs)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	_ = strings.TrimSpace
}
