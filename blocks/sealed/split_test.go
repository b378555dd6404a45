package sealed

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/blocks/redundant"
	"cairn/blocks/silo"
	"cairn/policies"
)

// splitStack is a sealed store over one replica on holder h.
func splitStack(t *testing.T, h blocks.Holder, o Options) *Store {
	t.Helper()
	r, err := redundant.New(redundant.Options{
		Replicas: 1,
		Holders:  func(blocks.Addr, int) []blocks.Holder { return []blocks.Holder{h} },
		All:      func() []blocks.Holder { return []blocks.Holder{h} },
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(r, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestGetSplit: a plain block read through the whole stack lands in the
// caller's buffer (from the write buffer and from the mapped segment),
// equal to what was put; every case the fast path does not take reports
// false, and Get still reads those blocks; a corrupt copy is never
// returned by it.
func TestGetSplit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	sl, err := silo.Open(ctx, dir, silo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	rnd := rand.New(rand.NewPCG(9, 9))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	split := func(s *Store, a blocks.Addr, n int) ([]byte, bool) {
		tail := make([]byte, n)
		return tail, s.GetSplit(ctx, a, nil, tail, make([]byte, blocks.SplitScratch))
	}

	plain := splitStack(t, sl, Options{})
	data := random(4096)
	a, err := plain.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, synced := range []bool{false, true} {
		if synced {
			if err := sl.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if got, ok := split(plain, a, 4096); !ok || !bytes.Equal(got, data) {
			t.Fatalf("synced %v: GetSplit %v, equal %v", synced, ok, bytes.Equal(got, data))
		}
	}
	if _, ok := split(plain, a, 4000); ok {
		t.Fatal("GetSplit into a buffer of another length reported true")
	}

	lz := splitStack(t, sl, Options{Compression: policies.CompressionLZ4})
	text := bytes.Repeat([]byte("compressible "), 400)[:4096]
	b, err := lz.Put(ctx, text)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := split(lz, b, 4096); ok {
		t.Fatal("GetSplit of a compressed block reported true")
	}
	enc := splitStack(t, sl, Options{Cipher: policies.CipherAES256, Key: key(3)})
	c, err := enc.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := split(enc, c, 4096); ok {
		t.Fatal("GetSplit of an encrypted block reported true")
	}
	mem := splitStack(t, memory.New(0), Options{})
	d, err := mem.Put(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := split(mem, d, 4096); ok {
		t.Fatal("GetSplit from a holder that cannot split reported true")
	}
	for _, x := range []struct {
		s    *Store
		a    blocks.Addr
		want []byte
	}{{lz, b, text}, {enc, c, data}, {mem, d, data}} {
		if got, err := x.s.Get(ctx, x.a); err != nil || !bytes.Equal(got, x.want) {
			t.Fatalf("Get after GetSplit declined: %v", err)
		}
	}

	// Flip one byte of the stored block in its segment file: GetSplit
	// declines, and Get reports the corruption.
	if err := sl.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	flipped := false
	for _, name := range segs {
		raw, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(raw, data[:64]); i >= 0 {
			f, err := os.OpenFile(name, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.WriteAt([]byte{raw[i+100] ^ 0xff}, int64(i+100))
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			flipped = true
			break
		}
	}
	if !flipped {
		t.Fatal("the block's bytes are in no segment file")
	}
	if got, ok := split(plain, a, 4096); ok {
		t.Fatalf("GetSplit of a corrupt block reported true (equal to the data: %v)", bytes.Equal(got, data))
	}
	if _, err := plain.Get(ctx, a); !errors.Is(err, blocks.ErrCorrupt) {
		t.Fatalf("Get of the corrupt block: %v, want ErrCorrupt", err)
	}
}
