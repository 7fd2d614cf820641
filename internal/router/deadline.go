package router

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Why an attempt's upstream context ended, when the router ended it. They
// are the context's cause (context.Cause).
var (
	// errHeaderTimeout: a streamed request got no response headers within
	// timeouts.responseHeader; the engine is hung, the request is retried.
	errHeaderTimeout = errors.New("no response headers within timeouts.responseHeader")
	// errFirstByteTimeout: no first chunk (stream) or no answer
	// (non-streamed) within timeouts.firstByte.
	errFirstByteTimeout = errors.New("no answer within timeouts.firstByte")
	// errIdleTimeout: silence longer than timeouts.streamIdle after the
	// first byte.
	errIdleTimeout = errors.New("silent for longer than timeouts.streamIdle")
	// errShutdown: the shutdown grace period ended with the request still
	// in flight.
	errShutdown = errors.New("the router is shutting down")
)

// watchdog cancels an attempt's context with a cause when the deadline it is
// armed with passes. It keeps one timer for the attempt: arming again
// (with the same cause or another) moves the deadline and resets the timer,
// without allocating. A firing that finds the deadline moved into the
// future (it raced with arm) or the watchdog stopped does nothing.
type watchdog struct {
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	timer    *time.Timer
	cause    error
	deadline time.Time
	armed    bool
}

func newWatchdog(cancel context.CancelCauseFunc) *watchdog { return &watchdog{cancel: cancel} }

// arm makes the context end with cause after d, replacing any earlier
// deadline.
func (w *watchdog) arm(d time.Duration, cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	// The deadline is taken before the timer starts, so that the timer
	// never fires before it.
	w.cause, w.deadline, w.armed = cause, time.Now().Add(d), true
	if w.timer == nil {
		w.timer = time.AfterFunc(d, w.fire)
		return
	}
	w.timer.Reset(d)
}

func (w *watchdog) fire() {
	w.mu.Lock()
	if !w.armed || time.Now().Before(w.deadline) {
		w.mu.Unlock()
		return
	}
	w.armed = false
	cause := w.cause
	w.mu.Unlock()
	w.cancel(cause)
}

// stop disarms the watchdog.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.armed = false
	if w.timer != nil {
		w.timer.Stop()
	}
}

// routerCause returns why actx ended if the router ended it (a timeout or
// the shutdown), or nil: still running, or ended by the client leaving.
func routerCause(actx context.Context) error {
	if actx.Err() == nil {
		return nil
	}
	switch c := context.Cause(actx); {
	case errors.Is(c, errHeaderTimeout), errors.Is(c, errFirstByteTimeout), errors.Is(c, errIdleTimeout), errors.Is(c, errShutdown):
		return c
	}
	return nil
}
