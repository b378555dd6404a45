package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/consensus"
	"cairn/internal/cairntest"
)

// TestStoragelessNodeForwards: 6 storage nodes and 1 storage-less node
// (`cairn node --storage=false`). Raft shards live on 5 of the 6 storage
// nodes each, so every node lacks some shards, and the storage-less node
// hosts none and holds no pieces: every mutable block it reads or changes
// (catalogue, volume root, lease) goes through forwarding to a node that
// hosts the block's shard. A replicas = 3 volume created and written
// through the storage-less node with nbdcopy reads back identical through
// a storage node's export.
func TestStoragelessNodeForwards(t *testing.T) {
	cairntest.NeedTool(t, "nbdcopy")
	const storage = 6
	ctx := context.Background()
	first := cairntest.NewNode(t, "127.0.0.2")
	first.Start(ctx)
	if first.Secret == "" {
		t.Fatalf("the first node printed no cluster secret:\n%s", first.Log())
	}
	join := []string{"--join", first.Listen, "--secret", first.Secret}
	nodes := []*cairntest.Server{first}
	for i := 1; i < storage; i++ {
		s := cairntest.NewNode(t, fmt.Sprintf("127.0.0.%d", i+2), join...)
		s.Start(ctx)
		nodes = append(nodes, s)
	}
	front := cairntest.NewNode(t, fmt.Sprintf("127.0.0.%d", storage+2), append(join, "--storage=false")...)
	front.Start(ctx)
	all := append(append([]*cairntest.Server(nil), nodes...), front)

	// A loaded 2-core machine has taken more than two minutes to elect
	// every shard of seven processes; the time it took is logged.
	took := waitFor(t, 4*time.Minute, "every node alive and every shard led with 5 replicas", func() bool {
		for _, s := range all {
			if alive(t, s) != len(all) {
				return false
			}
		}
		led := map[uint64]bool{}
		shards := 0
		for _, s := range nodes {
			st := status(t, s)
			shards = len(st.Shards)
			for _, sh := range st.Shards {
				if sh.Leader != 0 && sh.Replicas >= 5 {
					led[sh.ID] = true
				}
			}
		}
		return shards > 0 && len(led) == shards
	})
	t.Logf("every shard led with 5 replicas after %s", took)
	st := status(t, front)
	for _, sh := range st.Shards {
		if sh.Replicas != 0 {
			t.Fatalf("the storage-less node runs a replica of shard %d: %+v", sh.ID, sh)
		}
	}
	for _, nd := range st.Nodes {
		if nd.Storage != (nd.ID != st.Node) {
			t.Fatalf("node %s advertises storage=%v", nd.ID, nd.Storage)
		}
	}

	if out, err := front.Cairn("volume", "create", "fw", "--size", "64MiB", "--policy", writePolicy(t, "[redundancy]\nreplicas = 3\n")); err != nil {
		t.Fatal(err, out)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.img")
	makeImage(t, in, 64<<20, 5)
	Run(t, 3*time.Minute, "nbdcopy", "--flush", in, front.URI("fw"))
	if p := status(t, front).Storage.Pieces; p != 0 {
		t.Fatalf("the storage-less node holds %d pieces", p)
	}

	// Read back through a storage node that does not host the shard of
	// the volume catalogue (so its lookups are forwarded too), once the
	// storage-less node has let the volume go (its export detaches when
	// the client leaves).
	reader, hosts := nodes[storage-1], "may host"
	catalogShard := consensus.ShardOf(blocks.NameID("cairn/catalog"), len(st.Shards))
	for _, s := range nodes {
		for _, sh := range status(t, s).Shards {
			if sh.ID == catalogShard && sh.Replicas == 0 {
				reader, hosts = s, "does not host"
			}
		}
	}
	t.Logf("reading back through %s, which %s the catalogue's shard %d", reader.Listen, hosts, catalogShard)
	out := filepath.Join(dir, "out.img")
	var lastErr error
	waitFor(t, 2*time.Minute, "a storage node's export to serve the volume", func() bool {
		_, lastErr = RunErr(t, 3*time.Minute, "nbdcopy", reader.URI("fw"), out)
		return lastErr == nil
	})
	if x, y := fileSHA(t, in), fileSHA(t, out); x != y {
		t.Fatalf("written through the storage-less node, read through %s: sha256 %s vs %s", reader.Listen, x, y)
	}
	if names, err := front.Cairn("volume", "list"); err != nil || !containsLine(names, "fw") {
		t.Fatalf("volume list through the storage-less node: %v\n%s", err, names)
	}
}

// containsLine reports whether some line of out starts with word.
func containsLine(out, word string) bool {
	for _, l := range cairntest.Lines(out) {
		if len(l) >= len(word) && l[:len(word)] == word {
			return true
		}
	}
	return false
}
