package shardsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

// On-disk layout of the Pebble database (one per host, shared by its
// shards). Keys:
//
//	"m" name                     host metadata (see Store.Meta)
//	"s" shard(8, BE) "a"         the shard's last applied raft index (8 bytes BE)
//	"s" shard(8, BE) "b" id(32)  a mutable block: version (8 bytes BE) then payload
//
// A shard's blocks and its applied index change together in one Pebble
// batch, so after a crash the applied index never runs ahead of the blocks
// (dragonboat re-applies the entries after it from the raft log). Batches
// are written without fsync; Sync (called by dragonboat before it compacts
// the raft log) fsyncs the WAL.
const (
	prefixMeta  = 'm'
	prefixShard = 's'
	keyApplied  = 'a'
	keyBlock    = 'b'
)

var (
	// ErrClosed is returned by lookups after the store was closed.
	ErrClosed = errors.New("shardsm: closed")
	// ErrCorrupt marks a stored value that does not have the layout above
	// (Pebble checksums its blocks, so this means a bug or a damaged
	// directory, not a torn write).
	ErrCorrupt = errors.New("shardsm: corrupt state")
)

// Store is the Pebble database that holds every shard's state on one host.
// It is safe for concurrent use. Close it after the NodeHost that uses its
// state machines has been closed.
type Store struct {
	mu     sync.RWMutex // guards closed against use of db after Close
	closed bool
	db     *pebble.DB

	recovered atomic.Uint64 // snapshots installed by RecoverFromSnapshot
}

// Recovered returns how many snapshots the store's state machines have
// installed from other replicas (a replica that fell behind the raft log).
func (s *Store) Recovered() uint64 { return s.recovered.Load() }

// OpenStore opens (creating if needed) the database in dir.
func OpenStore(dir string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	db, err := pebble.Open(dir, &pebble.Options{
		CacheSize:    8 << 20,
		MemTableSize: 4 << 20,
		Logger:       pebbleLogger{log.With("component", "pebble")},
	})
	if err != nil {
		return nil, fmt.Errorf("shardsm: open %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database. Later lookups return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.db.Close()
}

// Meta returns the host metadata value under name, or nil if none.
func (s *Store) Meta(name string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	v, c, err := s.db.Get(append([]byte{prefixMeta}, name...))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("shardsm: meta %s: %w", name, err)
	}
	defer c.Close()
	return bytes.Clone(v), nil
}

// SetMeta durably stores the host metadata value under name.
func (s *Store) SetMeta(name string, value []byte) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.db.Set(append([]byte{prefixMeta}, name...), value, pebble.Sync); err != nil {
		return fmt.Errorf("shardsm: set meta %s: %w", name, err)
	}
	return nil
}

// DropShard durably deletes every key of shard (its blocks and applied
// index). The caller must have stopped the shard's replica first (its state
// machine must not be in use): it is for a replica removed from its shard.
func (s *Store) DropShard(shard uint64) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	lo, hi := shardRange(shard)
	if err := s.db.DeleteRange(lo, hi, pebble.Sync); err != nil {
		return fmt.Errorf("shardsm: drop shard %d: %w", shard, err)
	}
	return nil
}

func shardPrefix(shard uint64) []byte {
	k := make([]byte, 9, 9+1+32)
	k[0] = prefixShard
	binary.BigEndian.PutUint64(k[1:], shard)
	return k
}

func appliedKey(shard uint64) []byte { return append(shardPrefix(shard), keyApplied) }

func blockKey(shard uint64, id [32]byte) []byte {
	return append(append(shardPrefix(shard), keyBlock), id[:]...)
}

// blockRange returns the bounds [lo, hi) of the shard's block keys.
func blockRange(shard uint64) (lo, hi []byte) {
	return append(shardPrefix(shard), keyBlock), append(shardPrefix(shard), keyBlock+1)
}

// shardRange returns the bounds [lo, hi) of every key of the shard.
func shardRange(shard uint64) (lo, hi []byte) {
	lo = shardPrefix(shard)
	hi = shardPrefix(shard)
	if shard == math.MaxUint64 {
		hi = []byte{prefixShard + 1}
	} else {
		binary.BigEndian.PutUint64(hi[1:], shard+1)
	}
	return lo, hi
}

// Value is the answer to a lookup: the block's version (0 if absent) and
// payload (nil if absent; owned by the caller).
type Value struct {
	Version uint64
	Payload []byte
}

// NewStateMachine returns the state machine of shard, backed by s. It has
// the signature of dragonboat's CreateOnDiskStateMachineFunc.
func (s *Store) NewStateMachine(shard, replica uint64) sm.IOnDiskStateMachine {
	return &stateMachine{s: s, shard: shard}
}

// stateMachine is one shard's IOnDiskStateMachine. Dragonboat serializes
// Update, Sync, PrepareSnapshot, RecoverFromSnapshot and Close; Lookup and
// SaveSnapshot may run concurrently with them (Pebble reads are safe).
type stateMachine struct {
	s     *Store
	shard uint64
}

var _ sm.IOnDiskStateMachine = (*stateMachine)(nil)

// Open implements sm.IOnDiskStateMachine: it returns the applied index.
func (m *stateMachine) Open(stopc <-chan struct{}) (uint64, error) {
	m.s.mu.RLock()
	defer m.s.mu.RUnlock()
	if m.s.closed {
		return 0, ErrClosed
	}
	return getApplied(m.s.db, m.shard)
}

type getter interface {
	Get(key []byte) ([]byte, io.Closer, error)
}

func getApplied(g getter, shard uint64) (uint64, error) {
	v, c, err := g.Get(appliedKey(shard))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("shardsm: shard %d applied index: %w", shard, err)
	}
	defer c.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: shard %d applied index of %d bytes", ErrCorrupt, shard, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// getBlock reads a block; a stored value shorter than 8 bytes is reported
// as an error rather than trusted.
func getBlock(g getter, shard uint64, id [32]byte) (Value, error) {
	v, c, err := g.Get(blockKey(shard, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return Value{}, nil
	}
	if err != nil {
		return Value{}, fmt.Errorf("shardsm: shard %d get %x: %w", shard, id, err)
	}
	defer c.Close()
	if len(v) < 8 {
		return Value{}, fmt.Errorf("%w: shard %d block %x: stored value of %d bytes", ErrCorrupt, shard, id, len(v))
	}
	return Value{Version: binary.BigEndian.Uint64(v), Payload: bytes.Clone(v[8:])}, nil
}

// Update implements sm.IOnDiskStateMachine. Every entry gets a result; only
// a storage failure is returned as an error (which halts the replica).
func (m *stateMachine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	m.s.mu.RLock()
	defer m.s.mu.RUnlock()
	if m.s.closed {
		return nil, ErrClosed
	}
	b := m.s.db.NewIndexedBatch()
	defer b.Close()
	for i := range entries {
		e := &entries[i]
		st, ver, err := apply(b, m.shard, e.Cmd)
		if err != nil {
			return nil, err
		}
		e.Result = sm.Result{Value: uint64(st), Data: EncodeResult(ver)}
	}
	if len(entries) > 0 {
		var idx [8]byte
		binary.BigEndian.PutUint64(idx[:], entries[len(entries)-1].Index)
		if err := b.Set(appliedKey(m.shard), idx[:], nil); err != nil {
			return nil, err
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, fmt.Errorf("shardsm: shard %d commit: %w", m.shard, err)
	}
	return entries, nil
}

// apply applies one command to the indexed batch b.
func apply(b *pebble.Batch, shard uint64, cmd []byte) (Status, uint64, error) {
	c, err := DecodeCommand(cmd)
	if err != nil {
		return StatusBad, 0, nil
	}
	cur, err := getBlock(b, shard, c.ID)
	if err != nil {
		return 0, 0, err
	}
	if cur.Version != c.Want || c.Want == math.MaxUint64 {
		return StatusConflict, cur.Version, nil
	}
	key := blockKey(shard, c.ID)
	if c.Op == OpDelete {
		if err := b.Delete(key, nil); err != nil {
			return 0, 0, err
		}
		return StatusOK, 0, nil
	}
	val := make([]byte, 8, 8+len(c.Payload))
	binary.BigEndian.PutUint64(val, c.Want+1)
	if err := b.Set(key, append(val, c.Payload...), nil); err != nil {
		return 0, 0, err
	}
	return StatusOK, c.Want + 1, nil
}

// Lookup implements sm.IOnDiskStateMachine. The query is a [32]byte block
// ID; the answer a Value.
func (m *stateMachine) Lookup(q interface{}) (interface{}, error) {
	id, ok := q.([32]byte)
	if !ok {
		return nil, fmt.Errorf("shardsm: lookup of %T, want [32]byte", q)
	}
	m.s.mu.RLock()
	defer m.s.mu.RUnlock()
	if m.s.closed {
		return nil, ErrClosed
	}
	return getBlock(m.s.db, m.shard, id)
}

// Sync implements sm.IOnDiskStateMachine: it fsyncs the WAL.
func (m *stateMachine) Sync() error {
	m.s.mu.RLock()
	defer m.s.mu.RUnlock()
	if m.s.closed {
		return ErrClosed
	}
	return m.s.db.LogData(nil, pebble.Sync)
}

// PrepareSnapshot implements sm.IOnDiskStateMachine: a Pebble snapshot.
func (m *stateMachine) PrepareSnapshot() (interface{}, error) {
	m.s.mu.RLock()
	defer m.s.mu.RUnlock()
	if m.s.closed {
		return nil, ErrClosed
	}
	return m.s.db.NewSnapshot(), nil
}

// SaveSnapshot implements sm.IOnDiskStateMachine (format: see WriteSnapshot).
func (m *stateMachine) SaveSnapshot(ctx interface{}, w io.Writer, stopc <-chan struct{}) error {
	snap, ok := ctx.(*pebble.Snapshot)
	if !ok {
		return fmt.Errorf("shardsm: snapshot context %T", ctx)
	}
	defer snap.Close()
	applied, err := getApplied(snap, m.shard)
	if err != nil {
		return err
	}
	lo, hi := blockRange(m.shard)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	defer it.Close()
	// The iterator advances at the start of the following call, not before
	// returning: the value slice is only valid until it moves (Pebble may
	// release the block it points into), and WriteSnapshot has written the
	// payload by then.
	started := false
	next := func() (id [32]byte, v Value, ok bool, err error) {
		select {
		case <-stopc:
			return id, v, false, sm.ErrSnapshotStopped
		default:
		}
		if started {
			it.Next()
		} else {
			it.First()
			started = true
		}
		if !it.Valid() {
			return id, v, false, it.Error()
		}
		k, val := it.Key(), it.Value()
		if len(k) != len(lo)+32 || len(val) < 8 {
			return id, v, false, fmt.Errorf("%w: shard %d: malformed stored block", ErrCorrupt, m.shard)
		}
		copy(id[:], k[len(lo):])
		v = Value{Version: binary.BigEndian.Uint64(val), Payload: val[8:]}
		return id, v, true, nil
	}
	return WriteSnapshot(w, applied, next)
}

// RecoverFromSnapshot implements sm.IOnDiskStateMachine: it replaces the
// shard's state with the snapshot's, in one batch.
func (m *stateMachine) RecoverFromSnapshot(r io.Reader, stopc <-chan struct{}) error {
	m.s.mu.RLock()
	defer m.s.mu.RUnlock()
	if m.s.closed {
		return ErrClosed
	}
	b := m.s.db.NewBatch()
	defer b.Close()
	lo, hi := shardRange(m.shard)
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return err
	}
	applied, err := ReadSnapshot(r, func(id [32]byte, v Value) error {
		select {
		case <-stopc:
			return sm.ErrSnapshotStopped
		default:
		}
		val := make([]byte, 8, 8+len(v.Payload))
		binary.BigEndian.PutUint64(val, v.Version)
		return b.Set(blockKey(m.shard, id), append(val, v.Payload...), nil)
	})
	if err != nil {
		return err
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], applied)
	if err := b.Set(appliedKey(m.shard), idx[:], nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	m.s.recovered.Add(1)
	return nil
}

// Close implements sm.IOnDiskStateMachine. The shared Store stays open.
func (m *stateMachine) Close() error { return nil }

// pebbleLogger sends Pebble's logs to slog.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...interface{}) {
	p.l.Debug(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Errorf(format string, args ...interface{}) {
	p.l.Error(fmt.Sprintf(format, args...))
}
func (p pebbleLogger) Fatalf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg)
	panic("shardsm: pebble fatal: " + msg)
}
