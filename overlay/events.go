package overlay

import "sync"

// Subscribe returns a channel of membership changes and a function that
// ends the subscription (idempotent; it closes the channel). Close ends
// every subscription too.
//
// The contract:
//
//   - Delivery never blocks gossip. Each subscriber has its own queue,
//     holding at most one pending event per member: when a member changes
//     again before the subscriber has read its pending event, the two are
//     coalesced into one that carries the newest state (its Kind is the
//     newer kind, except that a Join followed by Updates stays a Join).
//     So the queue is bounded by the number of members, and a subscriber
//     that does not read stalls nobody, not even other subscribers.
//   - For each member, events arrive in order, and the last event
//     delivered always carries the member's latest state; intermediate
//     states may be skipped by a slow reader (a member that died and came
//     back may show up as a single Join). Events of different members may
//     be reordered among themselves.
//   - Only changes after Subscribe are delivered. To follow the whole
//     view, Subscribe first, then read Members, then apply events: each
//     event carries the full state, so applying one twice is harmless.
//   - Suspicion ([Suspect]) is not an event; read it from Members.
func (m *Membership) Subscribe() (<-chan Event, func()) {
	s := &subscriber{
		pending: make(map[string]Event),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		out:     make(chan Event),
	}
	go s.run()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		s.stop()
		return s.out, func() {}
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s.out, func() {
		m.mu.Lock()
		delete(m.subs, s)
		m.mu.Unlock()
		s.stop()
	}
}

// subscriber is one Subscribe call: a coalescing queue drained into out by
// its own goroutine.
type subscriber struct {
	mu      sync.Mutex // guards pending and order
	pending map[string]Event
	order   []string // IDs in pending, oldest first

	wake     chan struct{} // capacity 1: "pending may be non-empty"
	done     chan struct{} // closed by stop
	stopOnce sync.Once
	out      chan Event // closed by run when it returns
}

// push queues ev, coalescing it with the member's pending event. It never
// blocks (it only takes s.mu, which nobody holds while blocking).
func (s *subscriber) push(ev Event) {
	s.mu.Lock()
	if old, ok := s.pending[ev.ID]; ok {
		if old.Kind == EventJoin && ev.Kind == EventUpdate {
			ev.Kind = EventJoin
		}
	} else {
		s.order = append(s.order, ev.ID)
	}
	s.pending[ev.ID] = ev
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) pop() (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.order) == 0 {
		return Event{}, false
	}
	id := s.order[0]
	s.order = s.order[1:]
	if len(s.order) == 0 {
		s.order = nil // let the backing array go
	}
	ev := s.pending[id]
	delete(s.pending, id)
	return ev, true
}

func (s *subscriber) run() {
	defer close(s.out)
	for {
		ev, ok := s.pop()
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-s.done:
				return
			}
		}
		select {
		case s.out <- ev:
		case <-s.done:
			return
		}
	}
}

func (s *subscriber) stop() { s.stopOnce.Do(func() { close(s.done) }) }
