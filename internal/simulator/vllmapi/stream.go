package vllmapi

import (
	"sync"
	"time"

	"github.com/halyard-dev/halyard/internal/simulator"
)

type tokenEvent struct {
	id    uint32
	index int
	at    time.Time
}

// requestSink is the bridge between the engine's step loop and one HTTP
// handler: the engine appends without blocking, the handler drains.
type requestSink struct {
	mu     sync.Mutex
	tokens []tokenEvent
	done   *simulator.Result
	notify chan struct{}
}

func newRequestSink() *requestSink {
	return &requestSink{notify: make(chan struct{}, 1)}
}

func (s *requestSink) Token(id uint32, index int, at time.Time) {
	s.mu.Lock()
	s.tokens = append(s.tokens, tokenEvent{id: id, index: index, at: at})
	s.mu.Unlock()
	s.signal()
}

func (s *requestSink) Done(r simulator.Result) {
	s.mu.Lock()
	s.done = &r
	s.mu.Unlock()
	s.signal()
}

func (s *requestSink) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// take moves the pending tokens into buf and reports the result if the
// request has ended.
func (s *requestSink) take(buf []tokenEvent) ([]tokenEvent, *simulator.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	buf = append(buf, s.tokens...)
	s.tokens = s.tokens[:0]
	return buf, s.done
}

var _ simulator.Sink = (*requestSink)(nil)
