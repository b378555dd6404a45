// Package sealed is the compress-and-encrypt stage of Cairn's block
// pipeline: a blocks.Store that wraps another blocks.Store (normally the
// redundancy layer) and applies one volume's compression and encryption
// policy to every block on its way in, and undoes it, authenticated, on its
// way out.
//
// # Keys and nonces
//
// The volume key (32 bytes) is never used directly: HKDF-SHA256 derives an
// encryption key (info "cairn/sealed/v1/encryption") and a nonce key (info
// "cairn/sealed/v1/nonce") from it. With Options.Dedup the nonce is
// convergent (SIV-like): the first bytes of HMAC-SHA256(nonce key, header
// bytes || plaintext). Equal plaintext in one volume then seals to equal
// bytes, so it gets one address and is stored once; a volume with another
// key shares nothing with it. The cost is the one convergent encryption
// always has: someone who can read the stored blocks learns which blocks of
// the volume are equal. Without Dedup, nonces are random, and equal
// plaintexts give different blocks. AES-256-GCM's nonce is 96 bits, so a
// volume should seal fewer than about 2^32 blocks per key with random nonces
// (convergent nonces repeat only for equal plaintext, which is harmless, or
// on an HMAC collision at 96 bits); XChaCha20-Poly1305's 192-bit nonce has
// no practical limit.
//
// # Format
//
// Version 1 of a sealed block, as stored in the inner store:
//
//	offset    size  field
//	0         1     header: bits 7..4 version (1); bit 3 compressed;
//	                bits 2..0 cipher (0 none, 1 aes-256-gcm, 2 xchacha20-poly1305)
//	1         4     when compressed: plaintext length, big-endian (1..blocks.MaxBlock)
//	A         N     when a cipher is set: nonce (N = 12 for AES-GCM, 24 for XChaCha)
//	A+N       rest  the body; when a cipher is set, sealed by the AEAD with the
//	                bytes 0..A-1 as additional data (so ciphertext + 16-byte tag)
//
// The body is the lz4 block (pierrec/lz4 block format) of the plaintext when
// compressed, else the plaintext itself. Compression is used only when it
// saves bytes. With no cipher the block is the header and the body: it is
// then protected only by the inner store's content address.
package sealed

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/pierrec/lz4/v4"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"

	"cairn/blocks"
	"cairn/policies"
)

var (
	_ blocks.Store       = (*Store)(nil)
	_ blocks.SizedPutter = (*Store)(nil)
	_ blocks.SyncHolders = (*Store)(nil)
	_ blocks.GetterInto  = (*Store)(nil)
	_ blocks.ManyGetter  = (*Store)(nil)
	_ blocks.Viewer      = (*Store)(nil)
)

// Format constants (version 1).
const (
	formatVersion  = 1
	flagCompressed = 1 << 3
	cipherMask     = 0x07
	cipherNone     = 0
	cipherAES      = 1
	cipherXChaCha  = 2
	lengthSize     = 4
	// MaxOverhead is the most bytes sealing adds to a block: header, length
	// field, the longest nonce and a tag.
	MaxOverhead = 1 + lengthSize + chacha20poly1305.NonceSizeX + 16
)

// KeySize is the size of a volume key.
const KeySize = 32

// Options configure a Store.
type Options struct {
	// Compression is CompressionNone (or "") or CompressionLZ4.
	Compression policies.Compression
	// Cipher is CipherNone (or ""), CipherAES256 or CipherXChaCha.
	Cipher policies.Cipher
	// Key is the volume key, KeySize bytes, required when Cipher is set and
	// ignored otherwise. New copies what it needs; the caller keeps Key.
	Key []byte
	// Dedup makes the nonce convergent: equal plaintext seals to equal bytes
	// (and so to one address) within the volume. See the package comment.
	Dedup bool
}

// Store seals blocks into an inner blocks.Store. It is safe for concurrent
// use. Addresses are the inner store's: the hash of the sealed bytes.
type Store struct {
	inner    blocks.Store
	compress bool
	cipherID byte
	aead     cipher.AEAD // nil when cipherID is cipherNone
	dedup    bool
	macs     sync.Pool // of hash.Hash: HMAC-SHA256 under the nonce key
	lz4s     sync.Pool // of *lz4.Compressor
	bufs     sync.Pool // of *[]byte: compression and encryption scratch space
}

// New returns a Store that seals into inner under opts. It fails on an
// unknown codec or cipher, or a key of the wrong size.
func New(inner blocks.Store, opts Options) (*Store, error) {
	s := &Store{inner: inner, dedup: opts.Dedup}
	switch opts.Compression {
	case "", policies.CompressionNone:
	case policies.CompressionLZ4:
		s.compress = true
	default:
		return nil, fmt.Errorf("sealed: unknown compression %q: use %q or %q", opts.Compression, policies.CompressionNone, policies.CompressionLZ4)
	}
	switch opts.Cipher {
	case "", policies.CipherNone:
		s.cipherID = cipherNone
		return s, nil
	case policies.CipherAES256:
		s.cipherID = cipherAES
	case policies.CipherXChaCha:
		s.cipherID = cipherXChaCha
	default:
		return nil, fmt.Errorf("sealed: unknown cipher %q: use %q, %q or %q", opts.Cipher, policies.CipherNone, policies.CipherAES256, policies.CipherXChaCha)
	}
	if len(opts.Key) != KeySize {
		return nil, fmt.Errorf("sealed: cipher %s needs a %d-byte key, got %d bytes", opts.Cipher, KeySize, len(opts.Key))
	}
	encKey, err := derive(opts.Key, "cairn/sealed/v1/encryption")
	if err != nil {
		return nil, err
	}
	nonceKey, err := derive(opts.Key, "cairn/sealed/v1/nonce")
	if err != nil {
		return nil, err
	}
	if s.cipherID == cipherAES {
		b, err := aes.NewCipher(encKey)
		if err != nil {
			return nil, fmt.Errorf("sealed: %w", err)
		}
		s.aead, err = cipher.NewGCM(b)
		if err != nil {
			return nil, fmt.Errorf("sealed: %w", err)
		}
	} else {
		s.aead, err = chacha20poly1305.NewX(encKey)
		if err != nil {
			return nil, fmt.Errorf("sealed: %w", err)
		}
	}
	s.macs.New = func() any { return hmac.New(sha256.New, nonceKey) }
	return s, nil
}

func derive(key []byte, info string) ([]byte, error) {
	out := make([]byte, 32)
	if _, err := io.ReadFull(hkdf.New(sha256.New, key, nil, []byte(info)), out); err != nil {
		return nil, fmt.Errorf("sealed: derive key: %w", err)
	}
	return out, nil
}

// seal returns the sealed form of p in a new slice.
func (s *Store) seal(p []byte) ([]byte, error) {
	var out []byte
	err := s.sealTo(p, func(head, body []byte) error {
		out = append(append(make([]byte, 0, len(head)+len(body)), head...), body...)
		return nil
	})
	return out, err
}

// sealTo seals p and passes the sealed block to put as two parts, head and
// body (the block is head||body), valid only during the call. With no
// cipher the body is p itself or the compressed form in a pooled buffer,
// so nothing is copied; with a cipher the whole block is in body, in a
// pooled buffer, and head is empty.
func (s *Store) sealTo(p []byte, put func(head, body []byte) error) error {
	var head [1 + lengthSize]byte
	head[0] = formatVersion<<4 | s.cipherID
	ad := head[:1]
	body := p
	if s.compress && len(p) > lengthSize+1 {
		c, _ := s.lz4s.Get().(*lz4.Compressor)
		if c == nil {
			c = new(lz4.Compressor)
		}
		// A destination smaller than the input: lz4 gives up (n == 0 or an
		// error) when the data does not shrink enough to pay for the length.
		bp := s.getBuf(len(p))
		defer s.bufs.Put(bp)
		buf := (*bp)[:len(p)-lengthSize-1]
		n, err := c.CompressBlock(p, buf)
		s.lz4s.Put(c)
		if err == nil && n > 0 && n+lengthSize < len(p) {
			head[0] |= flagCompressed
			binary.BigEndian.PutUint32(head[1:], uint32(len(p)))
			ad = head[:]
			body = buf[:n]
		}
	}
	if s.aead == nil {
		return put(ad, body)
	}
	ns := s.aead.NonceSize()
	op := s.getBuf(len(ad) + ns + len(body) + s.aead.Overhead())
	defer s.bufs.Put(op)
	out := (*op)[:len(ad)+ns]
	copy(out, ad)
	var nonce [chacha20poly1305.NonceSizeX]byte
	if s.dedup {
		mac := s.macs.Get().(hash.Hash)
		mac.Reset()
		mac.Write(ad)
		mac.Write(p)
		var sum [sha256.Size]byte
		mac.Sum(sum[:0])
		s.macs.Put(mac)
		copy(nonce[:ns], sum[:])
	} else if _, err := rand.Read(nonce[:ns]); err != nil {
		return fmt.Errorf("sealed: nonce: %w", err)
	}
	copy(out[len(ad):], nonce[:ns])
	return put(nil, s.aead.Seal(out, nonce[:ns], body, ad))
}

// getBuf returns a pooled buffer of at least n bytes (capacity); the
// caller puts it back in s.bufs when done.
func (s *Store) getBuf(n int) *[]byte {
	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	if cap(*bp) < n {
		*bp = make([]byte, n)
	}
	return bp
}

// errCorrupt builds a corruption error.
func errCorrupt(format string, args ...any) error {
	return fmt.Errorf("sealed: %w: %s", blocks.ErrCorrupt, fmt.Sprintf(format, args...))
}

// open returns the plaintext of sealed block c (see the format in the
// package comment). Every failure wraps blocks.ErrCorrupt; it never panics,
// whatever c holds. The result may share c's storage.
func (s *Store) open(c []byte) ([]byte, error) {
	if len(c) == 0 {
		return nil, errCorrupt("empty block")
	}
	h := c[0]
	if v := h >> 4; v != formatVersion {
		return nil, errCorrupt("unknown format version %d", v)
	}
	if id := h & cipherMask; id != s.cipherID {
		return nil, errCorrupt("block sealed with cipher %d, store uses %d", id, s.cipherID)
	}
	adLen, plen := 1, 0
	compressed := h&flagCompressed != 0
	if compressed {
		if len(c) < 1+lengthSize {
			return nil, errCorrupt("truncated length field")
		}
		n := binary.BigEndian.Uint32(c[1:])
		if n == 0 || n > blocks.MaxBlock {
			return nil, errCorrupt("plaintext length %d out of range", n)
		}
		adLen, plen = 1+lengthSize, int(n)
	}
	body := c[adLen:]
	if s.aead != nil {
		ns := s.aead.NonceSize()
		if len(body) < ns+s.aead.Overhead() {
			return nil, errCorrupt("truncated: %d bytes", len(c))
		}
		var err error
		// In place: c is ours (the Getter contract gives the caller the slice).
		body, err = s.aead.Open(body[ns:ns], body[:ns], body[ns:], c[:adLen])
		if err != nil {
			return nil, errCorrupt("authentication failed: %v", err)
		}
	}
	if !compressed {
		if len(body) > blocks.MaxBlock {
			return nil, errCorrupt("%d bytes, more than the largest block", len(body))
		}
		return body, nil
	}
	return decompress(body, plen)
}

// decompress returns the plen-byte plaintext of lz4 block b.
func decompress(b []byte, plen int) (p []byte, err error) {
	defer func() {
		if r := recover(); r != nil { // never trust a third-party decoder with outside bytes
			p, err = nil, errCorrupt("lz4 decoder panicked: %v", r)
		}
	}()
	p = make([]byte, plen)
	n, err := lz4.UncompressBlock(b, p)
	if err != nil {
		return nil, errCorrupt("lz4: %v", err)
	}
	if n != plen {
		return nil, errCorrupt("lz4 block of %d bytes, header says %d", n, plen)
	}
	return p, nil
}

// Put implements blocks.Putter: it seals data and puts it in the inner
// store. Errors: blocks.ErrTooLarge above blocks.MaxBlock; the inner
// store's.
func (s *Store) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	addr, _, err := s.PutSized(ctx, data)
	return addr, err
}

// PutSized implements blocks.SizedPutter: Put that also returns the size
// of the sealed block (what the inner store was given).
func (s *Store) PutSized(ctx context.Context, data []byte) (blocks.Addr, int, error) {
	if len(data) > blocks.MaxBlock {
		return blocks.Addr{}, 0, fmt.Errorf("sealed: put of %d bytes, more than %d: %w", len(data), blocks.MaxBlock, blocks.ErrTooLarge)
	}
	if err := ctx.Err(); err != nil {
		return blocks.Addr{}, 0, fmt.Errorf("sealed: put: %w", err)
	}
	// The sealed block goes to the inner store straight from the parts
	// (no concatenation) when it can take them; either way nothing here
	// outlives the call (the Putter contract: Put does not retain data).
	pp, _ := s.inner.(blocks.PartsPutter)
	var addr blocks.Addr
	var size int
	err := s.sealTo(data, func(head, body []byte) error {
		var err error
		size = len(head) + len(body)
		switch {
		case len(head) == 0:
			addr, err = s.inner.Put(ctx, body)
		case pp != nil:
			addr, err = pp.PutParts(ctx, head, body)
		default:
			bp := s.getBuf(size)
			c := append(append((*bp)[:0], head...), body...)
			addr, err = s.inner.Put(ctx, c)
			s.bufs.Put(bp)
		}
		if err != nil {
			return fmt.Errorf("sealed: put: %w", err)
		}
		return nil
	})
	if err != nil {
		return blocks.Addr{}, 0, err
	}
	return addr, size, nil
}

// Get implements blocks.Getter: it gets the sealed block from the inner
// store, authenticates, decrypts and decompresses it. A block that fails
// any of these gives an error wrapping blocks.ErrCorrupt; others are the
// inner store's (blocks.ErrNotFound, ...).
func (s *Store) Get(ctx context.Context, addr blocks.Addr) ([]byte, error) {
	c, err := s.inner.Get(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("sealed: get: %w", err)
	}
	p, err := s.open(c)
	if err != nil {
		return nil, fmt.Errorf("sealed: get %v: %w", addr, err)
	}
	return p, nil
}

// GetInto implements blocks.GetterInto: Get that lets the inner store read
// the sealed block into dst's array when it can (blocks.GetterInto), and
// opens it there (authentication and decryption work in place). A
// compressed block is decompressed into a new slice.
func (s *Store) GetInto(ctx context.Context, addr blocks.Addr, dst []byte) ([]byte, error) {
	gi, ok := s.inner.(blocks.GetterInto)
	if !ok {
		return s.Get(ctx, addr)
	}
	c, err := gi.GetInto(ctx, addr, dst)
	if err != nil {
		return nil, fmt.Errorf("sealed: get: %w", err)
	}
	p, err := s.open(c)
	if err != nil {
		return nil, fmt.Errorf("sealed: get %v: %w", addr, err)
	}
	return p, nil
}

// GetSplit implements blocks.SplitGetter for a store without encryption:
// the block's one-byte frame into scratch and its plaintext into head and
// tail, through the inner store's GetSplit. A compressed block (of
// another length, or flagged) reports false, as does every failure.
func (s *Store) GetSplit(ctx context.Context, addr blocks.Addr, head, tail, scratch []byte) bool {
	sg, ok := s.inner.(blocks.SplitGetter)
	if !ok || s.aead != nil || len(scratch) < 1 {
		return false
	}
	frame := scratch[:1]
	if len(head) > 0 {
		return false // the frame byte would have to lead the caller's head
	}
	if !sg.GetSplit(ctx, addr, frame, tail, scratch[1:]) {
		return false
	}
	h := frame[0]
	return h>>4 == formatVersion && h&cipherMask == s.cipherID && h&flagCompressed == 0
}

// ViewMany implements blocks.Viewer: the inner store's views of plain
// blocks (neither compressed nor encrypted), without their frame byte;
// nil for every other block.
func (s *Store) ViewMany(ctx context.Context, addrs []blocks.Addr, views [][]byte) (release func()) {
	v, ok := s.inner.(blocks.Viewer)
	if !ok || s.aead != nil {
		return blocks.NoRelease
	}
	release = v.ViewMany(ctx, addrs, views)
	for i, b := range views {
		if len(b) == 0 {
			views[i] = nil // an empty block is corrupt: Get reports it
			continue
		}
		if h := b[0]; h>>4 != formatVersion || h&cipherMask != s.cipherID || h&flagCompressed != 0 {
			views[i] = nil
			continue
		}
		views[i] = b[1:]
	}
	return release
}

// GetMany implements blocks.ManyGetter: the inner store's GetMany (or Get
// for each), each block opened in place.
func (s *Store) GetMany(ctx context.Context, addrs []blocks.Addr, buf *[]byte) ([][]byte, []error) {
	var cs [][]byte
	var errs []error
	if mg, ok := s.inner.(blocks.ManyGetter); ok {
		cs, errs = mg.GetMany(ctx, addrs, buf)
	} else {
		cs, errs = make([][]byte, len(addrs)), make([]error, len(addrs))
		for i, a := range addrs {
			cs[i], errs[i] = s.inner.Get(ctx, a)
		}
	}
	for i, c := range cs {
		if errs[i] != nil {
			cs[i], errs[i] = nil, fmt.Errorf("sealed: get: %w", errs[i])
			continue
		}
		p, err := s.open(c)
		if err != nil {
			cs[i], errs[i] = nil, fmt.Errorf("sealed: get %v: %w", addrs[i], err)
			continue
		}
		cs[i] = p
	}
	return cs, errs
}

// Has implements blocks.Store (the inner store's Has).
func (s *Store) Has(ctx context.Context, addr blocks.Addr) (bool, error) {
	return s.inner.Has(ctx, addr)
}

// Delete implements blocks.Store (the inner store's Delete).
func (s *Store) Delete(ctx context.Context, addr blocks.Addr) error {
	return s.inner.Delete(ctx, addr)
}

// SyncHolders implements blocks.SyncHolders with the inner store's holders
// (Sync is the inner store's Sync); nil, which tells the caller to call
// Sync, when the inner store does not have the capability.
func (s *Store) SyncHolders() []blocks.Holder {
	if sh, ok := s.inner.(blocks.SyncHolders); ok {
		return sh.SyncHolders()
	}
	return nil
}

// Sync implements blocks.Store (the inner store's Sync).
func (s *Store) Sync(ctx context.Context) error {
	return s.inner.Sync(ctx)
}
