package node

import (
	"context"

	"cairn/blocks"
	"cairn/policies"
	"cairn/volume"
)

// maxPieces bounds the pieces of one block under any valid policy
// (policies allow at most 16 replicas or 32 erasure-coded pieces).
const maxPieces = 32

// gcStore is the store the garbage collector deletes through. Blocks of
// every policy share the silo, so it deletes every piece a block may have
// (PieceKey 0..maxPieces-1), whatever redundancy stored it. Only Delete is
// used; the other methods go to the default pipeline.
type gcStore struct{ n *Node }

var _ blocks.Store = gcStore{}

func (g gcStore) Delete(ctx context.Context, addr blocks.Addr) error {
	for i := range maxPieces {
		k := blocks.PieceKey(addr, i)
		ok, err := g.n.silo.HasPiece(ctx, k)
		if err != nil {
			return err
		}
		if ok {
			if err := g.n.silo.DeletePiece(ctx, k); err != nil {
				return err
			}
		}
	}
	return nil
}

func (g gcStore) plain() blocks.Store {
	s, _ := g.n.redundantFor(g.n.defaultRedundancy(), policies.SpreadNone)
	return s
}

func (g gcStore) Get(ctx context.Context, addr blocks.Addr) ([]byte, error) {
	return g.plain().Get(ctx, addr)
}
func (g gcStore) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	return g.plain().Put(ctx, data)
}
func (g gcStore) Has(ctx context.Context, addr blocks.Addr) (bool, error) {
	return g.plain().Has(ctx, addr)
}
func (g gcStore) Sync(ctx context.Context) error { return g.n.silo.Sync(ctx) }

// Walk lists every block stored on this node (from piece headers).
func (g gcStore) Walk(ctx context.Context, fn func(blocks.Addr) error) error {
	w, _ := g.plain().(blocks.Walker)
	return w.Walk(ctx, fn)
}

// collect runs the volume layer's mark and sweep over every block on this node.
func (n *Node) collect(ctx context.Context) (volume.GCStats, error) {
	return n.catalog.CollectGarbage(ctx, gcStore{n}.Walk)
}
