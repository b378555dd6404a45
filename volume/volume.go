// Package volume serves virtual disks on top of the block store: 512-byte
// sectors, chunked at the policy's block size, a chunk map kept as a tree of
// immutable map pages under one mutable root, a write-ahead journal that
// makes Flush one group commit, and background checkpoints through
// consensus. See doc.go for the model and the on-store formats.
package volume

import (
	"context"
	"errors"
	"time"

	"cairn/policies"
)

// SectorSize is the logical sector size of every volume.
const SectorSize = 512

// Errors returned by volumes and the catalogue. Block-layer errors
// (blocks.ErrCorrupt, blocks.ErrNoSpace, blocks.ErrUnavailable) pass through
// wrapped, so callers test both kinds with errors.Is.
var (
	ErrOutOfRange = errors.New("volume: offset or length out of range")
	ErrReadOnly   = errors.New("volume: read-only")
	ErrFenced     = errors.New("volume: fenced: another writer has taken the volume over")
	ErrAttached   = errors.New("volume: already attached by another writer")
	ErrNotFound   = errors.New("volume: no such volume")
	ErrExists     = errors.New("volume: a volume with that name already exists")
	ErrInvalid    = errors.New("volume: invalid request")
	ErrClosed     = errors.New("volume: closed")
)

// Volume is an attached virtual disk: everything nbd and iscsi need.
// Methods are safe for concurrent use. Offsets and lengths are in bytes;
// reads and writes need not be sector-aligned (partial chunks are
// read-modified-written), but must lie within [0, Size()).
type Volume interface {
	// Size returns the volume size in bytes (a multiple of SectorSize).
	Size() int64
	// BlockSize returns the chunk size (the preferred I/O size).
	BlockSize() int
	// ReadOnly reports whether writes are refused (a snapshot, or opened
	// read-only).
	ReadOnly() bool
	// ReadAt fills p from offset off. Never-written ranges read as zeros.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at off. Like a disk's volatile cache, the write may
	// be acknowledged before it is durable; Flush makes it durable.
	WriteAt(ctx context.Context, p []byte, off int64) error
	// Trim discards a range: it reads as zeros afterwards and its space is
	// given back (whole chunks become holes).
	Trim(ctx context.Context, off, length int64) error
	// WriteZeroes zeroes a range. With mayTrim whole chunks become holes;
	// without it (NBD's NO_HOLE) they are written as allocated zeros.
	WriteZeroes(ctx context.Context, off, length int64, mayTrim bool) error
	// Flush returns once every write, trim and zeroing that completed
	// before Flush was called is durable at the policy's redundancy: it
	// survives kill -9 of the process and the loss of as many holders as
	// the policy tolerates.
	Flush(ctx context.Context) error
	// Extents calls fn for consecutive extents covering [off, off+length),
	// each either allocated data or a hole that reads as zeros (for NBD
	// BLOCK_STATUS). Extents may be coarser than chunks, never finer than a
	// sector.
	Extents(ctx context.Context, off, length int64, fn func(off, length int64, hole bool) error) error
	// Close flushes, checkpoints and releases the attach lease.
	Close(ctx context.Context) error
}

// Info describes a volume, for listings and `volume inspect`.
type Info struct {
	Name     string
	Size     int64
	Policy   policies.Policy
	ReadOnly bool   // a snapshot
	Parent   string // the volume a snapshot or clone was taken of
	Created  time.Time
	Epoch    uint64 // the current attach epoch
	Attached bool   // a writer holds an unexpired lease
	Written  int64  // bytes of chunks currently mapped (logical, allocated)
	Stored   int64  // bytes of those chunks after compression and dedup
}

// OpenOptions control Catalog.Open.
type OpenOptions struct {
	ReadOnly bool // attach without a lease; writes return ErrReadOnly
}

// Catalog creates, lists and opens volumes. Safe for concurrent use.
type Catalog interface {
	Create(ctx context.Context, name string, size int64, p policies.Policy) (Info, error)
	Open(ctx context.Context, name string, opts OpenOptions) (Volume, error)
	List(ctx context.Context) ([]Info, error)
	Inspect(ctx context.Context, name string) (Info, error)
	Resize(ctx context.Context, name string, size int64) error
	Snapshot(ctx context.Context, name, snapshot string) error
	Clone(ctx context.Context, snapshot, name string) error
	Delete(ctx context.Context, name string) error
}
