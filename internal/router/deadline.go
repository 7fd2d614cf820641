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
// armed with passes. Re-arming with the same cause resets the timer without
// allocating; a new cause replaces the timer, so that a timer firing while
// being replaced reports the cause it was armed with.
type watchdog struct {
	cancel context.CancelCauseFunc

	mu    sync.Mutex
	timer *time.Timer
	cause error
}

func newWatchdog(cancel context.CancelCauseFunc) *watchdog { return &watchdog{cancel: cancel} }

// arm makes the context end with cause after d.
func (w *watchdog) arm(d time.Duration, cause error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil && errors.Is(w.cause, cause) {
		w.timer.Reset(d)
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.cause = cause
	w.timer = time.AfterFunc(d, func() { w.cancel(cause) })
}

// stop disarms the watchdog.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
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
