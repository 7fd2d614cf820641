package router

import (
	"context"
	"errors"
	"testing"
	"time"
)

// waitCause waits (with a generous deadline) for ctx to end and returns its
// cause.
func waitCause(t *testing.T, ctx context.Context) error {
	t.Helper()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(30 * time.Second):
		t.Fatal("the watchdog never fired")
		return nil
	}
}

func TestWatchdog(t *testing.T) {
	const long = time.Hour
	tests := []struct {
		name string
		arm  func(wd *watchdog)
		want error
	}{
		{"fires with its cause", func(wd *watchdog) { wd.arm(time.Millisecond, errHeaderTimeout) }, errHeaderTimeout},
		{"re-armed with another cause fires with the last", func(wd *watchdog) {
			wd.arm(long, errHeaderTimeout)
			wd.arm(time.Millisecond, errIdleTimeout)
		}, errIdleTimeout},
		{"re-armed after firing was due uses the new deadline", func(wd *watchdog) {
			// The first deadline has passed but its timer (an hour
			// away) has not fired: re-arming replaces it. Setting the
			// deadline by hand keeps the first cause from firing
			// between the two arms on a slow machine.
			wd.arm(long, errFirstByteTimeout)
			wd.mu.Lock()
			wd.deadline = time.Now().Add(-time.Millisecond)
			wd.mu.Unlock()
			wd.arm(time.Millisecond, errIdleTimeout)
		}, errIdleTimeout},
		{"re-armed after stop fires again", func(wd *watchdog) {
			wd.arm(long, errFirstByteTimeout)
			wd.stop()
			wd.arm(time.Millisecond, errIdleTimeout)
		}, errIdleTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			wd := newWatchdog(cancel)
			defer wd.stop()
			tc.arm(wd)
			if got := waitCause(t, ctx); !errors.Is(got, tc.want) {
				t.Errorf("cause %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWatchdogMovedDeadline: a timer that fires while the deadline has
// been moved into the future (arm racing with the firing) does not cancel.
func TestWatchdogMovedDeadline(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	wd := newWatchdog(cancel)
	defer wd.stop()
	wd.arm(time.Hour, errIdleTimeout)
	wd.fire() // as if the timer fired early or raced with arm
	if ctx.Err() != nil {
		t.Fatalf("cancelled before the deadline: %v", context.Cause(ctx))
	}
	wd.stop()
	wd.mu.Lock()
	wd.deadline = time.Now().Add(-time.Second) // due, but stopped
	wd.mu.Unlock()
	wd.fire()
	if ctx.Err() != nil {
		t.Fatalf("a stopped watchdog cancelled: %v", context.Cause(ctx))
	}
}
