// Package blocks is Cairn's shared vocabulary for stored blocks: addresses,
// identities, the interfaces of every store layer, and their sentinel errors.
//
// # Layers
//
// A node keeps pieces in its silo (package blocks/silo), a [Holder]: keyed,
// checksummed, crash-safe storage with group commit. Above the holders sits
// the redundancy layer (package blocks/redundant), a [Store] that splits a
// block into k+m erasure-coded pieces or n replica pieces and places piece i
// on holder i. Above that, package blocks/sealed compresses and encrypts. The
// volume layer sees only a [Store]: Put plaintext, get back an [Addr]; Get an
// Addr, get back the verified plaintext.
//
// Mutable blocks (volume roots, leases, catalogues) live in a [MutableStore]:
// compare-and-set on a [Version], decided by consensus (package consensus).
//
// Each volume's write-ahead journal lives on holders that implement
// [Journal], beside the data pieces, so that one Sync makes both durable.
package blocks

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
)

// Sentinel errors. Every layer wraps them with %w; callers test them with
// errors.Is.
var (
	// ErrNotFound: no block, piece or journal record under that key.
	ErrNotFound = errors.New("blocks: not found")
	// ErrConflict: a compare-and-set lost (the version was not the one wanted).
	ErrConflict = errors.New("blocks: version conflict")
	// ErrCorrupt: stored bytes failed their checksum or hash. Corrupt bytes
	// are never returned as data; the caller reads another copy or reports.
	ErrCorrupt = errors.New("blocks: corrupt data")
	// ErrUnavailable: not enough holders (or no consensus quorum) answered;
	// retrying later may succeed.
	ErrUnavailable = errors.New("blocks: unavailable")
	// ErrNoSpace: a holder's disk is full. Nothing acknowledged was lost.
	ErrNoSpace = errors.New("blocks: no space left on device")
	// ErrFenced: a journal append from an epoch that a newer writer has
	// sealed. The writer holding that epoch must stop.
	ErrFenced = errors.New("blocks: fenced by a newer epoch")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("blocks: closed")
	// ErrTooLarge: a block or record larger than the store accepts.
	ErrTooLarge = errors.New("blocks: too large")
)

// Addr is the 32-byte address of an immutable block or piece. For a block
// it is the SHA-256 of the bytes the redundancy layer stored (after
// compression and encryption), so any holder can verify what it serves.
type Addr [32]byte

// Sum returns the content address of data (SHA-256).
func Sum(data []byte) Addr { return Addr(sha256.Sum256(data)) }

// String returns the address in lower-case hex.
func (a Addr) String() string { return hex.EncodeToString(a[:]) }

// IsZero reports whether a is the zero address (used for "no block": a hole).
func (a Addr) IsZero() bool { return a == Addr{} }

// ParseAddr parses the 64-hex-digit form that String prints.
func ParseAddr(s string) (Addr, error) {
	var a Addr
	if len(s) != 2*len(a) {
		return a, fmt.Errorf("blocks: address %q: want %d hex digits, got %d", s, 2*len(a), len(s))
	}
	if _, err := hex.Decode(a[:], []byte(s)); err != nil {
		return a, fmt.Errorf("blocks: address %q: %w", s, err)
	}
	return a, nil
}

// PieceKey is the holder key of piece i of the block at addr: addr itself
// for piece 0, a hash of (addr, i) for the others, so that pieces of one
// block never collide even when several land on the same holder.
func PieceKey(addr Addr, i int) Addr {
	if i == 0 {
		return addr
	}
	var buf [len("cairn/piece\x00") + 32 + 4]byte
	n := copy(buf[:], "cairn/piece\x00")
	n += copy(buf[n:], addr[:])
	binary.BigEndian.PutUint32(buf[n:], uint32(i))
	return Sum(buf[:])
}

// ID is the stable identity of a mutable block.
type ID [32]byte

// NameID derives the ID of the named block name (volume roots, catalogues,
// bucket and file-system roots).
func NameID(name string) ID { return ID(sha256.Sum256([]byte("cairn/name\x00" + name))) }

// String returns the ID in lower-case hex.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Version is a mutable block's compare-and-set version. 0 means absent; the
// first successful CompareAndSet creates version 1.
type Version uint64

// Epoch numbers the attach leases of a volume: each new writer takes a
// larger one, and seals the journal against every smaller one.
type Epoch uint64

// Getter reads immutable blocks.
type Getter interface {
	// Get returns the bytes that were Put under addr, verified (hash,
	// checksum or authentication tag) before they are returned. The caller
	// owns the returned slice. Errors: ErrNotFound, ErrCorrupt (no intact
	// copy could be found or rebuilt), ErrUnavailable.
	Get(ctx context.Context, addr Addr) ([]byte, error)
}

// Putter writes immutable blocks.
type Putter interface {
	// Put stores data and returns its address. It is idempotent: equal data
	// yields an equal address (within one store's keying) and is stored once.
	// Put does not make data durable: Sync does. Put does not retain data.
	Put(ctx context.Context, data []byte) (Addr, error)
}

// Store is the immutable side of the block store: content-addressed blocks.
// Implementations are safe for concurrent use.
type Store interface {
	Getter
	Putter
	// Has reports whether a block is stored under addr (without reading it
	// whole or verifying it).
	Has(ctx context.Context, addr Addr) (bool, error)
	// Delete removes the block (the garbage collector's path). Deleting an
	// absent block is not an error.
	Delete(ctx context.Context, addr Addr) error
	// Sync returns once every Put that returned before Sync was called is
	// durable at the store's redundancy (it survives kill -9 and power loss
	// of as many holders as the policy allows).
	Sync(ctx context.Context) error
}

// Holder is a node's keyed storage of pieces: the silo on local disk, or a
// remote node's silo in a cluster. A holder does not know what a piece is
// for; it checks its own checksums and nothing else. Implementations are
// safe for concurrent use.
type Holder interface {
	// PutPiece stores data under key, replacing nothing: a second put of the
	// same key is a no-op when the first is still there. Not durable until
	// Sync. Errors: ErrNoSpace, ErrTooLarge, ErrClosed.
	PutPiece(ctx context.Context, key Addr, data []byte) error
	// GetPiece returns the piece, checksum-verified. Errors: ErrNotFound,
	// ErrCorrupt (the stored bytes fail their checksum: torn or rotten).
	GetPiece(ctx context.Context, key Addr) ([]byte, error)
	// HasPiece reports whether a piece is stored under key.
	HasPiece(ctx context.Context, key Addr) (bool, error)
	// DeletePiece removes a piece; its space comes back at compaction.
	// Deleting an absent key is not an error.
	DeletePiece(ctx context.Context, key Addr) error
	// Sync makes every piece put and every journal record appended before
	// the call durable (one group commit shared by concurrent callers).
	Sync(ctx context.Context) error
}

// Walker is an optional capability: list every key or address held, for
// garbage collection, scrub and anti-entropy. The order is unspecified;
// keys added or removed during the walk may or may not be seen.
type Walker interface {
	Walk(ctx context.Context, fn func(key Addr) error) error
}

// Journal is a holder's store of per-volume write-ahead logs. A log is an
// ordered sequence of records numbered by seq (starting at 1 and growing by
// one per append, across epochs). Implementations are safe for concurrent
// use; appends to one log come from its single writer.
type Journal interface {
	// Append adds record seq to log. It is not durable until Sync.
	// Errors: ErrFenced when epoch is below the log's sealed epoch;
	// ErrNoSpace; ErrTooLarge.
	Append(ctx context.Context, log ID, epoch Epoch, seq uint64, rec []byte) error
	// Seal refuses, from now on and durably, every Append with an epoch
	// below epoch. Sealing with a lower epoch than the current seal is a no-op.
	Seal(ctx context.Context, log ID, epoch Epoch) error
	// Replay calls fn for each record with seq >= from in ascending seq
	// order. Where two epochs wrote the same seq the higher epoch wins. The
	// rec slice is valid only during the call. A record that fails its
	// checksum ends the log there (a torn tail) and is not passed to fn.
	Replay(ctx context.Context, log ID, from uint64, fn func(epoch Epoch, seq uint64, rec []byte) error) error
	// Trim drops the records with seq < before (they are covered by a
	// checkpoint). Trim(log, math.MaxUint64) drops the whole log, seal included.
	Trim(ctx context.Context, log ID, before uint64) error
}

// MutableStore holds mutable blocks: an ID, a version and a payload, changed
// only by compare-and-set. Implementations are safe for concurrent use.
type MutableStore interface {
	// Load returns the current version and payload of id, linearizably: it
	// reflects every CompareAndSet that completed before Load was called.
	// An absent block is version 0 with a nil payload and a nil error.
	Load(ctx context.Context, id ID) (Version, []byte, error)
	// CompareAndSet replaces the payload of id if its version is want, and
	// returns the new version (want+1). A nil payload deletes the block
	// (returning version 0). Errors: ErrConflict when the version is not
	// want; ErrUnavailable when no quorum answered in time; ErrTooLarge.
	CompareAndSet(ctx context.Context, id ID, want Version, payload []byte) (Version, error)
}

// SizedPutter is an optional capability of a Store: PutSized is Put that
// also reports how many bytes the block occupies as stored (after
// compression and encryption, before redundancy), for space accounting.
type SizedPutter interface {
	PutSized(ctx context.Context, data []byte) (Addr, int, error)
}

// Local is an optional capability of a Holder. IsLocal reports true when
// the holder keeps its pieces on this node's own disks behind its own
// record checksums (the silo), not across a network or in another trust
// domain. A Local holder promises two things that callers may rely on:
//
//   - GetPiece returns only bytes that passed the holder's own checksum of
//     key and payload, read from this node's disk. The redundancy layer
//     then trusts a piece whose own header and payload checksums also
//     pass, and skips recomputing the block's SHA-256 on the read path
//     (bit rot and torn writes fail a CRC; a misplaced piece fails the
//     key, header-address and index checks; nothing on this node lies on
//     purpose). Pieces from holders that are not Local, scrub, and every
//     read that meets a mismatch still verify the full hash.
//   - It does not retain the slices passed to it once a call returns, so
//     callers may reuse their buffers (pool them).
type Local interface {
	IsLocal() bool
}

// HolderIsLocal reports whether h implements Local and says it is local.
func HolderIsLocal(h any) bool {
	l, ok := h.(Local)
	return ok && l.IsLocal()
}

// SyncHolders is an optional capability of a Store whose Sync is exactly a
// Sync of each holder SyncHolders returns, and nothing more. A caller that
// syncs the store together with other holders (a volume syncs its store
// and its journal holders at every FLUSH; on one node they are the same
// silo) may instead sync each distinct holder once (see SameHolder). The
// returned slice belongs to the caller; the holders may change between
// calls (membership), so ask at each sync. A nil result means the store
// cannot tell (a wrapper over a store without the capability): the caller
// must call Sync instead.
type SyncHolders interface {
	SyncHolders() []Holder
}

// WriteBehinder is an optional capability of a Holder or a journal
// holder: WriteBehind hands what it holds unsynced to its disk and starts
// the disk writing it, without waiting for the disk, so that the next Sync
// finds that work begun or done and waits only for the rest (on this
// machine, the device's cache flush). It makes nothing durable and
// promises nothing: only Sync does. An error is one the next Sync would
// report too.
type WriteBehinder interface {
	WriteBehind() error
}

// SameHolder reports whether a and b are provably the same holder (or
// journal holder): equal pointers of one type. Values of other kinds are
// never reported equal (comparing them could panic or mislead), which only
// costs a redundant Sync.
func SameHolder(a, b any) bool {
	if a == nil || b == nil {
		return false
	}
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb || ta.Kind() != reflect.Pointer {
		return false
	}
	return a == b
}

// PartsPutter is an optional capability of a Store: PutParts(ctx, head,
// body) is Put(ctx, head||body) without the caller building the
// concatenation (the sealing layer puts its small header in front of the
// block this way, saving a copy of every block). It does not retain head
// or body.
type PartsPutter interface {
	PutParts(ctx context.Context, head, body []byte) (Addr, error)
}

// PieceGetterInto is an optional capability of a Holder: GetPieceInto is
// GetPiece that may read into dst's array (up to cap(dst), also as scratch
// space) instead of allocating. The result may or may not share dst's
// array; on an error dst's contents are unspecified. The caller owns dst
// and the result. Verification is GetPiece's.
type PieceGetterInto interface {
	GetPieceInto(ctx context.Context, key Addr, dst []byte) ([]byte, error)
}

// GetterInto is an optional capability of a Store: GetInto is Get that may
// build the block in dst's array (up to cap(dst), also as scratch space)
// instead of allocating, so a reader can reuse one buffer (pool it). The
// result may or may not share dst's array; on an error dst's contents are
// unspecified. The caller owns dst and the result. Verification and errors
// are Get's.
type GetterInto interface {
	GetInto(ctx context.Context, addr Addr, dst []byte) ([]byte, error)
}

// SplitGetter is an optional capability of a Store: GetSplit reads the
// block at addr straight into the caller's buffers, when its content is
// exactly len(head)+len(tail) bytes: the first len(head) into head, the
// rest into tail, verified as Get verifies. scratch (at least SplitScratch
// bytes) is room for the headers of the layers below, so that nothing is
// allocated and the block is copied once, from the disk's pages to tail.
// It reports false, leaving the buffers' contents unspecified, whenever it
// cannot (a block of another length, one that is compressed, encrypted,
// not on this node, missing, corrupt, or any error): the caller then reads
// the block with Get (or GetInto), which repairs, retries and reports
// errors as usual. It is a fast path, never the only one.
type SplitGetter interface {
	GetSplit(ctx context.Context, addr Addr, head, tail, scratch []byte) bool
}

// PieceSplitGetter is SplitGetter for a Holder's piece under key.
type PieceSplitGetter interface {
	GetPieceSplit(ctx context.Context, key Addr, head, tail, scratch []byte) bool
}

// SplitScratch is the scratch room GetSplit and GetPieceSplit need.
const SplitScratch = 256

// PiecesGetter is an optional capability of a Holder: GetPieces is
// GetPiece for several keys at once, so that a local holder can read
// pieces stored side by side with one system call. pieces[i] and errs[i]
// are what GetPiece(keys[i]) would return (verification included). The
// pieces may share *buf's array (grown as needed): the caller owns *buf and
// must not reuse it while it uses the pieces.
type PiecesGetter interface {
	GetPieces(ctx context.Context, keys []Addr, buf *[]byte) (pieces [][]byte, errs []error)
}

// ManyGetter is an optional capability of a Store: GetMany reads several
// blocks at once, through PiecesGetter where the holders allow. blocks[i]
// and errs[i] are what Get(addrs[i]) would return, verified alike; the
// blocks may share *buf's array (grown as needed), which the caller owns
// and must not reuse while it uses them.
type ManyGetter interface {
	GetMany(ctx context.Context, addrs []Addr, buf *[]byte) (blocks [][]byte, errs []error)
}

// Viewer is an optional capability of a Store: ViewMany sets views[i] to
// the content of the block at addrs[i] where the layers below can hand the
// bytes out in place, without a copy (a plain block whose piece lies in a
// mapped segment of this node's silo), verified as Get verifies it; it
// leaves views[i] nil wherever it cannot (a block compressed, encrypted,
// buffered, elsewhere, missing, corrupt, or any error), for the caller to
// read with Get or GetMany, which repair and report errors. It is a fast
// path, never the only one. The views are read-only and stay valid until
// the caller calls release (never nil), once; after that it must not touch
// them. A holder of views delays no writer, compaction or Close: it only
// keeps the memory mapped, so release them soon (a reply sent, say).
type Viewer interface {
	ViewMany(ctx context.Context, addrs []Addr, views [][]byte) (release func())
}

// PieceViewer is Viewer for a Holder's pieces under keys.
type PieceViewer interface {
	ViewPieces(ctx context.Context, keys []Addr, views [][]byte) (release func())
}

// NoRelease is the release of views that pin nothing.
func NoRelease() {}

// Limits shared by every layer.
const (
	// MaxBlock is the largest plaintext block a Store accepts (the largest
	// policy block size, 4 MiB).
	MaxBlock = 4 << 20
	// MaxPiece is the largest piece a Holder accepts: a whole MaxBlock block
	// after encryption overhead (the worst case of incompressible data
	// replicated whole), plus room for piece headers.
	MaxPiece = MaxBlock + 64<<10
	// MaxRecord is the largest journal record a Journal accepts.
	MaxRecord = 1 << 20
)
