package node

import (
	"context"
	"errors"
	"fmt"

	"cairn/nbd"
	"cairn/volume"
)

// Exports returns the node's volumes as NBD exports: every volume is an
// export of the same name; snapshots are exported read-only; a volume
// attached by another writer is refused.
func (n *Node) Exports() nbd.Exports { return exports{n} }

type exports struct{ n *Node }

func (e exports) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	vs, err := e.n.catalog.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.ExportInfo, len(vs))
	for i, v := range vs {
		out[i] = nbd.ExportInfo{Name: v.Name, Description: fmt.Sprintf("%s: %s", v.Name, v.Policy.String())}
	}
	return out, nil
}

func (e exports) Open(ctx context.Context, name string) (nbd.Device, error) {
	info, err := e.n.catalog.Inspect(ctx, name)
	if err != nil {
		return nil, err
	}
	return e.n.catalog.Open(ctx, name, volume.OpenOptions{ReadOnly: info.ReadOnly})
}

// NBDClassify maps the volume layer's errors to the NBD server's error
// kinds (the rest, blocks' sentinels included, the server maps itself).
func NBDClassify(err error) error {
	switch {
	case errors.Is(err, volume.ErrNotFound):
		return nbd.ErrNotFound
	case errors.Is(err, volume.ErrAttached), errors.Is(err, volume.ErrFenced):
		return nbd.ErrDenied
	case errors.Is(err, volume.ErrReadOnly):
		return nbd.ErrReadOnly
	case errors.Is(err, volume.ErrOutOfRange), errors.Is(err, volume.ErrInvalid):
		return nbd.ErrInvalid
	case errors.Is(err, volume.ErrClosed):
		return nbd.ErrShutdown
	}
	return nil
}
