package redundant

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// nodeHolder is a holder standing for one node of a cluster: any replica
// it keeps counts for the block, whatever its index (ReplicaFinder).
type nodeHolder struct{ *flaky }

func (h nodeHolder) FindReplica(ctx context.Context, addr blocks.Addr, n, i int) ([]byte, int, error) {
	if p, err := h.GetPiece(ctx, blocks.PieceKey(addr, i)); err == nil {
		return p, i, nil
	}
	for j := range n {
		if j == i {
			continue
		}
		if p, err := h.GetPiece(ctx, blocks.PieceKey(addr, j)); err == nil {
			return p, j, nil
		}
	}
	return nil, 0, fmt.Errorf("test: no replica of %v: %w", addr, blocks.ErrNotFound)
}

// TestRanksMoveButReplicasStay: a block with 3 replicas on holders a, b,
// c loses a for good; placement now names b, c, d, so b and c each sit at
// a rank whose key they lack. Holders that find their node's other
// replicas (ReplicaFinder) read and repair as a set: the reads succeed
// with nothing written, and a full Repair writes one piece, on d. Holders
// that do not (a lone silo) look for each rank's key only.
func TestRanksMoveButReplicasStay(t *testing.T) {
	for _, finder := range []bool{true, false} {
		t.Run(fmt.Sprintf("finder=%v", finder), func(t *testing.T) {
			ctx := t.Context()
			mems := make([]*flaky, 4)
			hs := make([]blocks.Holder, 4)
			for i := range mems {
				mems[i] = &flaky{Store: memory.New(0)}
				hs[i] = mems[i]
				if finder {
					hs[i] = nodeHolder{mems[i]}
				}
			}
			placed := hs[:3]
			s := storeOver(t, Options{Replicas: 3}, &placed, hs)
			data, addr := putRandom(t, s, 3, 5000)
			placed = hs[1:4] // a is gone: b, c move up a rank, d is new
			if !finder {
				// By index alone, no rank's key is where it is looked for
				// (a cluster's slots look on the other holders too).
				if _, err := s.Get(ctx, addr); !errors.Is(err, blocks.ErrNotFound) {
					t.Fatalf("Get by index after the ranks moved: %v, want not found", err)
				}
				return
			}
			for range 2 {
				got, err := s.Get(ctx, addr)
				if err != nil || string(got) != string(data) {
					t.Fatalf("Get after the ranks moved: %v", err)
				}
			}
			n, err := s.Repair(DeferRepairSyncs(ctx), addr)
			if err != nil || n != 1 {
				t.Fatalf("Repair rewrote %d pieces (%v), want 1: d's", n, err)
			}
			// d has its rank's piece; b and c keep theirs, and got no
			// second copy under their new rank's key.
			for r, m := range mems[1:] {
				ok, _ := m.HasPiece(ctx, blocks.PieceKey(addr, r))
				if ok != (r == 2) {
					t.Errorf("holder at rank %d has the key of its rank: %v, want %v", r, ok, r == 2)
				}
			}
			if n, err := s.Repair(ctx, addr); err != nil || n != 0 {
				t.Fatalf("a second Repair rewrote %d pieces (%v), want 0", n, err)
			}
			// The copies the finder found are verified like any other: a
			// damaged one is replaced under the rank's key.
			{
				k := blocks.PieceKey(addr, 1)
				p, _ := mems[1].Store.GetPiece(ctx, k)
				bad := append([]byte(nil), p...)
				bad[len(bad)-1] ^= 1
				_ = mems[1].Store.DeletePiece(ctx, k)
				_ = mems[1].Store.PutPiece(ctx, k, bad)
				if n, err := s.Repair(ctx, addr); err != nil || n != 1 {
					t.Fatalf("Repair with b's copy damaged rewrote %d pieces (%v), want 1", n, err)
				}
				if ok, _ := mems[1].HasPiece(ctx, blocks.PieceKey(addr, 0)); !ok {
					t.Error("b's damaged copy was not replaced under its rank's key")
				}
				if ok, _ := mems[1].HasPiece(ctx, k); ok {
					t.Error("b's damaged copy is still there")
				}
			}
		})
	}
}

// TestRanksMoveButShardsStay: a block of 2+2 shards on holders a, b, c,
// d loses a for good; placement now names b, c, d, e. b, c and d keep
// their shards (1, 2, 3) at ranks 0, 1, 2: the read rebuilds the block
// from them and writes one piece, a's shard 0, on e; nothing else moves,
// and a full Repair then finds nothing to do.
func TestRanksMoveButShardsStay(t *testing.T) {
	ctx := t.Context()
	mems := make([]*flaky, 5)
	hs := make([]blocks.Holder, 5)
	for i := range mems {
		mems[i] = &flaky{Store: memory.New(0)}
		hs[i] = nodeHolder{mems[i]}
	}
	placed := hs[:4]
	s := storeOver(t, Options{Data: 2, Parity: 2}, &placed, hs)
	data, addr := putRandom(t, s, 5, 7000)
	placed = hs[1:5]
	for range 2 {
		got, err := s.Get(ctx, addr)
		if err != nil || string(got) != string(data) {
			t.Fatalf("Get after the ranks moved: %v", err)
		}
	}
	for h, want := range map[int]int{1: 1, 2: 2, 3: 3, 4: 0} {
		var keeps []int
		for j := range 4 {
			if ok, _ := mems[h].HasPiece(ctx, blocks.PieceKey(addr, j)); ok {
				keeps = append(keeps, j)
			}
		}
		if len(keeps) != 1 || keeps[0] != want {
			t.Errorf("holder %d keeps shards %v, want [%d]", h, keeps, want)
		}
	}
	if n, err := s.Repair(ctx, addr); err != nil || n != 0 {
		t.Fatalf("Repair after the read's repair rewrote %d pieces (%v), want 0", n, err)
	}
}

// awayHolder is a cluster node's slot whose node cannot be reached: its
// FindReplica fails as unavailable, and its copies are on fallbacks
// (GetFallback). GetPiece would ask the node again; it counts the calls.
type awayHolder struct {
	fallback *flaky
	gets     int
}

func (h *awayHolder) PutPiece(context.Context, blocks.Addr, []byte) error { return errDown }
func (h *awayHolder) HasPiece(context.Context, blocks.Addr) (bool, error) { return false, errDown }
func (h *awayHolder) DeletePiece(context.Context, blocks.Addr) error      { return errDown }
func (h *awayHolder) Sync(context.Context) error                          { return errDown }
func (h *awayHolder) GetPiece(context.Context, blocks.Addr) ([]byte, error) {
	h.gets++
	return nil, fmt.Errorf("test: node away: %w", blocks.ErrUnavailable)
}
func (h *awayHolder) FindReplica(context.Context, blocks.Addr, int, int) ([]byte, int, error) {
	return nil, 0, fmt.Errorf("test: node away: %w", blocks.ErrUnavailable)
}
func (h *awayHolder) GetFallback(ctx context.Context, key blocks.Addr) ([]byte, error) {
	return h.fallback.GetPiece(ctx, key)
}

// TestUnreachableNodeAskedOnce: a read whose FindReplica found a node
// unreachable takes the piece from the node's fallbacks (GetFallback)
// without asking the node a second time through GetPiece.
func TestUnreachableNodeAskedOnce(t *testing.T) {
	ctx := t.Context()
	a := &flaky{Store: memory.New(0)}
	away := &awayHolder{fallback: &flaky{Store: memory.New(0)}}
	placed := []blocks.Holder{nodeHolder{a}, nodeHolder{a}}
	s := storeOver(t, Options{Replicas: 2}, &placed, placed)
	data, addr := putRandom(t, s, 4, 3000)
	// The piece of rank 0 sits on the away node's fallback; rank 1's
	// holder has nothing.
	p, _ := a.Store.GetPiece(ctx, blocks.PieceKey(addr, 0))
	_ = away.fallback.PutPiece(ctx, blocks.PieceKey(addr, 0), p)
	placed = []blocks.Holder{away, nodeHolder{&flaky{Store: memory.New(0)}}}
	got, err := s.Get(ctx, addr)
	if err != nil || string(got) != string(data) {
		t.Fatalf("Get with the first holder's node away: %v", err)
	}
	if away.gets != 0 {
		t.Fatalf("the unreachable node was asked %d more times through GetPiece, want 0", away.gets)
	}
}
