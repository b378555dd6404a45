package chunkmap

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"

	"cairn/blocks"
	"cairn/blocks/memory"
)

// testStore is a content-addressed blocks.Store over a memory holder that
// counts Puts and Gets. Set raw to skip the hash check on Get (a store
// that serves whatever bytes it holds).
type testStore struct {
	h          *memory.Store
	puts, gets atomic.Int64
	mu         sync.Mutex
	putAddrs   []blocks.Addr
	raw        bool
	// hook, when set, is called at the start of every Get; putHook at the
	// start of every Put.
	hook    func(blocks.Addr)
	putHook func()
}

var _ blocks.Store = (*testStore)(nil)

func newTestStore() *testStore { return &testStore{h: memory.New(0)} }

func (s *testStore) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	if s.putHook != nil {
		s.putHook()
	}
	a := blocks.Sum(data)
	s.puts.Add(1)
	s.mu.Lock()
	s.putAddrs = append(s.putAddrs, a)
	s.mu.Unlock()
	return a, s.h.PutPiece(ctx, a, data)
}

func (s *testStore) Get(ctx context.Context, a blocks.Addr) ([]byte, error) {
	s.gets.Add(1)
	if s.hook != nil {
		s.hook(a)
	}
	data, err := s.h.GetPiece(ctx, a)
	if err != nil {
		return nil, fmt.Errorf("teststore: get %s: %w", a, err)
	}
	if !s.raw && blocks.Sum(data) != a {
		return nil, fmt.Errorf("teststore: get %s: hash mismatch: %w", a, blocks.ErrCorrupt)
	}
	return data, nil
}

func (s *testStore) Has(ctx context.Context, a blocks.Addr) (bool, error) {
	return s.h.HasPiece(ctx, a)
}

func (s *testStore) Delete(ctx context.Context, a blocks.Addr) error {
	return s.h.DeletePiece(ctx, a)
}

func (s *testStore) Sync(ctx context.Context) error { return s.h.Sync(ctx) }

// addr returns a distinct non-zero chunk address that records chunk and
// version, so that readers can check what they get.
func addr(chunk, version uint64) blocks.Addr {
	var a blocks.Addr
	binary.BigEndian.PutUint64(a[0:], chunk)
	binary.BigEndian.PutUint64(a[8:], version)
	a[31] = 1
	return a
}
