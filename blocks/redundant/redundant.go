// Package redundant is Cairn's redundancy layer: a blocks.Store that keeps
// each block as n pieces on a set of blocks.Holder, either as n full
// replicas or as k data + m parity Reed-Solomon shards.
//
// Piece i of the block at addr is stored under blocks.PieceKey(addr, i) on
// the i-th holder that Options.Holders returns for addr. Every piece carries
// a small header (see HeaderSize for the format) naming its block, so that a
// piece found on a holder can be traced back to its block.
//
// # Reads verify and repair
//
// Get never returns bytes whose SHA-256 is not the address asked for, as
// far as checksums can tell: pieces from remote holders are hashed on every
// read; a piece from a blocks.Local holder (this node's silo) whose record
// CRC, header CRC and payload CRC all pass is trusted without rehashing
// (see Store.trusted for the reasoning); Scrub hashes everything. A
// piece that is missing, fails its checksums or belongs to another block is
// skipped; once the block is rebuilt from good pieces, every bad or missing
// piece the read came across is rewritten on its holder (DeletePiece, then
// PutPiece), inline, before Get returns, and counted (logged at debug
// level). A read does not sync the holders it repaired: their next Sync (a
// volume's FLUSH, the anti-entropy pass's) makes the piece durable, and a
// crash before that leaves it missing or bad as the read found it, for the
// next read or pass to repair. (A client read that paid an fdatasync per
// repaired piece ran at a fraction of its speed while a cluster healed.)
// Repair and Scrub sync each holder they rewrote a piece on, unless their
// context says the caller will (DeferRepairSyncs). A repair that fails is
// logged and does not fail the Get. Scrub reads every
// piece of every block it can find and repairs them the same way.
//
// # Writes
//
// Put hashes the block once (its address), frames each piece once (header
// and payload, in a pooled buffer when every holder is blocks.Local) and
// writes every piece, in parallel (inline for a single piece), and
// succeeds only when all of them are written. (A later change will accept a write quorum and leave the rest
// to repair.)
package redundant

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"slices"
	"sync"

	"github.com/klauspost/reedsolomon"

	"cairn/blocks"
	"cairn/internal/crc32c"
)

var (
	_ blocks.Store       = (*Store)(nil)
	_ blocks.Walker      = (*Store)(nil)
	_ blocks.PartsPutter = (*Store)(nil)
	_ blocks.SyncHolders = (*Store)(nil)
	_ blocks.GetterInto  = (*Store)(nil)
	_ blocks.SplitGetter = (*Store)(nil)
	_ blocks.ManyGetter  = (*Store)(nil)
	_ blocks.Viewer      = (*Store)(nil)
)

// MaxData is the largest block Put accepts: a replica (header and block)
// must fit in one blocks.MaxPiece piece.
const MaxData = blocks.MaxPiece - HeaderSize

// DefaultParallelism is the default bound on concurrent holder calls made by
// one operation.
const DefaultParallelism = 8

// Options configure a Store. Exactly one of Replicas and Data must be set.
type Options struct {
	// Replicas is the number of full copies (1..255), or 0 for erasure coding.
	Replicas int
	// Data and Parity are the k data and m parity pieces of erasure coding
	// (k >= 1, m >= 1, k+m <= 255). For example Data: 4, Parity: 2 stores a
	// block as 6 pieces of a quarter of its size each and survives the loss
	// of any 2.
	Data, Parity int
	// Holders returns the n holders of the pieces of the block at addr, in
	// piece order. It must be deterministic and return exactly n holders; it
	// may repeat a holder (a one-node cluster). Required.
	Holders func(addr blocks.Addr, n int) []blocks.Holder
	// All returns every holder, each once, for Sync, Walk and Scrub. Required.
	All func() []blocks.Holder
	// Logger receives repair and scrub reports. Nil discards them.
	Logger *slog.Logger
	// Parallelism bounds the holder calls one operation makes at a time.
	// Zero means DefaultParallelism.
	Parallelism int
	// Tag is stored in the header of every piece Put writes (the
	// placement tag: see the piece format) and given back by
	// PieceLayout; the store does not interpret it.
	Tag uint8
}

// Store is a blocks.Store over holders. It is safe for concurrent use.
type Store struct {
	holders func(blocks.Addr, int) []blocks.Holder
	all     func() []blocks.Holder
	log     *slog.Logger
	par     int
	n, k, m int                 // pieces, data pieces (1 for replicas), parity
	kind    uint8               // kindReplica or kindShard
	tag     uint8               // Options.Tag
	enc     reedsolomon.Encoder // nil for replicas; safe for concurrent use
	bufs    sync.Pool           // of *[]byte: piece buffers for local holders
	hashes  sync.Pool           // of hash.Hash: SHA-256 of two-part blocks
}

// New returns a Store with opts. It fails when opts are inconsistent.
func New(opts Options) (*Store, error) {
	s := &Store{holders: opts.Holders, all: opts.All, log: opts.Logger, par: opts.Parallelism, tag: opts.Tag}
	if s.holders == nil || s.all == nil {
		return nil, errors.New("redundant: options need Holders and All")
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.par <= 0 {
		s.par = DefaultParallelism
	}
	switch {
	case opts.Replicas > 0 && (opts.Data != 0 || opts.Parity != 0):
		return nil, fmt.Errorf("redundant: options set both replicas (%d) and data/parity (%d/%d): choose one", opts.Replicas, opts.Data, opts.Parity)
	case opts.Replicas > 255:
		return nil, fmt.Errorf("redundant: %d replicas: at most 255", opts.Replicas)
	case opts.Replicas > 0:
		s.n, s.k, s.m, s.kind = opts.Replicas, 1, opts.Replicas-1, kindReplica
	case opts.Data < 1 || opts.Parity < 1 || opts.Data+opts.Parity > 255:
		return nil, fmt.Errorf("redundant: erasure coding %d+%d: want data >= 1, parity >= 1, data+parity <= 255 (or set replicas)", opts.Data, opts.Parity)
	default:
		s.n, s.k, s.m, s.kind = opts.Data+opts.Parity, opts.Data, opts.Parity, kindShard
		enc, err := reedsolomon.New(opts.Data, opts.Parity)
		if err != nil {
			return nil, fmt.Errorf("redundant: erasure coding %d+%d: %w", opts.Data, opts.Parity, err)
		}
		s.enc = enc
	}
	return s, nil
}

// placement returns the holders of addr's pieces.
func (s *Store) placement(addr blocks.Addr) ([]blocks.Holder, error) {
	hs := s.holders(addr, s.n)
	if len(hs) != s.n {
		return nil, fmt.Errorf("redundant: %v: placement gave %d holders for %d pieces: %w", addr, len(hs), s.n, blocks.ErrUnavailable)
	}
	for i, h := range hs {
		if h == nil {
			return nil, fmt.Errorf("redundant: %v: no holder for piece %d: %w", addr, i, blocks.ErrUnavailable)
		}
	}
	return hs, nil
}

// each calls fn(0..n-1) with at most s.par calls at a time and returns their
// errors by index.
func (s *Store) each(n int, fn func(i int) error) []error {
	return s.eachInline(n, -1, fn)
}

// eachInline is each with fn(inline), unless inline is -1, called on the
// calling goroutine once the others are started (a local holder's call,
// which would gain nothing from a goroutine of its own).
func (s *Store) eachInline(n, inline int, fn func(i int) error) []error {
	errs := make([]error, n)
	if n == 1 {
		errs[0] = fn(0)
		return errs
	}
	sem := make(chan struct{}, s.par)
	var wg sync.WaitGroup
	for i := range n {
		if i == inline {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(i)
		})
	}
	if inline >= 0 {
		errs[inline] = fn(inline)
	}
	wg.Wait()
	return errs
}

// encode returns the n pieces (header and payload) of data, whose address
// is addr, in one freshly allocated buffer (the repair path's encoding).
func (s *Store) encode(addr blocks.Addr, data []byte) ([][]byte, error) {
	pieces := make([][]byte, s.n)
	if err := s.frame(pieces, nil, addr, nil, data); err != nil {
		return nil, err
	}
	return pieces, nil
}

// frame fills pieces (len s.n) with the pieces (header and payload) of the
// block head||body, whose address is addr. The pieces share buf's storage
// when buf is not nil (grown as needed), else a fresh buffer. The payload
// is copied from head and body once per piece; each CRC is computed once
// (replicas share theirs).
func (s *Store) frame(pieces [][]byte, buf *[]byte, addr blocks.Addr, head, body []byte) error {
	length := len(head) + len(body)
	h := header{kind: s.kind, k: uint8(s.k), m: uint8(s.m), tag: s.tag, length: uint32(length), addr: addr}
	size := HeaderSize + length
	if s.kind == kindShard {
		size = HeaderSize + shardSize(length, s.k)
	}
	var all []byte
	if buf != nil {
		if cap(*buf) < s.n*size {
			*buf = make([]byte, s.n*size)
		}
		all = (*buf)[:s.n*size]
	} else {
		all = make([]byte, s.n*size)
	}
	for i := range pieces {
		pieces[i] = all[i*size : (i+1)*size : (i+1)*size]
	}
	if s.kind == kindReplica {
		first := pieces[0][HeaderSize:]
		copy(first[copy(first, head):], body)
		h.crc = crc32c.Checksum(first)
		for i, p := range pieces {
			if i > 0 {
				copy(p[HeaderSize:], first)
			}
			h.index = uint8(i)
			h.put(p)
		}
		return nil
	}
	ss := size - HeaderSize
	shards := make([][]byte, s.n)
	for i, p := range pieces {
		shards[i] = p[HeaderSize:]
		if i < s.k {
			copyRange(shards[i], i*ss, head, body)
		} else {
			clear(shards[i]) // a pooled buffer holds old bytes; Encode overwrites parity anyway
		}
	}
	if err := s.enc.Encode(shards); err != nil {
		return fmt.Errorf("redundant: encode %v: %w", addr, err)
	}
	for i, p := range pieces {
		h.index = uint8(i)
		h.crc = crc32c.Checksum(shards[i])
		h.put(p)
	}
	return nil
}

// copyRange fills dst with the bytes of head||body from offset off on, and
// zeroes what lies past their end.
func copyRange(dst []byte, off int, head, body []byte) {
	n := 0
	if off < len(head) {
		n = copy(dst, head[off:])
		off = len(head)
	}
	if o := off - len(head); o < len(body) {
		n += copy(dst[n:], body[o:])
	}
	clear(dst[n:])
}

// sum returns the SHA-256 of head||body.
func (s *Store) sum(head, body []byte) blocks.Addr {
	if len(head) == 0 {
		return blocks.Sum(body)
	}
	d, _ := s.hashes.Get().(hash.Hash)
	if d == nil {
		d = sha256.New()
	}
	d.Reset()
	d.Write(head)
	d.Write(body)
	var a blocks.Addr
	d.Sum(a[:0])
	s.hashes.Put(d)
	return a
}

// Put implements blocks.Putter: it stores every piece of data and returns
// blocks.Sum(data). It fails (with the first holder's error, wrapped) unless
// every piece was put; pieces already put stay, and a retry is cheap since
// holders ignore a second put of a key. Errors: blocks.ErrTooLarge above
// MaxData, blocks.ErrUnavailable, the holders' errors, ctx's error.
func (s *Store) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	return s.PutParts(ctx, nil, data)
}

// PutParts implements blocks.PartsPutter: Put of head||body, framed
// straight from the two parts. When every holder of the block is
// blocks.Local or a Borrower (which promise not to retain what they are
// given), the pieces are framed in a pooled buffer; otherwise in a fresh
// one.
func (s *Store) PutParts(ctx context.Context, head, body []byte) (blocks.Addr, error) {
	if n := len(head) + len(body); n > MaxData {
		return blocks.Addr{}, fmt.Errorf("redundant: put of %d bytes, more than %d: %w", n, MaxData, blocks.ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return blocks.Addr{}, fmt.Errorf("redundant: put: %w", err)
	}
	// The content address: hashed once, here, from the caller's bytes
	// (which the Putter contract forbids changing during the call).
	addr := s.sum(head, body)
	hs, err := s.placement(addr)
	if err != nil {
		return blocks.Addr{}, err
	}
	var buf *[]byte
	if retainNothing(hs) {
		buf, _ = s.bufs.Get().(*[]byte)
		if buf == nil {
			buf = new([]byte)
		}
		defer s.bufs.Put(buf)
	}
	var one [1][]byte
	pieces := one[:]
	if s.n > 1 {
		pieces = make([][]byte, s.n)
	}
	if err := s.frame(pieces, buf, addr, head, body); err != nil {
		return blocks.Addr{}, err
	}
	if s.n == 1 { // no goroutine, no error slice
		if err := hs[0].PutPiece(ctx, blocks.PieceKey(addr, 0), pieces[0]); err != nil {
			return blocks.Addr{}, fmt.Errorf("redundant: put %v piece 0: %w", addr, err)
		}
		return addr, nil
	}
	errs := s.eachInline(s.n, s.localReplica(hs), func(i int) error {
		return hs[i].PutPiece(ctx, blocks.PieceKey(addr, i), pieces[i])
	})
	for i, err := range errs {
		if err != nil {
			return blocks.Addr{}, fmt.Errorf("redundant: put %v piece %d: %w", addr, i, err)
		}
	}
	return addr, nil
}

// Borrower is an optional capability of a holder that is not
// blocks.Local but shares its second promise: BorrowsOnly reports true
// when PutPiece keeps no reference to the slice it is given once it
// returns (a slot over a local store and network clients that send, or
// copy, the bytes before they return). Put frames the pieces of a block
// whose holders all are Local or Borrowers in a pooled buffer.
type Borrower interface {
	BorrowsOnly() bool
}

// retainNothing reports whether every holder in hs promises not to keep
// the slices PutPiece is given (blocks.Local or Borrower).
func retainNothing(hs []blocks.Holder) bool {
	for _, h := range hs {
		if blocks.HolderIsLocal(h) {
			continue
		}
		if b, ok := h.(Borrower); !ok || !b.BorrowsOnly() {
			return false
		}
	}
	return true
}

// piece states, as a read found them.
const (
	unread  = iota
	good    // intact and belongs to the block
	missing // the holder has no such piece
	corrupt // present but fails a checksum, or is not a piece of this block
	failed  // the holder failed otherwise (unreachable, ...)
)

// where a piece was found, when a holder tells (see ReplicaFinder).
const (
	onHolder   = iota // on the holder's node (or the holder does not tell)
	onFallback        // elsewhere: the holder's node keeps no piece of the block
	nodeAway          // elsewhere: the holder's node could not be asked
)

// piece is what a read found at one rank of a block's holders.
type piece struct {
	state   int
	where   int
	at      int // the index of the key it was read under (good: h.index)
	h       header
	payload []byte // when good
	err     error  // why not good
}

// fetch reads and checks piece i of addr from holder h: its header (magic,
// version, checksum, block address, index, kind, geometry) and its payload
// length. Unless the piece is trusted (hash unset; see trusted), it also
// checks the payload checksum, and hashes a replica (SHA-256 against addr).
func (s *Store) fetch(ctx context.Context, h blocks.Holder, addr blocks.Addr, i int, hash bool) piece {
	return s.fetchInto(ctx, h, addr, i, hash, nil)
}

// fetchInto is fetch reading into dst's array when dst is not nil and h
// implements blocks.PieceGetterInto.
func (s *Store) fetchInto(ctx context.Context, h blocks.Holder, addr blocks.Addr, i int, hash bool, dst []byte) piece {
	rf, finds := h.(ReplicaFinder)
	var p []byte
	var err error
	fg, fallbacks := h.(FallbackGetter)
	switch {
	case finds && (!blocks.HolderIsLocal(h) || s.kind == kindShard):
		// A remote node: its own piece first, whatever its key, in one
		// call, before GetPiece's search of the fallbacks (which would
		// ask several other nodes for this rank's key first). A shard
		// on this node too: its fallbacks may hold this rank's index
		// while this node keeps another, which counts (see Plan).
		var j int
		if p, j, err = rf.FindReplica(ctx, addr, s.n, i); err == nil {
			return s.check(p, addr, j, hash)
		}
		finds = false // asked already
		if fallbacks && errors.Is(err, blocks.ErrUnavailable) {
			p, err = fg.GetFallback(ctx, blocks.PieceKey(addr, i))
			if err == nil {
				pc := s.check(p, addr, i, true) // from another node
				pc.where = nodeAway
				return pc
			}
			break
		}
		// The node keeps no piece of the block: what GetPiece finds is
		// elsewhere (a fallback's copy, checked in full whatever the
		// holder: it comes from another node).
		if p, err = h.GetPiece(ctx, blocks.PieceKey(addr, i)); err == nil {
			pc := s.check(p, addr, i, true)
			pc.where = onFallback
			return pc
		}
	case dst != nil:
		if gi, ok := h.(blocks.PieceGetterInto); ok {
			p, err = gi.GetPieceInto(ctx, blocks.PieceKey(addr, i), dst)
			break
		}
		fallthrough
	default:
		p, err = h.GetPiece(ctx, blocks.PieceKey(addr, i))
	}
	switch {
	case err == nil:
	case errors.Is(err, blocks.ErrNotFound):
		if finds {
			if p, j, ferr := rf.FindReplica(ctx, addr, s.n, i); ferr == nil {
				return s.check(p, addr, j, hash)
			}
		}
		return piece{state: missing, at: i, err: err}
	case errors.Is(err, blocks.ErrCorrupt):
		return piece{state: corrupt, at: i, err: err}
	default:
		return piece{state: failed, at: i, err: err}
	}
	return s.check(p, addr, i, hash)
}

// ReplicaFinder is an optional capability of a holder that stands for one
// node of a cluster, where a piece counts for its block whatever rank
// its node now has: the node's copy of a replicated block, or its shard
// of an erasure-coded one, under whatever index. FindReplica returns the
// piece of the block at addr (of n pieces) that the holder's node keeps,
// the one under index i if it keeps that one, else another, and its
// index; blocks.ErrNotFound when it keeps none. It asks that node only,
// never the fallbacks GetPiece searches. A read asks a remote holder
// this first (one call finds the node's piece under any key); a local
// one, after GetPiece (the cheap common case) found nothing.
//
// Why: pieces are stored under their index (blocks.PieceKey), and the
// holders of a block are ranked. When a holder leaves, the survivors
// ranked after it move up one rank each, so each would lack the key of
// its new rank although it holds a piece. Rewriting a piece at every
// moved rank cost about 2.5 pieces for each piece lost (a replicas = 3
// heal on 4 nodes), 3 for 4+2 shards; following the set of holders
// instead rewrites only the piece that was lost (see Plan, and
// docs/placement.md, "set" against "positional"). An erasure-coded
// block is read from the distinct indexes its holders give. A lone silo
// holding every piece of a block (one node) must not implement it: there
// the pieces are the redundancy, and each must be repaired under its own
// key.
type ReplicaFinder interface {
	FindReplica(ctx context.Context, addr blocks.Addr, n, i int) ([]byte, int, error)
}

// FallbackGetter is an optional capability of a ReplicaFinder holder:
// GetFallback reads the piece under key from where the holder keeps
// copies for its node while that node is away (a cluster slot's
// fallbacks), without asking the node. A read whose FindReplica found
// the node unavailable reads the rank's key this way rather than with
// GetPiece, which would ask the node again (and, for a node cut off
// rather than gone, wait out a second timeout).
type FallbackGetter interface {
	GetFallback(ctx context.Context, key blocks.Addr) ([]byte, error)
}

// check verifies piece i of the block at addr, as read from a holder
// (hash: see fetch).
func (s *Store) check(p []byte, addr blocks.Addr, i int, hash bool) piece {
	hd, err := decodeHeader(p, hash)
	switch {
	case err != nil:
	case hash:
		err = checkPayload(hd, p)
	default:
		// Trusted (a local holder, see trusted): the holder's own CRC-32C
		// covered these exact bytes, header and payload, so the payload's
		// CRC in the header would check them a second time.
		err = checkPayloadLen(hd, p)
	}
	if err == nil {
		switch {
		case hd.addr != addr:
			err = fmt.Errorf("redundant: piece belongs to block %v", hd.addr)
		case int(hd.index) != i || i >= s.n:
			err = fmt.Errorf("redundant: piece says index %d (of %d)", hd.index, s.n)
		case hd.kind != s.kind:
			err = fmt.Errorf("redundant: piece of kind %d, want %d", hd.kind, s.kind)
		case s.kind == kindShard && (int(hd.k) != s.k || int(hd.m) != s.m):
			err = fmt.Errorf("redundant: shard of %d+%d, want %d+%d", hd.k, hd.m, s.k, s.m)
		case s.kind == kindReplica && hash && blocks.Sum(p[HeaderSize:]) != addr:
			err = errors.New("redundant: replica does not hash to its address")
		}
	}
	if err != nil {
		return piece{state: corrupt, at: i, err: fmt.Errorf("%w: %w", blocks.ErrCorrupt, err)}
	}
	return piece{state: good, at: i, h: hd, payload: p[HeaderSize:]}
}

// fetchAll reads the pieces listed in idx in parallel into pcs, hashing
// replicas unless trusted.
func (s *Store) fetchAll(ctx context.Context, hs []blocks.Holder, addr blocks.Addr, pcs []piece, idx []int, full bool) {
	s.each(len(idx), func(j int) error {
		i := idx[j]
		pcs[i] = s.fetch(ctx, hs[i], addr, i, !s.trusted(hs[i], full))
		return nil
	})
}

// trusted reports whether a piece read from h that passes its checksums
// may be used without recomputing the block's SHA-256. That is so for a
// blocks.Local holder on an ordinary read: the holder verified its own
// CRC-32C of key and payload, fetch verifies the piece header's CRC (which
// names the block and the piece index) and the payload's CRC, and nothing
// on this node forges pieces on purpose, so the hash would only catch what
// the CRCs already catch (rot, torn writes, misplaced records) at many
// times their cost (it was a quarter of the CPU of a large read). A remote
// holder is another trust domain and its bytes crossed a network: they are
// always hashed. Scrub (full) always hashes, so a silent CRC collision is
// still found eventually, and any read that meets a bad piece falls back
// to the verified slow paths.
func (s *Store) trusted(h blocks.Holder, full bool) bool {
	return !full && blocks.HolderIsLocal(h)
}

// localReplica returns the index of the first of hs that is trusted on an
// ordinary read (a blocks.Local holder), or -1. In a cluster where this
// node holds one replica of each block, that is the replica a read takes
// first: from the local disk, without the network or a rehash, whatever
// its index.
func (s *Store) localReplica(hs []blocks.Holder) int {
	for i, h := range hs {
		if s.trusted(h, false) {
			return i
		}
	}
	return -1
}

// PieceSource is an optional method of a holder that reads every piece
// through another holder (a placement slot over this node's silo): it
// returns that holder. GetMany batches the pieces of blocks whose holders
// have the same source (blocks.SameHolder) into one GetPieces call.
type PieceSource interface {
	PieceSource() blocks.Holder
}

// source returns h's PieceSource, or h.
func source(h blocks.Holder) blocks.Holder {
	if ps, ok := h.(PieceSource); ok {
		if src := ps.PieceSource(); src != nil {
			return src
		}
	}
	return h
}

// Get implements blocks.Getter. It reads as few pieces as it can (one
// replica of a replicated block: the first on a local holder, else piece
// 0; the k data pieces of an erasure-coded one), more
// when those fail, verifies blocks.Sum of the result and repairs the bad
// pieces it met (see the package comment). Errors: blocks.ErrNotFound when
// no piece was found anywhere; blocks.ErrCorrupt when pieces exist but no
// intact block can be built from them; blocks.ErrUnavailable when holders
// failed and a retry might succeed; ctx's error.
func (s *Store) Get(ctx context.Context, addr blocks.Addr) ([]byte, error) {
	data, _, err := s.read(ctx, addr, false, nil)
	return data, err
}

// GetInto implements blocks.GetterInto: Get that reads the first replica
// into dst's array when its holder implements blocks.PieceGetterInto (the
// block is then dst[HeaderSize:], plus the holder's slack). Other pieces,
// and erasure-coded blocks, are read into fresh buffers.
func (s *Store) GetInto(ctx context.Context, addr blocks.Addr, dst []byte) ([]byte, error) {
	data, _, err := s.read(ctx, addr, false, dst)
	return data, err
}

// GetSplit implements blocks.SplitGetter for a replicated block with a
// replica on a local holder that reads pieces split (a silo): the piece's
// header and head into scratch, the rest into tail, trusted as any read
// from a local holder is (see trusted: the holder's checksum covered it).
// Every other block, and any failure, reports false (read it with Get).
func (s *Store) GetSplit(ctx context.Context, addr blocks.Addr, head, tail, scratch []byte) bool {
	if s.kind != kindReplica || len(scratch) < HeaderSize+len(head) {
		return false
	}
	hs, err := s.placement(addr)
	if err != nil {
		return false
	}
	r := s.localReplica(hs)
	if r < 0 {
		return false
	}
	g, ok := hs[r].(blocks.PieceSplitGetter)
	if !ok {
		return false
	}
	ph := scratch[:HeaderSize+len(head)]
	if !g.GetPieceSplit(ctx, blocks.PieceKey(addr, r), ph, tail, scratch[len(ph):]) {
		return false
	}
	hd, err := parseHeader(ph)
	if err != nil || hd.kind != s.kind || hd.addr != addr || int(hd.index) != r || hd.payloadLen() != len(head)+len(tail) {
		return false
	}
	copy(head, ph[HeaderSize:])
	return true
}

// localBatch is the replicated blocks of a batch whose replica lies on a
// local holder (see localReplica) through the same source (see
// PieceSource): the first such holder, keys[j] the piece of block idx[j],
// replica rep[j]. Blocks elsewhere, or local through another source, are
// in rest; those whose placement failed, in failed.
type localBatch struct {
	h           blocks.Holder
	keys        []blocks.Addr
	idx, rep    []int
	rest        []int
	failed      []int
	placeErrors []error
	pieces      [][]byte // ViewMany's scratch
}

// batchLocal sorts addrs into a localBatch, taken from localBatches: the
// caller gives it back with put once done with its slices.
func (s *Store) batchLocal(addrs []blocks.Addr) *localBatch {
	b := localBatches.Get().(*localBatch)
	var src blocks.Holder
	for i, a := range addrs {
		if s.kind != kindReplica {
			b.rest = append(b.rest, i)
			continue
		}
		hs, err := s.placement(a)
		if err != nil {
			b.failed = append(b.failed, i)
			b.placeErrors = append(b.placeErrors, err)
			continue
		}
		r := s.localReplica(hs)
		if r < 0 || (b.h != nil && !blocks.SameHolder(src, source(hs[r]))) {
			b.rest = append(b.rest, i)
			continue
		}
		if b.h == nil {
			b.h, src = hs[r], source(hs[r])
		}
		b.keys = append(b.keys, blocks.PieceKey(a, r))
		b.idx = append(b.idx, i)
		b.rep = append(b.rep, r)
	}
	return b
}

// localBatches pools the batches of GetMany and ViewMany. A 1 MiB read is
// a batch of 256 chunks, whose slices (keys alone are 8 KiB) were grown
// afresh on every read: measured over NBD (fio, 1 MiB sequential reads at
// queue depth 8), batchLocal's allocations and the page faults of the
// fresh heap they landed on were a tenth of the server's CPU.
var localBatches = sync.Pool{New: func() any { return new(localBatch) }}

// put empties b, keeping its slices' room unless they grew past
// maxKeptBatch, and pools it.
func (b *localBatch) put() {
	if cap(b.keys) > maxKeptBatch {
		*b = localBatch{}
	}
	b.h = nil
	clear(b.placeErrors)
	clear(b.pieces)
	b.keys, b.idx, b.rep, b.rest = b.keys[:0], b.idx[:0], b.rep[:0], b.rest[:0]
	b.failed, b.placeErrors, b.pieces = b.failed[:0], b.placeErrors[:0], b.pieces[:0]
	localBatches.Put(b)
}

// maxKeptBatch bounds the blocks a pooled localBatch keeps room for.
const maxKeptBatch = 1 << 14

// GetMany implements blocks.ManyGetter. Replicated blocks with a replica
// on a local holder that reads many pieces at once (blocks.PiecesGetter),
// the same one for all (see PieceSource), are read together, the pieces
// trusted as on any read from a local holder (see trusted); every other
// block, and every block whose batched piece fails, goes through Get
// (other replicas, repair, the same errors).
func (s *Store) GetMany(ctx context.Context, addrs []blocks.Addr, buf *[]byte) ([][]byte, []error) {
	out := make([][]byte, len(addrs))
	errs := make([]error, len(addrs))
	b := s.batchLocal(addrs)
	defer b.put()
	for j, i := range b.failed {
		errs[i] = b.placeErrors[j]
	}
	slow := b.rest
	if pg, ok := b.h.(blocks.PiecesGetter); ok {
		pieces, perrs := pg.GetPieces(ctx, b.keys, buf)
		var lacked []int
		for j, i := range b.idx {
			if perrs[j] == nil {
				if p := s.check(pieces[j], addrs[i], b.rep[j], false); p.state == good {
					out[i] = p.payload
					continue
				}
			} else if errors.Is(perrs[j], blocks.ErrNotFound) {
				lacked = append(lacked, j)
			}
			slow = append(slow, i)
		}
		if alt := s.otherKeys(b, addrs, lacked); alt != nil {
			// Another buffer: the pieces above point into buf.
			pieces, perrs := pg.GetPieces(ctx, alt.keys, new([]byte))
			for x, j := range alt.pos {
				i := b.idx[j]
				if out[i] != nil || perrs[x] != nil {
					continue
				}
				if p := s.check(pieces[x], addrs[i], alt.rep[x], false); p.state == good {
					out[i] = p.payload
				}
			}
			slow = slices.DeleteFunc(slow, func(i int) bool { return out[i] != nil })
		}
	} else {
		slow = append(slow, b.idx...)
	}
	for _, i := range slow {
		out[i], errs[i] = s.Get(ctx, addrs[i])
	}
	return out, errs
}

// ViewMany implements blocks.Viewer: the payloads of replicated blocks
// whose replica lies on a local holder that hands out views
// (blocks.PieceViewer), the same one for all (see PieceSource), checked
// as GetMany checks them (trusted: the holder's CRC covered the piece);
// nil for every other block.
func (s *Store) ViewMany(ctx context.Context, addrs []blocks.Addr, views [][]byte) (release func()) {
	b := s.batchLocal(addrs)
	defer b.put()
	pv, ok := b.h.(blocks.PieceViewer)
	if !ok || len(b.keys) == 0 {
		return blocks.NoRelease
	}
	b.pieces = slices.Grow(b.pieces[:0], len(b.keys))[:len(b.keys)]
	pieces := b.pieces
	release = pv.ViewPieces(ctx, b.keys, pieces)
	var lacked []int
	for j, i := range b.idx {
		if pieces[j] == nil {
			lacked = append(lacked, j)
			continue
		}
		if p := s.check(pieces[j], addrs[i], b.rep[j], false); p.state == good {
			views[i] = p.payload
		}
	}
	if alt := s.otherKeys(b, addrs, lacked); alt != nil {
		more := make([][]byte, len(alt.keys))
		release2 := pv.ViewPieces(ctx, alt.keys, more)
		for x, j := range alt.pos {
			i := b.idx[j]
			if views[i] != nil || more[x] == nil {
				continue
			}
			if p := s.check(more[x], addrs[i], alt.rep[x], false); p.state == good {
				views[i] = p.payload
			}
		}
		first := release
		release = func() { first(); release2() }
	}
	return release
}

// altKeys lists the other replica keys of some blocks of a localBatch:
// pos[x] is the batch position of keys[x], rep[x] its replica index.
type altKeys struct {
	keys []blocks.Addr
	pos  []int
	rep  []int
}

// otherKeys returns, for the batch positions lacked whose piece the local
// holder does not have under its rank's key, the keys of the blocks' other
// replicas, for a second batch on the same holder: when the holder finds
// replicas (ReplicaFinder), its node may keep its copy under the key of
// the rank it had before a node ranked ahead of it left. Without this,
// each such block fell to Get, one at a time, on every read. nil when
// there is nothing to look for.
func (s *Store) otherKeys(b *localBatch, addrs []blocks.Addr, lacked []int) *altKeys {
	if len(lacked) == 0 || s.kind != kindReplica || s.n < 2 {
		return nil
	}
	if _, ok := b.h.(ReplicaFinder); !ok {
		return nil
	}
	alt := &altKeys{}
	for _, j := range lacked {
		a := addrs[b.idx[j]]
		for r := range s.n {
			if r != b.rep[j] {
				alt.keys = append(alt.keys, blocks.PieceKey(a, r))
				alt.pos = append(alt.pos, j)
				alt.rep = append(alt.rep, r)
			}
		}
	}
	return alt
}

// read gets the block at addr, reading every piece when full, and repairs
// what it found bad. It returns the number of pieces repaired. dst, when
// not nil, is where the first replica read may go (see GetInto).
func (s *Store) read(ctx context.Context, addr blocks.Addr, full bool, dst []byte) ([]byte, int, error) {
	return s.readFix(ctx, addr, full, dst, true)
}

// readFix is read, repairing what it found bad only when fix is set
// (RepairMissing writes its own fixes: repairing in its read too sent an
// erasure-coded block's missing shard twice, the read having to rebuild
// the block whenever the shard was a data shard).
func (s *Store) readFix(ctx context.Context, addr blocks.Addr, full bool, dst []byte, fix bool) ([]byte, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("redundant: get %v: %w", addr, err)
	}
	hs, err := s.placement(addr)
	if err != nil {
		return nil, 0, err
	}
	if s.kind == kindReplica && !full {
		// The common case, without allocating: the first replica is intact,
		// so there is nothing to repair.
		// The first replica on a trusted (local) holder, else replica 0.
		first := max(s.localReplica(hs), 0)
		p := s.fetchInto(ctx, hs[first], addr, first, !s.trusted(hs[first], false), dst)
		if p.state == good {
			return p.payload, 0, nil
		}
		pcs := make([]piece, s.n)
		pcs[first] = p
		data := s.readReplicas(ctx, hs, addr, pcs, first, false)
		if err := ctx.Err(); err != nil {
			return nil, 0, fmt.Errorf("redundant: get %v: %w", addr, err)
		}
		if data == nil {
			return nil, 0, s.noBlock(addr, pcs)
		}
		if !fix {
			return data, 0, nil
		}
		return data, s.repair(DeferRepairSyncs(ctx), hs, addr, data, pcs, false), nil
	}
	pcs := make([]piece, s.n)
	var data []byte
	suspect := full // compare every good piece with the rebuilt block
	if s.kind == kindReplica {
		data = s.readReplicas(ctx, hs, addr, pcs, -1, full)
	} else {
		var slow bool
		data, slow = s.readShards(ctx, hs, addr, pcs, full)
		suspect = suspect || slow
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("redundant: get %v: %w", addr, err)
	}
	if data == nil {
		return nil, 0, s.noBlock(addr, pcs)
	}
	if !fix {
		return data, 0, nil
	}
	if !full {
		ctx = DeferRepairSyncs(ctx) // a read's repair (see the package doc)
	}
	return data, s.repair(ctx, hs, addr, data, pcs, suspect), nil
}

// readReplicas returns the first intact replica, reading all of them at
// once when full, else one at a time in order, except replica done (-1:
// none), which is already in pcs.
func (s *Store) readReplicas(ctx context.Context, hs []blocks.Holder, addr blocks.Addr, pcs []piece, done int, full bool) []byte {
	if full {
		s.fetchAll(ctx, hs, addr, pcs, seq(0, s.n), true)
	}
	for i := range pcs {
		if !full && i != done {
			pcs[i] = s.fetch(ctx, hs[i], addr, i, !s.trusted(hs[i], false))
			if ctx.Err() != nil {
				return nil
			}
		}
		if pcs[i].state == good {
			return pcs[i].payload
		}
	}
	return nil
}

// readShards rebuilds an erasure-coded block: from the data pieces when they
// are intact, else from any k intact pieces. pcs is by rank: the holder
// ranked r may give a piece of another index than r (see ReplicaFinder),
// and the block is rebuilt from the distinct indexes found. slow reports
// that the data pieces alone did not do.
func (s *Store) readShards(ctx context.Context, hs []blocks.Holder, addr blocks.Addr, pcs []piece, full bool) (data []byte, slow bool) {
	if full {
		s.fetchAll(ctx, hs, addr, pcs, seq(0, s.n), true)
	} else {
		s.fetchAll(ctx, hs, addr, pcs, seq(0, s.k), false)
		if ctx.Err() != nil {
			return nil, false
		}
		// The data pieces alone, each checksum-verified; unhashed only when
		// every one of them comes from a trusted (local) holder.
		at := s.byIndex(pcs)
		if data := s.join(pcs, at); data != nil && (s.localRanks(hs, pcs, at[:s.k]) || blocks.Sum(data) == addr) {
			return data, false
		}
		s.fetchAll(ctx, hs, addr, pcs, seq(s.k, s.n), false)
	}
	if ctx.Err() != nil {
		return nil, true
	}
	// All good pieces must agree on the block's length; trust the first.
	first := -1
	for r := range pcs {
		if pcs[r].state != good {
			continue
		}
		if first >= 0 && pcs[r].h.length != pcs[first].h.length {
			pcs[r] = piece{state: corrupt, at: pcs[r].at, err: fmt.Errorf("%w: redundant: shard length disagrees", blocks.ErrCorrupt)}
			continue
		}
		if first < 0 {
			first = r
		}
	}
	at := s.byIndex(pcs)
	var goods []int // piece indexes found intact
	for j, r := range at {
		if r >= 0 {
			goods = append(goods, j)
		}
	}
	if len(goods) < s.k {
		return nil, true
	}
	// Try combinations of k good pieces, the data pieces first, until one
	// rebuilds a block with the right address. Each piece passed its own
	// checksum, so the first combination nearly always does.
	const maxTries = 256
	comb := seq(0, s.k) // indexes into goods
	for try := 0; try < maxTries; try++ {
		shards := make([][]byte, s.n)
		for _, g := range comb {
			shards[goods[g]] = pcs[at[goods[g]]].payload
		}
		if s.enc.ReconstructData(shards) == nil {
			if data := joinShards(shards[:s.k], int(pcs[first].h.length)); data != nil && blocks.Sum(data) == addr {
				return data, true
			}
		}
		if !nextComb(comb, len(goods)) {
			break
		}
	}
	return nil, true
}

// byIndex returns, for each piece index, the rank in pcs of the first
// intact piece with that index, or -1.
func (s *Store) byIndex(pcs []piece) []int {
	at := make([]int, s.n)
	for j := range at {
		at[j] = -1
	}
	for r := range pcs {
		if pcs[r].state != good {
			continue
		}
		if j := int(pcs[r].h.index); j < s.n && at[j] < 0 {
			at[j] = r
		}
	}
	return at
}

// localRanks reports whether every rank in ranks has a trusted (local)
// holder that gave its piece from this node (pcs, by rank).
func (s *Store) localRanks(hs []blocks.Holder, pcs []piece, ranks []int) bool {
	for _, r := range ranks {
		if r < 0 || !s.trusted(hs[r], false) || pcs[r].where != onHolder {
			return false
		}
	}
	return true
}

// join concatenates the k data pieces (at[i] is the rank in pcs that gave
// piece i; see byIndex), if they are all there, agree on the length and
// the padding of the last one is zero (as encode leaves it).
func (s *Store) join(pcs []piece, at []int) []byte {
	shards := make([][]byte, s.k)
	var length uint32
	for i := range shards {
		r := at[i]
		if r < 0 || (i > 0 && pcs[r].h.length != length) {
			return nil
		}
		length = pcs[r].h.length
		shards[i] = pcs[r].payload
	}
	n := int(length)
	for i, sh := range shards {
		for _, b := range sh[min(len(sh), max(0, n-i*len(sh))):] { // the padding
			if b != 0 {
				return nil
			}
		}
	}
	return joinShards(shards, n)
}

// joinShards concatenates data shards into a new n-byte block.
func joinShards(shards [][]byte, n int) []byte {
	data := make([]byte, 0, n)
	for _, sh := range shards {
		if len(data)+len(sh) > n {
			sh = sh[:n-len(data)]
		}
		data = append(data, sh...)
	}
	if len(data) != n {
		return nil
	}
	return data
}

// nextComb advances comb, a strictly increasing k-subset of 0..n-1, to the
// next one in lexicographic order; false after the last.
func nextComb(comb []int, n int) bool {
	k := len(comb)
	i := k - 1
	for i >= 0 && comb[i] == n-k+i {
		i--
	}
	if i < 0 {
		return false
	}
	comb[i]++
	for j := i + 1; j < k; j++ {
		comb[j] = comb[j-1] + 1
	}
	return true
}

func seq(from, to int) []int {
	s := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

// noBlock explains why no intact block could be read from pcs.
func (s *Store) noBlock(addr blocks.Addr, pcs []piece) error {
	var found, bad, fail int
	var errs []error
	for i, p := range pcs {
		switch p.state {
		case good:
			found++
		case corrupt:
			bad++
			errs = append(errs, fmt.Errorf("piece %d: %w", i, p.err))
		case failed:
			fail++
			errs = append(errs, fmt.Errorf("piece %d: %w", i, p.err))
		}
	}
	cause := errors.Join(errs...)
	switch {
	case fail > 0 && found+fail >= s.k:
		return fmt.Errorf("redundant: get %v: %w: %w", addr, blocks.ErrUnavailable, cause)
	case found+bad > 0:
		return fmt.Errorf("redundant: get %v: %d intact of %d pieces, %d needed: %w", addr, found, s.n, s.k, errors.Join(blocks.ErrCorrupt, cause))
	default:
		return fmt.Errorf("redundant: get %v: %w", addr, errors.Join(blocks.ErrNotFound, cause))
	}
}

// repair rewrites, from data, every piece of pcs (by rank) found missing
// or bad, and (when suspect, or when some piece was bad) every
// good-looking piece that differs from what encoding data gives, as Plan
// places them. It returns how many pieces it wrote.
func (s *Store) repair(ctx context.Context, hs []blocks.Holder, addr blocks.Addr, data []byte, pcs []piece, suspect bool) int {
	compare := suspect
	for i := range pcs {
		if pcs[i].state == missing || pcs[i].state == corrupt {
			compare = true
		}
	}
	if !compare {
		return 0
	}
	pieces, err := s.encode(addr, data)
	if err != nil {
		s.log.Error("redundant: cannot re-encode for repair", "addr", addr, "err", err)
		return 0
	}
	held := make([]Holding, len(pcs))
	reasons := make([]error, len(pcs))
	for r, p := range pcs {
		held[r] = Holding{Bad: -1}
		switch p.state {
		case good:
			j := int(p.h.index)
			switch {
			case p.where == nodeAway:
				held[r].Unknown = true
			case !bytes.Equal(p.payload, pieces[j][HeaderSize:]):
				if p.where == onHolder {
					held[r].Bad = j
				}
				reasons[r] = errDisagrees
			case p.where == onFallback:
				held[r].Pending = []int{j}
			default:
				held[r].Has = []int{j}
			}
		case missing:
			reasons[r] = p.err
		case corrupt:
			held[r].Bad = p.at
			reasons[r] = p.err
		default: // failed, or not read: it may well hold its piece
			held[r].Unknown = true
		}
	}
	fixes := s.Plan(held)
	if len(fixes) == 0 {
		return 0
	}
	return s.rewrite(ctx, hs, addr, pieces, fixes, reasons)
}

// errDisagrees is the reason for rewriting a piece whose checksums pass
// but whose bytes are not what encoding the rebuilt block gives.
var errDisagrees = errors.New("redundant: shard disagrees with the rebuilt block")

// rewrite carries out fixes (see Plan) from pieces, in parallel: for each,
// it deletes the bad piece the holder keeps (Fix.Bad; a holder keeps a
// key it has, so a bad piece must go first; a missing one is not deleted:
// in a cluster, a delete reaches the piece's fallbacks too, and a copy
// there may be the only good one), puts the piece, and syncs the holder
// unless ctx defers syncs (DeferRepairSyncs). reasons[r], when given,
// says why the holder ranked r gets a piece. It logs what fails, and
// returns how many pieces it wrote.
func (s *Store) rewrite(ctx context.Context, hs []blocks.Holder, addr blocks.Addr, pieces [][]byte, fixes []Fix, reasons []error) int {
	errs := s.each(len(fixes), func(x int) error {
		f := fixes[x]
		h := hs[f.Holder]
		if f.Bad >= 0 {
			if err := h.DeletePiece(ctx, blocks.PieceKey(addr, f.Bad)); err != nil {
				return err
			}
		}
		if err := h.PutPiece(ctx, blocks.PieceKey(addr, f.Piece), pieces[f.Piece]); err != nil {
			return err
		}
		if syncDeferred(ctx) {
			return nil // the caller syncs (DeferRepairSyncs)
		}
		return h.Sync(ctx)
	})
	n := 0
	for x, err := range errs {
		f := fixes[x]
		var reason error
		if f.Holder < len(reasons) {
			reason = reasons[f.Holder]
		}
		if err != nil {
			s.log.Warn("redundant: repair failed", "addr", addr, "holder", f.Holder, "piece", f.Piece, "reason", reason, "err", err)
			continue
		}
		n++
		// Debug: healing after a node loss rewrites hundreds of thousands
		// of pieces; the caller counts them (anti-entropy logs a line per
		// pass, status shows the totals).
		s.log.Debug("redundant: repaired piece", "addr", addr, "holder", f.Holder, "piece", f.Piece, "reason", reason)
	}
	return n
}

// Has implements blocks.Store: true when piece 0 is held, or else when
// enough pieces are held to rebuild the block (k, or 1 replica). It reads
// no piece and verifies nothing.
func (s *Store) Has(ctx context.Context, addr blocks.Addr) (bool, error) {
	hs, err := s.placement(addr)
	if err != nil {
		return false, err
	}
	ok, err := hs[0].HasPiece(ctx, blocks.PieceKey(addr, 0))
	if err == nil && ok {
		return true, nil
	}
	var mu sync.Mutex
	held := 0
	errs := s.each(s.n-1, func(j int) error {
		ok, err := hs[j+1].HasPiece(ctx, blocks.PieceKey(addr, j+1))
		if ok {
			mu.Lock()
			held++
			mu.Unlock()
		}
		return err
	})
	if held >= s.k {
		return true, nil
	}
	if err := errors.Join(append(errs, err)...); err != nil {
		return false, fmt.Errorf("redundant: has %v: %w", addr, err)
	}
	return false, nil
}

// Delete implements blocks.Store: it deletes every piece of the block.
// Deleting an absent block is not an error. Errors are the holders'.
func (s *Store) Delete(ctx context.Context, addr blocks.Addr) error {
	hs, err := s.placement(addr)
	if err != nil {
		return err
	}
	errs := s.each(s.n, func(i int) error {
		return hs[i].DeletePiece(ctx, blocks.PieceKey(addr, i))
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("redundant: delete %v: %w", addr, err)
	}
	return nil
}

// Sync implements blocks.Store: it syncs every holder of Options.All in
// parallel, and fails if any of them fails.
func (s *Store) Sync(ctx context.Context) error {
	all := s.all()
	errs := s.each(len(all), func(i int) error { return all[i].Sync(ctx) })
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("redundant: sync: %w", err)
	}
	return nil
}

// SyncHolders implements blocks.SyncHolders: Sync syncs exactly the holders
// of Options.All. (With none, the result is nil: "call Sync", a no-op.)
func (s *Store) SyncHolders() []blocks.Holder {
	return append([]blocks.Holder(nil), s.all()...)
}

// Walk implements blocks.Walker: it calls fn once for the address of each
// block with at least one piece on a holder of Options.All that implements
// blocks.Walker. It reads every piece as the holder's walk gives its key
// (holders have no cheaper way to show a header), so it costs a full read
// of the holders, and fn runs inside the holder's walk (the silo's walk
// holds no lock while it calls back, and a piece put or deleted meanwhile
// is seen or not, as blocks.Walker allows); it keeps the set of addresses
// seen in memory (32 bytes per block). (It listed each holder's keys
// first: 32 bytes of memory more per piece.) Pieces whose header does
// not decode, or that sit under a key their header does not give, are
// skipped and logged. Holders that do not implement blocks.Walker are
// skipped. An error from fn ends the walk and is returned.
func (s *Store) Walk(ctx context.Context, fn func(addr blocks.Addr) error) error {
	seen := make(map[blocks.Addr]struct{})
	for _, h := range s.all() {
		w, ok := h.(blocks.Walker)
		if !ok {
			continue
		}
		if err := w.Walk(ctx, func(key blocks.Addr) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			p, err := h.GetPiece(ctx, key)
			if err != nil {
				if !errors.Is(err, blocks.ErrNotFound) { // else deleted during the walk
					s.log.Warn("redundant: walk: unreadable piece", "key", key, "err", err)
				}
				return nil
			}
			hd, err := parseHeader(p)
			if err == nil && blocks.PieceKey(hd.addr, int(hd.index)) != key {
				err = fmt.Errorf("redundant: piece %d of %v stored under key %v", hd.index, hd.addr, key)
			}
			if err != nil {
				s.log.Warn("redundant: walk: not a piece", "key", key, "err", err)
				return nil
			}
			if _, dup := seen[hd.addr]; dup {
				return nil
			}
			seen[hd.addr] = struct{}{}
			return fn(hd.addr)
		}); err != nil {
			return fmt.Errorf("redundant: walk: %w", err)
		}
	}
	return nil
}

// Scrub walks every block (see Walk), reads all of its pieces, verifies
// them and repairs those that are missing or bad. It calls fn for each block
// with the number of pieces repaired and nil, or the error that left the
// block unreadable (blocks.ErrCorrupt, ...). An error from fn ends the
// scrub and is returned.
func (s *Store) Scrub(ctx context.Context, fn func(addr blocks.Addr, repaired int, err error) error) error {
	return s.Walk(ctx, func(addr blocks.Addr) error {
		_, n, err := s.read(ctx, addr, true, nil)
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			s.log.Error("redundant: scrub: block unreadable", "addr", addr, "err", err)
		}
		return fn(addr, n, err)
	})
}
