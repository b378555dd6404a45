package chunkmap

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"cairn/blocks"
)

// Constants of the page format (see the package documentation). They fix
// the stored bytes and must not change.
const (
	pageMagic   = "CMPG"
	pageVersion = 1
	headerLen   = 10
	// MaxPageEntries is the largest Options.PageEntries (a full page of it
	// is a little over 2 MiB, well under blocks.MaxBlock).
	MaxPageEntries = 1 << 16
	// maxLevel is the highest page level: with E = 2, 2^64 chunks need 64
	// levels (0..63); one spare.
	maxLevel = 64
)

// encodePage appends the encoding of a page with entries ent at level to
// dst. It reports false (and appends nothing) when every entry is zero:
// such a page is never stored.
func encodePage(dst []byte, level int, ent []blocks.Addr) ([]byte, bool) {
	k := 0
	for i := range ent {
		if !isZero(&ent[i]) {
			k++
		}
	}
	if k == 0 {
		return dst, false
	}
	bm := (len(ent) + 7) / 8
	start := len(dst)
	need := headerLen + bm + 32*k
	if cap(dst)-start < need {
		nd := make([]byte, start, start+need)
		copy(nd, dst)
		dst = nd
	}
	dst = dst[:start+need]
	b := dst[start:]
	copy(b, pageMagic)
	b[4] = pageVersion
	b[5] = byte(level)
	binary.BigEndian.PutUint32(b[6:], uint32(len(ent)))
	bitmap := b[headerLen : headerLen+bm]
	clear(bitmap)
	out := b[headerLen+bm:]
	for i := range ent {
		if !isZero(&ent[i]) {
			bitmap[i/8] |= 1 << (i % 8)
			out = out[copy(out, ent[i][:]):]
		}
	}
	return dst, true
}

// isZero is a.IsZero() without the call to memequal (Flush scans every
// entry of every dirty page).
func isZero(a *blocks.Addr) bool {
	return binary.NativeEndian.Uint64(a[0:])|binary.NativeEndian.Uint64(a[8:])|
		binary.NativeEndian.Uint64(a[16:])|binary.NativeEndian.Uint64(a[24:]) == 0
}

// pageHeader checks the header of an encoded page and returns its level and
// entry count. Errors wrap blocks.ErrCorrupt.
func pageHeader(data []byte) (level, entries int, err error) {
	if len(data) < headerLen {
		return 0, 0, fmt.Errorf("chunkmap: page of %d bytes is shorter than its header: %w", len(data), blocks.ErrCorrupt)
	}
	if string(data[:4]) != pageMagic {
		return 0, 0, fmt.Errorf("chunkmap: page magic %q: %w", data[:4], blocks.ErrCorrupt)
	}
	if data[4] != pageVersion {
		return 0, 0, fmt.Errorf("chunkmap: page format version %d, want %d: %w", data[4], pageVersion, blocks.ErrCorrupt)
	}
	level = int(data[5])
	if level > maxLevel {
		return 0, 0, fmt.Errorf("chunkmap: page level %d above %d: %w", level, maxLevel, blocks.ErrCorrupt)
	}
	e := binary.BigEndian.Uint32(data[6:])
	if e < 2 || e > MaxPageEntries {
		return 0, 0, fmt.Errorf("chunkmap: page of %d entries: %w", e, blocks.ErrCorrupt)
	}
	return level, int(e), nil
}

// decodePage decodes an encoded page into a new slice of its entries (one
// per entry, zero for a hole or empty subtree) and returns its level. It
// never panics; every malformed input gives an error wrapping
// blocks.ErrCorrupt.
func decodePage(data []byte) (level int, ent []blocks.Addr, err error) {
	level, e, err := pageHeader(data)
	if err != nil {
		return 0, nil, err
	}
	bm := (e + 7) / 8
	if len(data) < headerLen+bm {
		return 0, nil, fmt.Errorf("chunkmap: page of %d bytes has no room for its %d-byte bitmap: %w", len(data), bm, blocks.ErrCorrupt)
	}
	bitmap := data[headerLen : headerLen+bm]
	if e%8 != 0 && bitmap[bm-1]>>(e%8) != 0 {
		return 0, nil, fmt.Errorf("chunkmap: page bitmap has bits beyond entry %d: %w", e, blocks.ErrCorrupt)
	}
	k := 0
	for _, b := range bitmap {
		k += bits.OnesCount8(b)
	}
	if k == 0 {
		return 0, nil, fmt.Errorf("chunkmap: stored page with no entries: %w", blocks.ErrCorrupt)
	}
	body := data[headerLen+bm:]
	if len(body) != 32*k {
		return 0, nil, fmt.Errorf("chunkmap: page body of %d bytes, want %d for %d entries: %w", len(body), 32*k, k, blocks.ErrCorrupt)
	}
	ent = make([]blocks.Addr, e)
	for i := 0; i < e; i++ {
		if bitmap[i/8]&(1<<(i%8)) == 0 {
			continue
		}
		a := blocks.Addr(body[:32])
		body = body[32:]
		if a.IsZero() {
			return 0, nil, fmt.Errorf("chunkmap: page lists a zero address at entry %d: %w", i, blocks.ErrCorrupt)
		}
		ent[i] = a
	}
	return level, ent, nil
}
