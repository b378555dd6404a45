package node

import (
	"bytes"
	"context"
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
