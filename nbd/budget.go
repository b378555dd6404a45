package nbd

import (
	"context"
	"sync"
)

// budget bounds the payload bytes (WRITE data read from the socket, READ
// data waiting to be sent) one connection holds. Only the connection's
// reader acquires, so waiters are served in request order; handlers
// release when their reply is out. One request is admitted whatever its
// size when nothing else is held, so a request larger than the budget
// cannot wedge the connection.
type budget struct {
	max int64

	mu   sync.Mutex
	used int64 // guarded by mu
	// freed is signalled (without blocking) on every release; the single
	// acquirer waits on it.
	freed chan struct{}
}

func newBudget(max int64) *budget {
	return &budget{max: max, freed: make(chan struct{}, 1)}
}

// acquire takes n bytes, waiting while they do not fit. It returns ctx's
// error if ctx ends first. Only one goroutine may call acquire at a time.
func (b *budget) acquire(ctx context.Context, n int64) error {
	if n <= 0 {
		return nil
	}
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		select {
		case <-b.freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives back n bytes taken by acquire.
func (b *budget) release(n int64) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

// held returns the bytes currently taken.
func (b *budget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
