package node

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"cairn/nbd"
)

// TestExportReadsVectored: a node's export hands the NBD server the
// volume's vectored reads (nbd.VectorReader), and they return what was
// written, across chunks and holes.
func TestExportReadsVectored(t *testing.T) {
	ctx := context.Background()
	n := openNode(t, t.TempDir())
	if _, err := n.Catalog().Create(ctx, "v", 64<<20, mustPolicy(t, "block_size = \"4KiB\"\n[redundancy]\nreplicas = 1\n")); err != nil {
		t.Fatal(err)
	}
	dev, err := n.Exports().Open(ctx, "v")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close(ctx)
	vr, ok := dev.(nbd.VectorReader)
	if !ok {
		t.Fatalf("export %T is not an nbd.VectorReader", dev)
	}
	data := randBytes(5, 3<<20)
	if err := dev.WriteAt(ctx, data, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := append(make([]byte, 1<<20), data...) // a hole, then the data
	var got []byte
	if err := vr.ReadVec(ctx, 0, len(want), func(bufs [][]byte) error {
		for _, b := range bufs {
			got = append(got, b...)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("ReadVec returned %d bytes, equal %v", len(got), bytes.Equal(got, want))
	}
}

// TestReadVecFromViews: vectored reads of flushed chunks come from the
// silo's mapped segments in place (blocks.Viewer), mixed with dirty
// chunks, holes and unaligned ends; compressed chunks and an encrypted
// volume decline the views and read the ordinary way. Every range returns
// what was written.
func TestReadVecFromViews(t *testing.T) {
	ctx := context.Background()
	n := openNode(t, t.TempDir())
	for k, pol := range []string{
		"block_size = \"4KiB\"\n[redundancy]\nreplicas = 1\n",
		"block_size = \"4KiB\"\ncompression = \"lz4\"\n[redundancy]\nreplicas = 1\n",
		"block_size = \"4KiB\"\n[redundancy]\nreplicas = 1\n[encryption]\ncipher = \"aes-256-gcm\"\n",
	} {
		name := fmt.Sprintf("v%d", k)
		if _, err := n.Catalog().Create(ctx, name, 16<<20, mustPolicy(t, pol)); err != nil {
			t.Fatal(err)
		}
		dev, err := n.Exports().Open(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		vr := dev.(nbd.VectorReader)
		model := make([]byte, 16<<20)
		write := func(p []byte, off int) {
			t.Helper()
			if err := dev.WriteAt(ctx, p, int64(off)); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], p)
		}
		write(randBytes(11, 6<<20), 1<<20)
		write(bytes.Repeat([]byte("compressible "), 100000), 4<<20) // lz4 compresses it
		if err := dev.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		write(randBytes(12, 5000), 2<<20+100) // dirty, partial chunks
		for _, r := range [][2]int{{0, 8 << 20}, {1<<20 + 1, 1 << 20}, {2<<20 - 4095, 3*4096 + 7}, {7<<20 - 512, 4096}, {3 << 20, 128 << 10}} {
			var got []byte
			if err := vr.ReadVec(ctx, int64(r[0]), r[1], func(bufs [][]byte) error {
				for _, b := range bufs {
					got = append(got, b...)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, model[r[0]:r[0]+r[1]]) {
				t.Fatalf("%s: ReadVec [%d, +%d) differs from the writes", name, r[0], r[1])
			}
		}
		if err := dev.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
