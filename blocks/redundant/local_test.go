package redundant

import (
	"bytes"
	"testing"

	"cairn/blocks"
	"cairn/blocks/blockstest"
)

// localConfigs are layouts whose holders are blocks.Local: reads trust
// checksum-verified pieces without rehashing, and puts frame pieces in
// pooled buffers.
var localConfigs = []config{
	{name: "local-replicas1", replicas: 1, holders: 1, local: true},
	{name: "local-replicas3-on-3", replicas: 3, holders: 3, local: true},
	{name: "local-ec4+2-on-6", data: 4, parity: 2, holders: 6, local: true},
}

func TestLocalConformance(t *testing.T) {
	for _, cfg := range localConfigs {
		t.Run(cfg.name, func(t *testing.T) {
			blockstest.RunStore(t, func(t testing.TB) blocks.Store { return newCluster(t, cfg).s })
		})
	}
}

// TestLocalDamage checks that on local holders every damage a checksum can
// see (rot, garbage, a misfiled piece, a lost piece) is still caught and
// repaired by Get, and that a forged piece (payload changed, checksums
// fixed: only the hash can tell) is caught by Scrub, which always hashes.
func TestLocalDamage(t *testing.T) {
	for _, cfg := range localConfigs {
		if cfg.tolerates() == 0 {
			continue
		}
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			other, err := c.s.Put(ctx, blockstest.Random(999, 3000))
			if err != nil {
				t.Fatal(err)
			}
			for _, how := range []int{rot, lose, garbage, misfile} {
				data := blockstest.Random(uint64(how), 10000)
				addr, err := c.s.Put(ctx, data)
				if err != nil {
					t.Fatal(err)
				}
				orig := c.pieces(t, addr)
				c.damage(t, addr, 0, how, other)
				got, err := c.s.Get(ctx, addr)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("damage %d: Get = %d bytes, %v; want the block", how, len(got), err)
				}
				if p, err := c.getPiece(t, addr, 0); err != nil || !bytes.Equal(p, orig[0]) {
					t.Fatalf("damage %d: after Get piece 0 is %d bytes, %v; want it repaired", how, len(p), err)
				}
			}
			data := blockstest.Random(4242, 10000)
			addr, err := c.s.Put(ctx, data)
			if err != nil {
				t.Fatal(err)
			}
			orig := c.pieces(t, addr)
			c.damage(t, addr, 0, forge, other)
			repaired := 0
			if err := c.s.Scrub(ctx, func(a blocks.Addr, n int, err error) error {
				if err != nil {
					t.Errorf("Scrub: %v: %v", a, err)
				}
				repaired += n
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if repaired != 1 || !equalPieces(c.pieces(t, addr), orig) {
				t.Fatalf("forged piece: Scrub repaired %d pieces; want 1 and the originals back", repaired)
			}
		})
	}
}

// TestRemoteForgeAlwaysHashed checks that a forged replica on a holder that
// is not local is refused by a plain Get (it is hashed).
func TestRemoteForgeAlwaysHashed(t *testing.T) {
	c := newCluster(t, config{name: "remote", replicas: 2, holders: 2})
	ctx := t.Context()
	data := blockstest.Random(5, 5000)
	addr, err := c.s.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	c.damage(t, addr, 0, forge, blocks.Addr{})
	got, err := c.s.Get(ctx, addr)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %d bytes, %v; want the intact replica", len(got), err)
	}
}

// TestPutPartsPooled checks that PutParts equals Put of the concatenation,
// and that blocks framed in reused (pooled) buffers of every size read back
// intact, for each layout.
func TestPutPartsPooled(t *testing.T) {
	for _, cfg := range append(append([]config{}, configs...), localConfigs...) {
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			type put struct {
				addr blocks.Addr
				data []byte
			}
			var puts []put
			for i, n := range []int{1, 0, 4096, 100000, 3, 4096, 70000, 2, 5000} {
				data := blockstest.Random(uint64(i), n)
				head := min(i%3, n)
				addr, err := c.s.PutParts(ctx, data[:head], data[head:])
				if err != nil {
					t.Fatal(err)
				}
				if addr != blocks.Sum(data) {
					t.Fatalf("put %d: address %v, want the hash of head||body", i, addr)
				}
				puts = append(puts, put{addr, data})
			}
			for i, p := range puts {
				got, err := c.s.Get(ctx, p.addr)
				if err != nil || !bytes.Equal(got, p.data) {
					t.Fatalf("put %d: Get = %d bytes, %v; want %d bytes back", i, len(got), err, len(p.data))
				}
			}
		})
	}
}

func TestCopyRange(t *testing.T) {
	head, body := []byte("ab"), []byte("cdefg")
	for _, tc := range []struct {
		off, n int
		want   string
	}{
		{0, 3, "abc"},
		{1, 3, "bcd"},
		{2, 5, "cdefg"},
		{5, 4, "fg\x00\x00"},
		{7, 2, "\x00\x00"},
		{0, 9, "abcdefg\x00\x00"},
	} {
		dst := bytes.Repeat([]byte{0xff}, tc.n)
		copyRange(dst, tc.off, head, body)
		if string(dst) != tc.want {
			t.Errorf("copyRange(off %d, %d bytes) = %q, want %q", tc.off, tc.n, dst, tc.want)
		}
	}
}

// TestGetInto checks that GetInto returns the block, read into dst for a
// replica when dst is large enough, for every layout, also when the first
// piece is damaged (the next replica or a rebuild must not overwrite it).
func TestGetInto(t *testing.T) {
	for _, cfg := range append(append([]config{}, configs...), localConfigs...) {
		t.Run(cfg.name, func(t *testing.T) {
			c := newCluster(t, cfg)
			ctx := t.Context()
			for _, how := range []int{-1, rot, garbage, lose} {
				data := blockstest.Random(uint64(how+10), 4096)
				addr, err := c.s.Put(ctx, data)
				if err != nil {
					t.Fatal(err)
				}
				if how >= 0 {
					if cfg.tolerates() == 0 {
						continue
					}
					c.damage(t, addr, 0, how, blocks.Addr{})
				}
				dst := make([]byte, 0, 8192)
				got, err := c.s.GetInto(ctx, addr, dst)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("damage %d: GetInto = %d bytes, %v; want the block", how, len(got), err)
				}
				if how < 0 && cfg.replicas > 0 && &got[0] != &dst[:HeaderSize+1][HeaderSize] {
					t.Errorf("GetInto of a replica did not use dst")
				}
			}
		})
	}
}
