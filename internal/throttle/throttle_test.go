package throttle

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeClock moves only when told to.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	added   chan struct{} // a signal per new waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_000_000, 0), added: make(chan struct{}, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	c.added <- struct{}{}
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

// waitBlocked waits (bounded) until a Wait call is parked on the clock.
func (c *fakeClock) waitBlocked(t *testing.T) {
	t.Helper()
	select {
	case <-c.added:
	case <-time.After(time.Minute):
		t.Fatal("no Wait call ever blocked on the clock")
	}
}

func TestUnlimitedNeverWaits(t *testing.T) {
	clk := newFakeClock()
	l := New(Options{Rate: 0, Clock: clk})
	l.Note()
	for range 1000 {
		if err := l.Wait(context.Background(), 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if s := l.Stats(); s.Taken != 1000<<20 || s.Waited != 0 {
		t.Fatalf("stats %+v, want 1000 MiB taken without waiting", s)
	}
	var nl *Limiter // nil is unlimited too
	if err := nl.Wait(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
}

func TestThrottlesWhileClientsAreActive(t *testing.T) {
	clk := newFakeClock()
	l := New(Options{Rate: 1000, Burst: 1000, IdleAfter: time.Minute, Clock: clk})
	l.Note()
	ctx := context.Background()
	// The burst passes at once, and one more taker goes into debt.
	for range 2 {
		if err := l.Wait(ctx, 1000); err != nil {
			t.Fatal(err)
		}
	}
	if len(clk.added) != 0 {
		t.Fatal("a taker waited within the burst")
	}
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, 500) }()
	clk.waitBlocked(t)
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v while the bucket was 1000 bytes in debt", err)
	default:
	}
	l.Note() // clients still busy: the taker must wait the debt off
	clk.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := l.Stats()
	if s.Taken != 2500 || s.Waited != time.Second || s.Idle {
		t.Fatalf("stats %+v, want 2500 bytes taken after waiting 1s, not idle", s)
	}
}

func TestIdleClientsUnthrottle(t *testing.T) {
	clk := newFakeClock()
	l := New(Options{Rate: 1000, Burst: 1000, IdleAfter: time.Second, Clock: clk})
	ctx := context.Background()
	// No client I/O yet: everything passes.
	for range 100 {
		if err := l.Wait(ctx, 1000); err != nil {
			t.Fatal(err)
		}
	}
	l.Note()
	if l.Idle() {
		t.Fatal("idle right after client I/O")
	}
	_ = l.Wait(ctx, 1000)
	_ = l.Wait(ctx, 5000) // deep in debt now
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, 1) }()
	clk.waitBlocked(t)
	// Clients go quiet: after IdleAfter the waiter looks again and passes,
	// although the debt (5 s worth) is not paid off.
	clk.Advance(time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !l.Idle() {
		t.Fatal("not idle a second after the last client I/O")
	}
}

func TestWaitHonoursCancel(t *testing.T) {
	clk := newFakeClock()
	l := New(Options{Rate: 10, Burst: 10, IdleAfter: -1, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	_ = l.Wait(ctx, 1000) // debt of 990 bytes: 99 s
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, 1) }()
	clk.waitBlocked(t)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v, want context.Canceled", err)
	}
	if err := l.Wait(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled ctx: %v", err)
	}
	if s := l.Stats(); s.Taken != 1000 {
		t.Fatalf("taken %d, want only the first 1000 bytes", s.Taken)
	}
}

func TestSetRateLiftsThrottle(t *testing.T) {
	clk := newFakeClock()
	l := New(Options{Rate: 10, Burst: 10, IdleAfter: -1, Clock: clk})
	ctx := context.Background()
	_ = l.Wait(ctx, 1000)
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx, 1) }()
	clk.waitBlocked(t)
	l.SetRate(0)
	// The parked taker looks again when its timer fires, then passes.
	clk.Advance(100 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if l.Rate() != 0 {
		t.Fatalf("rate %d after SetRate(0)", l.Rate())
	}
}

func TestRecentRate(t *testing.T) {
	clk := newFakeClock()
	l := New(Options{Clock: clk})
	for range 10 {
		_ = l.Wait(context.Background(), 100)
		clk.Advance(time.Second)
	}
	if got := l.Stats().Recent; got != 100 {
		t.Fatalf("recent rate %d B/s, want 100", got)
	}
	clk.Advance(time.Minute)
	if got := l.Stats().Recent; got != 0 {
		t.Fatalf("recent rate %d B/s a minute later, want 0", got)
	}
}

func TestBackgroundMark(t *testing.T) {
	ctx := context.Background()
	if IsBackground(ctx) {
		t.Fatal("plain context marked background")
	}
	if !IsBackground(Background(ctx)) {
		t.Fatal("Background context not marked")
	}
}
