package volume

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"cairn/blocks"
	"cairn/blocks/memory"
	"cairn/policies"
)

// casStore is a content-addressed blocks.Store over a memory holder: the
// test stand-in for the sealed/redundant pipeline.
type casStore struct{ h *memory.Store }

var _ blocks.Store = casStore{}

func (s casStore) Put(ctx context.Context, data []byte) (blocks.Addr, error) {
	a := blocks.Sum(data)
	return a, s.h.PutPiece(ctx, a, data)
}

func (s casStore) Get(ctx context.Context, a blocks.Addr) ([]byte, error) {
	b, err := s.h.GetPiece(ctx, a)
	if err != nil {
		return nil, err
	}
	if blocks.Sum(b) != a {
		return nil, fmt.Errorf("test store: %s: %w", a, blocks.ErrCorrupt)
	}
	return b, nil
}

func (s casStore) Has(ctx context.Context, a blocks.Addr) (bool, error) { return s.h.HasPiece(ctx, a) }
func (s casStore) Delete(ctx context.Context, a blocks.Addr) error      { return s.h.DeletePiece(ctx, a) }
func (s casStore) Sync(ctx context.Context) error                       { return s.h.Sync(ctx) }

// clock is a fake clock for leases.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// env is one simulated cluster: a durable mutable store (raft), one holder
// that crashes, and a fake clock.
type env struct {
	t     testing.TB
	mut   *memory.Mutable
	hold  *memory.Store
	clock *clock
}

func newEnv(t testing.TB) *env {
	return &env{t: t, mut: memory.NewMutable(), hold: memory.New(0), clock: &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// options returns catalogue options for a node called owner.
func (e *env) options(owner string) Options {
	return Options{
		Mutable:  e.mut,
		StoreFor: func(policies.Policy, []byte) (blocks.Store, error) { return casStore{e.hold}, nil },
		Journals: func(blocks.ID, policies.Policy) ([]JournalHolder, error) {
			return []JournalHolder{e.hold}, nil
		},
		Blocks:          casStore{e.hold},
		MasterKey:       []byte("test master key"),
		Owner:           owner,
		CheckpointEvery: time.Hour,
		Now:             e.clock.Now,
		Logger:          quietLogger(),
	}
}

func (e *env) catalog(opts Options) *Catalogue {
	e.t.Helper()
	c, err := NewCatalog(context.Background(), opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func testPolicy(bs policies.Size) policies.Policy {
	return policies.Policy{
		Name: "test", BlockSize: bs, Compression: policies.CompressionNone,
		Redundancy: policies.Redundancy{Replicas: 1}, Cipher: policies.CipherNone, Spread: policies.SpreadNone,
	}
}

// abandon stops a volume's background work without flushing, as a crash of
// its process would.
func abandon(v *volumeImpl) {
	v.life.Lock()
	already := v.closed.Swap(true)
	v.life.Unlock()
	if already || v.readOnly {
		return
	}
	close(v.stop)
	<-v.done
	v.c.forget(v.id, v)
}

func mustOpen(t testing.TB, c *Catalogue, name string, ro bool) *volumeImpl {
	t.Helper()
	v, err := c.Open(context.Background(), name, OpenOptions{ReadOnly: ro})
	if err != nil {
		t.Fatal(err)
	}
	return v.(*volumeImpl)
}
