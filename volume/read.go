package volume

import (
	"context"
	"fmt"

	"cairn/blocks"
)

// The read path of a volume: ReadAt and the chunk reads below it.

// ReadAt implements Volume.
func (v *volumeImpl) ReadAt(ctx context.Context, p []byte, off int64) error {
	v.life.RLock()
	defer v.life.RUnlock()
	if err := v.usable(); err != nil {
		return err
	}
	if err := v.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	if int64(len(p)) <= v.bs-off%v.bs {
		return v.readChunk(ctx, uint64(off/v.bs), p, off%v.bs)
	}
	// Several chunks. Small reads run inline: a goroutine per chunk costs
	// more than the chunk (a page-cache read). Large reads go in parallel
	// across groups of chunks, each group read in order by one goroutine.
	first := off / v.bs
	count := int((off+int64(len(p))-1)/v.bs - first + 1)
	per := max(1, int(readGroupBytes/v.bs))
	groups := (count + per - 1) / per
	return parallel(ctx, groups, v.c.opts.PutParallel, func(g int) error {
		return v.readChunks(ctx, p, off, first+int64(g*per), first+int64(min((g+1)*per, count)))
	})
}

// chunkPart is the part of a read that falls in one chunk.
type chunkPart struct {
	chunk uint64
	p     []byte // where the bytes go
	in    int64  // offset in the chunk
}

// readChunks reads chunks [from, to) of the read of p at off. Stored chunks
// are read together (blocks.ManyGetter: a local silo reads neighbouring
// records with one pread); a chunk that fails there is read again alone,
// by readChunk, which repairs or reports it as a single read would.
func (v *volumeImpl) readChunks(ctx context.Context, p []byte, off, from, to int64) error {
	mg, ok := v.store.(blocks.ManyGetter)
	parts := make([]chunkPart, 0, to-from)
	for chunk := from; chunk < to; chunk++ {
		lo := max(chunk*v.bs, off)
		hi := min((chunk+1)*v.bs, off+int64(len(p)))
		parts = append(parts, chunkPart{uint64(chunk), p[lo-off : hi-off], lo - chunk*v.bs})
	}
	if !ok || len(parts) == 1 {
		for _, pt := range parts {
			if err := v.readChunk(ctx, pt.chunk, pt.p, pt.in); err != nil {
				return err
			}
		}
		return nil
	}
	stored := parts[:0]
	addrs := make([]blocks.Addr, 0, len(parts))
	for _, pt := range parts {
		a, ok, err := v.locate(ctx, pt.chunk, pt.p, pt.in)
		if err != nil {
			return err
		}
		if ok {
			stored = append(stored, pt)
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil
	}
	bp, _ := v.manyBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer v.manyBufs.Put(bp)
	got, errs := mg.GetMany(ctx, addrs, bp)
	for j, pt := range stored {
		if errs[j] != nil || int64(len(got[j])) != v.bs {
			if err := v.readChunk(ctx, pt.chunk, pt.p, pt.in); err != nil {
				return err
			}
			continue
		}
		copy(pt.p, got[j][pt.in:])
	}
	return nil
}

// readGroupBytes is how much of a large read one goroutine reads: reads up
// to this size run inline, larger ones in parallel across groups.
const readGroupBytes = 128 << 10

// locate fills p from chunk at offset in when the chunk is dirty or a
// hole; else it returns the address to read it from (stored true).
func (v *volumeImpl) locate(ctx context.Context, chunk uint64, p []byte, in int64) (a blocks.Addr, stored bool, err error) {
	v.mu.Lock()
	if d, ok := v.dirty[chunk]; ok {
		if d.data == nil {
			clear(p)
		} else {
			copy(p, d.data[in:])
		}
		v.mu.Unlock()
		return a, false, nil
	}
	v.mu.Unlock()
	a, err = v.m.Get(ctx, chunk)
	if err != nil {
		return a, false, fmt.Errorf("volume %q: read chunk %d: %w", v.name, chunk, err)
	}
	if a.IsZero() {
		clear(p)
		return a, false, nil
	}
	return a, true, nil
}

// readChunk fills p from chunk at offset in: dirty data first, then the map.
func (v *volumeImpl) readChunk(ctx context.Context, chunk uint64, p []byte, in int64) error {
	a, stored, err := v.locate(ctx, chunk, p, in)
	if err != nil || !stored {
		return err
	}
	var b []byte
	if gi, ok := v.store.(blocks.GetterInto); ok {
		// Read through a pooled buffer, with room for what the layers
		// below put around the chunk (piece and record headers).
		bp, _ := v.readBufs.Get().(*[]byte)
		if bp == nil {
			bp = new([]byte)
		}
		if want := int(v.bs) + readSlack; cap(*bp) < want {
			*bp = make([]byte, want)
		}
		defer v.readBufs.Put(bp)
		b, err = gi.GetInto(ctx, a, (*bp)[:0])
	} else {
		b, err = v.store.Get(ctx, a)
	}
	if err != nil {
		return fmt.Errorf("volume %q: read chunk %d: %w", v.name, chunk, err)
	}
	if int64(len(b)) != v.bs {
		return fmt.Errorf("volume %q: chunk %d is %d bytes, want %d: %w", v.name, chunk, len(b), v.bs, blocks.ErrCorrupt)
	}
	copy(p, b[in:])
	return nil
}

// readSlack is the room a read buffer keeps beyond a chunk for the headers
// of the layers below (sealing, piece and record headers), so that they
// can read into it without allocating.
const readSlack = 512
