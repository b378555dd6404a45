// Package memory is an in-memory block store: a Holder, a Journal and a
// MutableStore kept in maps. It is a real implementation, used as the fake
// of the layer below in unit tests. Sync is a no-op; Crash forgets whatever
// was put or appended since the last Sync, for crash tests.
package memory

import (
	"bytes"
	"context"
	"math"
	"sort"
	"sync"

	"cairn/blocks"
)

var (
	_ blocks.Holder       = (*Store)(nil)
	_ blocks.Walker       = (*Store)(nil)
	_ blocks.Journal      = (*Store)(nil)
	_ blocks.MutableStore = (*Mutable)(nil)
)

type rec struct {
	epoch blocks.Epoch
	data  []byte
}

type logState struct {
	sealed blocks.Epoch
	recs   map[uint64]rec
}

// Store is an in-memory Holder and Journal. The zero value is not usable:
// call New.
type Store struct {
	mu sync.Mutex // guards the fields below
	// pieces and logs are the current state; durable* the state at the last Sync.
	pieces        map[blocks.Addr][]byte
	logs          map[blocks.ID]*logState
	durablePieces map[blocks.Addr][]byte
	durableLogs   map[blocks.ID]*logState
	syncs         int
	// MaxBytes, when > 0, makes PutPiece and Append fail with ErrNoSpace
	// once the stored bytes would exceed it.
	maxBytes int64
	used     int64
}

// New returns an empty store. maxBytes > 0 limits the bytes it holds.
func New(maxBytes int64) *Store {
	return &Store{
		pieces:        map[blocks.Addr][]byte{},
		logs:          map[blocks.ID]*logState{},
		durablePieces: map[blocks.Addr][]byte{},
		durableLogs:   map[blocks.ID]*logState{},
		maxBytes:      maxBytes,
	}
}

func (s *Store) reserve(n int) error {
	if s.maxBytes > 0 && s.used+int64(n) > s.maxBytes {
		return blocks.ErrNoSpace
	}
	s.used += int64(n)
	return nil
}

// PutPiece implements blocks.Holder.
func (s *Store) PutPiece(ctx context.Context, key blocks.Addr, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pieces[key]; ok {
		return nil
	}
	if err := s.reserve(len(data)); err != nil {
		return err
	}
	s.pieces[key] = bytes.Clone(data)
	return nil
}

// GetPiece implements blocks.Holder.
func (s *Store) GetPiece(ctx context.Context, key blocks.Addr) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pieces[key]
	if !ok {
		return nil, blocks.ErrNotFound
	}
	return bytes.Clone(p), nil
}

// HasPiece implements blocks.Holder.
func (s *Store) HasPiece(ctx context.Context, key blocks.Addr) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.pieces[key]
	return ok, nil
}

// DeletePiece implements blocks.Holder.
func (s *Store) DeletePiece(ctx context.Context, key blocks.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pieces[key]; ok {
		s.used -= int64(len(p))
		delete(s.pieces, key)
	}
	return nil
}

// Corrupt flips a bit of the stored piece, if any, so that tests can check
// that layers above never serve it. It reports whether a piece was found.
// (The memory store has no checksums of its own: the bytes change silently,
// as rotten bytes on a disk would past a weak checksum.)
func (s *Store) Corrupt(key blocks.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pieces[key]
	if !ok || len(p) == 0 {
		return false
	}
	p[len(p)/2] ^= 0x40
	return true
}

// Walk implements blocks.Walker.
func (s *Store) Walk(ctx context.Context, fn func(blocks.Addr) error) error {
	s.mu.Lock()
	keys := make([]blocks.Addr, 0, len(s.pieces))
	for k := range s.pieces {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	for _, k := range keys {
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// Bytes returns the bytes of pieces and records currently held.
func (s *Store) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Syncs returns how many times Sync was called.
func (s *Store) Syncs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.syncs
}

// Sync implements blocks.Holder: it records the current state as durable.
func (s *Store) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.syncs++
	s.durablePieces = make(map[blocks.Addr][]byte, len(s.pieces))
	for k, v := range s.pieces {
		s.durablePieces[k] = v
	}
	s.durableLogs = copyLogs(s.logs)
	return nil
}

// Crash drops everything not made durable by Sync, as a power cut would.
func (s *Store) Crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pieces = make(map[blocks.Addr][]byte, len(s.durablePieces))
	s.used = 0
	for k, v := range s.durablePieces {
		s.pieces[k] = v
		s.used += int64(len(v))
	}
	s.logs = copyLogs(s.durableLogs)
	for _, l := range s.logs {
		for _, r := range l.recs {
			s.used += int64(len(r.data))
		}
	}
}

func copyLogs(in map[blocks.ID]*logState) map[blocks.ID]*logState {
	out := make(map[blocks.ID]*logState, len(in))
	for id, l := range in {
		c := &logState{sealed: l.sealed, recs: make(map[uint64]rec, len(l.recs))}
		for k, v := range l.recs {
			c.recs[k] = v
		}
		out[id] = c
	}
	return out
}

func (s *Store) log(id blocks.ID) *logState {
	l := s.logs[id]
	if l == nil {
		l = &logState{recs: map[uint64]rec{}}
		s.logs[id] = l
	}
	return l
}

// Append implements blocks.Journal.
func (s *Store) Append(ctx context.Context, log blocks.ID, epoch blocks.Epoch, seq uint64, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.log(log)
	if epoch < l.sealed {
		return blocks.ErrFenced
	}
	if old, ok := l.recs[seq]; ok {
		if old.epoch > epoch {
			return nil
		}
		s.used -= int64(len(old.data))
	}
	if err := s.reserve(len(data)); err != nil {
		return err
	}
	l.recs[seq] = rec{epoch: epoch, data: bytes.Clone(data)}
	return nil
}

// Seal implements blocks.Journal. (The memory store's seal is durable at
// once, as the silo's is.)
func (s *Store) Seal(ctx context.Context, log blocks.ID, epoch blocks.Epoch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.log(log); epoch > l.sealed {
		l.sealed = epoch
	}
	d := s.durableLogs[log]
	if d == nil {
		d = &logState{recs: map[uint64]rec{}}
		s.durableLogs[log] = d
	}
	if epoch > d.sealed {
		d.sealed = epoch
	}
	return nil
}

// Replay implements blocks.Journal.
func (s *Store) Replay(ctx context.Context, log blocks.ID, from uint64, fn func(blocks.Epoch, uint64, []byte) error) error {
	s.mu.Lock()
	l := s.logs[log]
	type item struct {
		seq uint64
		r   rec
	}
	var items []item
	if l != nil {
		for seq, r := range l.recs {
			if seq >= from {
				items = append(items, item{seq, r})
			}
		}
	}
	s.mu.Unlock()
	sort.Slice(items, func(i, j int) bool { return items[i].seq < items[j].seq })
	for _, it := range items {
		if err := fn(it.r.epoch, it.seq, it.r.data); err != nil {
			return err
		}
	}
	return nil
}

// Trim implements blocks.Journal.
func (s *Store) Trim(ctx context.Context, log blocks.ID, before uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logs[log]
	if l == nil {
		return nil
	}
	for seq, r := range l.recs {
		if seq < before {
			s.used -= int64(len(r.data))
			delete(l.recs, seq)
		}
	}
	if before == math.MaxUint64 {
		delete(s.logs, log)
	}
	return nil
}

// Mutable is an in-memory MutableStore. The zero value is not usable: call
// NewMutable.
type Mutable struct {
	mu    sync.Mutex // guards m and cas
	m     map[blocks.ID]mval
	cas   int
	limit int
}

type mval struct {
	v blocks.Version
	p []byte
}

// NewMutable returns an empty MutableStore.
func NewMutable() *Mutable { return &Mutable{m: map[blocks.ID]mval{}, limit: 1 << 20} }

// Load implements blocks.MutableStore.
func (m *Mutable) Load(ctx context.Context, id blocks.ID) (blocks.Version, []byte, error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.m[id]
	return v.v, bytes.Clone(v.p), nil
}

// CompareAndSet implements blocks.MutableStore.
func (m *Mutable) CompareAndSet(ctx context.Context, id blocks.ID, want blocks.Version, payload []byte) (blocks.Version, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(payload) > m.limit {
		return 0, blocks.ErrTooLarge
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cas++
	cur := m.m[id]
	if cur.v != want {
		return cur.v, blocks.ErrConflict
	}
	if payload == nil {
		delete(m.m, id)
		return 0, nil
	}
	m.m[id] = mval{v: want + 1, p: bytes.Clone(payload)}
	return want + 1, nil
}

// Proposals returns how many CompareAndSet calls were made (the number of
// raft proposals a consensus-backed store would have made).
func (m *Mutable) Proposals() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cas
}
