package node

import (
	"context"

	"cairn/blocks"
	"cairn/internal/throttle"
)

var _ blocks.PieceViewer = (*localSlot)(nil)

// ViewPieces implements blocks.PieceViewer: the silo's views, for client
// reads (a background read takes the slot's way, GetPiece, which pays the
// repair throttle and looks at fallback holders).
func (s *localSlot) ViewPieces(ctx context.Context, keys []blocks.Addr, views [][]byte) func() {
	if throttle.IsBackground(ctx) {
		return blocks.NoRelease
	}
	s.c.limiter().Note()
	return s.c.n.silo.ViewPieces(ctx, keys, views)
}

var _ blocks.PieceSplitGetter = (*localSlot)(nil)

// GetPieceSplit implements blocks.PieceSplitGetter: the silo's, for client
// reads, so that a cluster volume's chunk read copies the payload once,
// straight from the silo into the reader's buffer, as a one-node volume's
// does (without it the redundancy layer fell back to GetPieceInto, which
// copies the piece into a scratch buffer and then again into the
// reader's). A background read reports false, and the caller takes the
// slot's way (GetPiece), as ViewPieces does.
func (s *localSlot) GetPieceSplit(ctx context.Context, key blocks.Addr, head, tail, scratch []byte) bool {
	if throttle.IsBackground(ctx) {
		return false
	}
	s.c.limiter().Note()
	return s.c.n.silo.GetPieceSplit(ctx, key, head, tail, scratch)
}
