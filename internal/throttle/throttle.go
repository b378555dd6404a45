// Package throttle paces a node's background copies (anti-entropy repair,
// give-back of handed-off pieces) so that client I/O keeps going while a
// cluster heals.
//
// A Limiter is a byte-rate token bucket. Background work calls Wait with
// the size of each piece before (or right after) it moves one; client I/O
// calls Note. While clients are idle (no Note for IdleAfter) background
// copies run unthrottled: healing as fast as the machine allows costs
// nobody anything then. The bucket lets a taker go into debt (a piece
// larger than the burst still passes, and the takers after it wait the
// debt off), so Wait never refuses a size.
//
// A context marked with Background tells the data path that a call is
// background work: it should pay the Limiter and not count as client
// activity.
package throttle

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the time source of a Limiter; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Options configure a Limiter.
type Options struct {
	// Rate is the background byte rate per second while clients are
	// active. 0 means unlimited.
	Rate int64
	// Burst is how many bytes may pass at once after a quiet spell.
	// Default: Rate/4 (a quarter second's worth), at least 1 MiB.
	Burst int64
	// IdleAfter is how long after the last client I/O background copies
	// run unthrottled. Default 1 second; negative never (always
	// throttled).
	IdleAfter time.Duration
	// Clock is the time source (default: the system clock).
	Clock Clock
}

// DefaultRate is the background rate `cairn node` uses unless told
// otherwise: 64 MiB/s.
const DefaultRate = 64 << 20

// meterSlots is the window of the rate meter, in seconds.
const meterSlots = 10

// Limiter is a byte-rate token bucket for background copies. It is safe
// for concurrent use. A nil *Limiter is valid and unlimited.
type Limiter struct {
	clock      Clock
	idleAfter  time.Duration
	lastClient atomic.Int64 // unix nanoseconds of the last Note; 0: never

	mu       sync.Mutex // guards the fields below
	rate     float64    // bytes per second; 0: unlimited
	burst    float64
	tokens   float64 // may go negative (debt)
	last     time.Time
	waited   time.Duration // total time takers spent waiting
	taken    int64         // bytes taken, total
	slotSec  [meterSlots]int64
	slotByte [meterSlots]int64
}

// New returns a Limiter.
func New(o Options) *Limiter {
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.IdleAfter == 0 {
		o.IdleAfter = time.Second
	}
	l := &Limiter{clock: o.Clock, idleAfter: o.IdleAfter}
	l.last = l.clock.Now()
	l.setRate(o.Rate, o.Burst)
	l.tokens = l.burst
	return l
}

// SetRate changes the rate (bytes per second, 0: unlimited); the burst
// goes back to its default for the new rate.
func (l *Limiter) SetRate(rate int64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(l.clock.Now())
	l.setRate(rate, 0)
	l.tokens = min(l.tokens, l.burst)
}

func (l *Limiter) setRate(rate, burst int64) {
	l.rate = float64(max(rate, 0))
	if burst <= 0 {
		burst = max(rate/4, 1<<20)
	}
	l.burst = float64(burst)
}

// Rate returns the configured rate in bytes per second (0: unlimited).
func (l *Limiter) Rate() int64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(l.rate)
}

// Note records client I/O: background copies are throttled for
// IdleAfter from now. It is cheap enough to call on every client request.
func (l *Limiter) Note() {
	if l == nil {
		return
	}
	l.lastClient.Store(l.clock.Now().UnixNano())
}

// Idle reports whether no client I/O was noted for IdleAfter.
func (l *Limiter) Idle() bool {
	if l == nil {
		return true
	}
	return l.idle(l.clock.Now())
}

func (l *Limiter) idle(now time.Time) bool {
	if l.idleAfter < 0 {
		return false
	}
	last := l.lastClient.Load()
	return last == 0 || now.UnixNano()-last >= int64(l.idleAfter)
}

// refill adds the tokens earned since the last refill. l.mu is held.
func (l *Limiter) refill(now time.Time) {
	if d := now.Sub(l.last); d > 0 && l.rate > 0 {
		l.tokens = min(l.burst, l.tokens+d.Seconds()*l.rate)
	}
	l.last = now
}

// Wait takes n bytes from the bucket, waiting while it is in debt. It
// returns at once when the rate is unlimited or clients are idle, and
// returns ctx's error (taking nothing) if ctx ends first.
func (l *Limiter) Wait(ctx context.Context, n int) error {
	if l == nil {
		return ctx.Err()
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := l.clock.Now()
		l.mu.Lock()
		l.refill(now)
		if l.rate == 0 || l.idle(now) || l.tokens >= 0 {
			if l.rate > 0 && !l.idle(now) {
				l.tokens -= float64(n)
			}
			l.count(now, n)
			l.mu.Unlock()
			return nil
		}
		d := time.Duration(-l.tokens / l.rate * float64(time.Second))
		// Look again at least every IdleAfter: clients may have gone
		// quiet meanwhile.
		if l.idleAfter > 0 {
			d = min(d, l.idleAfter)
		}
		d = max(d, time.Millisecond)
		l.waited += d
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.clock.After(d):
		}
	}
}

// count adds n bytes to the totals and the rate meter. l.mu is held.
func (l *Limiter) count(now time.Time, n int) {
	l.taken += int64(n)
	sec := now.Unix()
	i := int(sec % meterSlots)
	if l.slotSec[i] != sec {
		l.slotSec[i], l.slotByte[i] = sec, 0
	}
	l.slotByte[i] += int64(n)
}

// Stats is what a Limiter has let through.
type Stats struct {
	Rate   int64         // the configured rate, bytes per second (0: unlimited)
	Taken  int64         // bytes taken in total
	Recent int64         // bytes per second over the last 10 seconds
	Waited time.Duration // total time takers were told to wait
	Idle   bool          // no client I/O lately: background copies run unthrottled
}

// Stats returns the Limiter's counters.
func (l *Limiter) Stats() Stats {
	if l == nil {
		return Stats{Idle: true}
	}
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Stats{Rate: int64(l.rate), Taken: l.taken, Waited: l.waited, Idle: l.idle(now)}
	sec := now.Unix()
	var sum int64
	for i := range meterSlots {
		// The current second is partial; count the full ones before it.
		if age := sec - l.slotSec[i]; age >= 1 && age <= meterSlots {
			sum += l.slotByte[i]
		}
	}
	s.Recent = sum / meterSlots
	return s
}

type backgroundKey struct{}

// Background returns a context that marks the calls made with it as
// background work (repair, give-back), not client I/O.
func Background(ctx context.Context) context.Context {
	return context.WithValue(ctx, backgroundKey{}, true)
}

// IsBackground reports whether ctx was marked by Background.
func IsBackground(ctx context.Context) bool {
	b, _ := ctx.Value(backgroundKey{}).(bool)
	return b
}
