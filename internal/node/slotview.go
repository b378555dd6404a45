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
