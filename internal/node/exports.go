package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"cairn/blocks"
	"cairn/nbd"
	"cairn/volume"
)

// Exports returns the node's volumes as NBD exports: every volume is an
// export of the same name; snapshots are exported read-only.
//
// Several connections to one export share one attached volume (fio with
// numjobs, or a client using multi-conn): writes and a FLUSH on any of
// them act on the same volume, so NBD_FLAG_CAN_MULTI_CONN is honest. The
// volume is closed (flushed, checkpointed, its lease released) when its
// last connection ends. Any other writer, another node or `cairn volume
// import`, is refused while the export is attached.
func (n *Node) Exports() nbd.Exports {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.exports == nil {
		n.exports = &exports{n: n, open: map[string]*shared{}}
	}
	return n.exports
}

type exports struct {
	n    *Node
	mu   sync.Mutex // guards open; held while a volume opens or closes
	open map[string]*shared
}

// shared is one attached volume and the connections using it.
type shared struct {
	volume.Volume
	name string
	refs int
}

func (e *exports) List(ctx context.Context) ([]nbd.ExportInfo, error) {
	vs, err := e.n.catalog.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]nbd.ExportInfo, len(vs))
	for i, v := range vs {
		out[i] = nbd.ExportInfo{Name: v.Name, Description: v.Policy.String()}
	}
	return out, nil
}

func (e *exports) Open(ctx context.Context, name string) (nbd.Device, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.open[name]; s != nil {
		s.refs++
		return &conn{shared: s, e: e}, nil
	}
	info, err := e.n.catalog.Inspect(ctx, name)
	if err != nil {
		return nil, err
	}
	v, err := e.n.catalog.Open(ctx, name, volume.OpenOptions{ReadOnly: info.ReadOnly})
	if err != nil {
		return nil, err
	}
	s := &shared{Volume: v, name: name, refs: 1}
	e.open[name] = s
	return &conn{shared: s, e: e}, nil
}

// conn is one connection's handle on a shared volume.
type conn struct {
	*shared
	e    *exports
	once sync.Once
}

var (
	_ nbd.VectorReader  = (*conn)(nil)
	_ nbd.QuickFlusher  = (*conn)(nil)
	_ nbd.PayloadTaker  = (*conn)(nil)
	_ nbd.WriteBehinder = (*conn)(nil)
)

// TakeWrite implements nbd.PayloadTaker: the volume's, when it has one (a
// local volume), else WriteAt and an immediate release (a forwarded one).
func (c *conn) TakeWrite(ctx context.Context, p []byte, off int64, release func()) error {
	if pt, ok := c.Volume.(nbd.PayloadTaker); ok {
		return pt.TakeWrite(ctx, p, off, release)
	}
	defer release()
	return c.Volume.WriteAt(ctx, p, off)
}

// FlushIsQuick implements nbd.QuickFlusher: the volume's, when it has
// one (a forwarded volume does not: its FLUSH goes to a worker).
func (c *conn) FlushIsQuick(pending int64) bool {
	qf, ok := c.Volume.(nbd.QuickFlusher)
	return ok && qf.FlushIsQuick(pending)
}

// WriteBehind implements nbd.WriteBehinder: the volume's, when it has one
// (a local volume); a forwarded one does nothing.
func (c *conn) WriteBehind(ctx context.Context) error {
	if wb, ok := c.Volume.(nbd.WriteBehinder); ok {
		return wb.WriteBehind(ctx)
	}
	return nil
}

// ReadVec implements nbd.VectorReader: the volume's, when it has one (a
// local volume), else ReadAt into a new buffer (a forwarded one).
func (c *conn) ReadVec(ctx context.Context, off int64, n int, fn func(bufs [][]byte) error) error {
	if vr, ok := c.Volume.(nbd.VectorReader); ok {
		return vr.ReadVec(ctx, off, n, fn)
	}
	p := make([]byte, n)
	if err := c.Volume.ReadAt(ctx, p, off); err != nil {
		return err
	}
	return fn([][]byte{p})
}

// Close flushes; the last connection's Close closes the volume.
func (c *conn) Close(ctx context.Context) error {
	err := fmt.Errorf("node: export %s closed twice", c.name)
	c.once.Do(func() {
		c.e.mu.Lock()
		defer c.e.mu.Unlock()
		c.refs--
		if c.refs > 0 {
			err = c.Volume.Flush(ctx)
			return
		}
		delete(c.e.open, c.name)
		flushWhileUnavailable(ctx, c.Volume)
		err = c.Volume.Close(ctx)
	})
	return err
}

// flushWhileUnavailable flushes v, retrying for up to a minute while the
// cluster cannot take the data (a node restarting): a client that
// disconnects without a FLUSH still expects a clean detach to keep what it
// wrote, as a disk would.
func flushWhileUnavailable(ctx context.Context, v volume.Volume) {
	deadline := time.Now().Add(time.Minute)
	for {
		err := v.Flush(ctx)
		if err == nil || !errors.Is(err, blocks.ErrUnavailable) || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
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
