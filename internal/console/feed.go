package console

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Decision is where the router sent one request: published when the
// engine's answer begins (the response headers), so that a stream shows up
// at once.
type Decision struct {
	// ID is the router's request id (the X-Request-Id of the answer).
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Model is the public model; Pool the target that served and Fallback
	// whether it was a fallback.
	Model    string `json:"model"`
	Pool     string `json:"pool"`
	Fallback bool   `json:"fallback,omitempty"`
	Profile  string `json:"profile"`
	// Endpoint is the endpoint that served (a disaggregated pool's decode
	// endpoint); Prefill its prefill endpoint, if any.
	Endpoint string `json:"endpoint"`
	Prefill  string `json:"prefill,omitempty"`
	Attempt  int    `json:"attempt"`
	// PredictedHit is the prefix-cache scorer's predicted share of the
	// prompt already cached on Endpoint, when it scored.
	PredictedHit *float64 `json:"predictedHit,omitempty"`
	// Explain is the compact explanation, as x-halyard-explain gives it.
	Explain string `json:"explain"`
	// Explanation is the scheduling cycle's (the decode profile's for a
	// disaggregated pool).
	Explanation *framework.Explanation `json:"explanation,omitempty"`
	// Excluded are endpoints left out before scheduling, with the reason.
	Excluded []Exclusion `json:"excluded,omitempty"`
}

// Exclusion is an endpoint left out before scheduling.
type Exclusion struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Outcome is how a request that got a Decision ended.
type Outcome struct {
	ID     string `json:"id"`
	Status int    `json:"status"`
	// DurationMs is the router's whole handling; TTFTMs the time to the
	// first token as the client saw it (0: none).
	DurationMs       float64 `json:"durationMs"`
	TTFTMs           float64 `json:"ttftMs,omitempty"`
	PromptTokens     int     `json:"promptTokens,omitempty"`
	CompletionTokens int     `json:"completionTokens,omitempty"`
	CachedTokens     int     `json:"cachedTokens,omitempty"`
}

// Event is one entry of the feed: a Decision or an Outcome.
type Event struct {
	Decision *Decision `json:"decision,omitempty"`
	Outcome  *Outcome  `json:"outcome,omitempty"`
}

// Feed keeps the most recent events in a ring of fixed size and hands new
// ones to its subscribers. Publishers ask Watching first: with no
// subscriber the router builds no event at all. A subscriber that does not
// keep up loses events (Dropped counts them) rather than slowing the
// router. The zero value is not usable; use NewFeed.
type Feed struct {
	watchers atomic.Int32
	dropped  atomic.Int64

	mu   sync.Mutex
	ring []Event
	next int // the ring's next slot
	full bool
	subs map[chan Event]struct{}
}

// subscriberBuffer is how many events a subscriber may be behind.
const subscriberBuffer = 256

// NewFeed returns a feed that remembers the last size events (at least 1).
func NewFeed(size int) *Feed {
	return &Feed{ring: make([]Event, max(size, 1)), subs: map[chan Event]struct{}{}}
}

// Watching reports whether anyone is subscribed; one atomic load.
func (f *Feed) Watching() bool { return f.watchers.Load() > 0 }

// Dropped is the number of events subscribers missed for being slow.
func (f *Feed) Dropped() int64 { return f.dropped.Load() }

// Publish remembers ev and sends it to the subscribers that have room.
func (f *Feed) Publish(ev Event) {
	if !f.Watching() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ring[f.next] = ev
	f.next = (f.next + 1) % len(f.ring)
	f.full = f.full || f.next == 0
	for ch := range f.subs {
		select {
		case ch <- ev:
		default:
			f.dropped.Add(1)
		}
	}
}

// Recent returns the remembered events, oldest first.
func (f *Feed) Recent() []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recentLocked()
}

func (f *Feed) recentLocked() []Event {
	if !f.full {
		return append([]Event(nil), f.ring[:f.next]...)
	}
	out := make([]Event, 0, len(f.ring))
	out = append(out, f.ring[f.next:]...)
	return append(out, f.ring[:f.next]...)
}

// Subscribe returns the remembered events and a channel of the new ones,
// with nothing lost or repeated between them; cancel ends the
// subscription (the channel is then never written again).
func (f *Feed) Subscribe() (recent []Event, events <-chan Event, cancel func()) {
	ch := make(chan Event, subscriberBuffer)
	f.mu.Lock()
	recent = f.recentLocked()
	f.subs[ch] = struct{}{}
	f.watchers.Add(1)
	f.mu.Unlock()
	var once sync.Once
	return recent, ch, func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.subs, ch)
			f.watchers.Add(-1)
			f.mu.Unlock()
		})
	}
}
