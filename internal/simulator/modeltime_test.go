package simulator

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/simclock"
)

// lateClock is a real-clock stand-in whose timers fire only when the test
// says, at whatever time the test sets: it shows how the engine behaves
// when timers fire late.
type lateClock struct {
	mu      sync.Mutex
	now     time.Time
	pending []func()
}

func (c *lateClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *lateClock) AfterFunc(_ time.Duration, f func()) simclock.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = append(c.pending, f)
	return nopTimer{}
}

// fire sets the time and runs the one pending timer.
func (c *lateClock) fire(t *testing.T, at time.Time) {
	t.Helper()
	c.mu.Lock()
	c.now = at
	if len(c.pending) != 1 {
		c.mu.Unlock()
		t.Fatalf("%d timers pending, want 1", len(c.pending))
	}
	f := c.pending[0]
	c.pending = nil
	c.mu.Unlock()
	f()
}

type nopTimer struct{}

func (nopTimer) Stop() bool { return false }

func TestModelTimeAbsorbsLateTimers(t *testing.T) {
	clock := &lateClock{now: t0}
	e, err := NewEngine(testConfig(), clock)
	if err != nil {
		t.Fatal(err)
	}
	r := submit(t, e, "a", prompt(100, 1), 3)
	// The kick fires 3ms late, the first step's end 7ms late: the model
	// still starts at the arrival and ends steps when planned.
	clock.fire(t, t0.Add(3*time.Millisecond))
	clock.fire(t, t0.Add(27*time.Millisecond)) // planned end 20ms
	// b arrives at 25ms (real), after the model time of the step just
	// planned (20ms): it must wait for the next step, as in virtual time.
	clock.mu.Lock()
	clock.now = t0.Add(25 * time.Millisecond)
	clock.mu.Unlock()
	b := submit(t, e, "b", prompt(10, 2), 1)
	clock.fire(t, t0.Add(40*time.Millisecond)) // planned end 31ms
	clock.fire(t, t0.Add(43*time.Millisecond)) // planned end 43ms (b prefill + a decode)
	if got, want := r.times, []time.Duration{ms(20), ms(31), ms(31 + 10 + 1 + 1)}; !equalDurations(got, want) {
		t.Errorf("token times %v, want %v (model time)", got, want)
	}
	if b.result == nil || b.result.Scheduled.Sub(t0) != ms(31) {
		t.Errorf("b scheduled at %v, want 31ms (the first step after its arrival)", b.result)
	}
	if s := e.Snapshot(); s.Resyncs != 0 {
		t.Errorf("resyncs = %d, want 0", s.Resyncs)
	}
}

func TestModelTimeResyncsAfterLongStall(t *testing.T) {
	clock := &lateClock{now: t0}
	e, err := NewEngine(testConfig(), clock)
	if err != nil {
		t.Fatal(err)
	}
	r := submit(t, e, "a", prompt(100, 1), 2)
	clock.fire(t, t0)
	stall := t0.Add(20*time.Millisecond + MaxModelLag + time.Millisecond)
	clock.fire(t, stall) // planned end 20ms, fired after a long stall
	if got := r.times[0]; got != stall.Sub(t0) {
		t.Errorf("first token at %v, want the real time %v after a resync", got, stall.Sub(t0))
	}
	if s := e.Snapshot(); s.Resyncs != 1 {
		t.Errorf("resyncs = %d, want 1", s.Resyncs)
	}
}

// TestModelTimeResyncWarningsAreRateLimited: on a machine too busy for the
// engine to keep up, resyncs are logged at warning level at most once per
// ResyncLogInterval (the ones in between at debug level, counted in the next
// warning), without a duplicate model attribute; Snapshot counts them all.
func TestModelTimeResyncWarningsAreRateLimited(t *testing.T) {
	var buf bytes.Buffer
	cfg := testConfig()
	cfg.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("model", cfg.Model)
	clock := &lateClock{now: t0}
	e, err := NewEngine(cfg, clock)
	if err != nil {
		t.Fatal(err)
	}
	submit(t, e, "a", prompt(100, 1), 6)
	clock.fire(t, t0)
	// Every step fires long after it was due: each one resyncs.
	late := 20*time.Millisecond + MaxModelLag + time.Millisecond
	at := t0
	for _, gap := range []time.Duration{late, late, late, ResyncLogInterval, late} {
		at = at.Add(gap)
		clock.fire(t, at)
	}
	type entry struct {
		Level   string `json:"level"`
		Msg     string `json:"msg"`
		Resyncs uint64 `json:"resyncs_since_last_warning"`
	}
	var got []entry
	for line := range strings.Lines(buf.String()) {
		if strings.Count(line, `"model":`) != 1 {
			t.Errorf("log line without exactly one model attribute: %s", line)
		}
		var en entry
		if err := json.Unmarshal([]byte(line), &en); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if strings.Contains(en.Msg, "fell behind") {
			got = append(got, en)
		}
	}
	want := []entry{
		{"WARN", "engine fell behind the real clock; resyncing model time", 1},
		{"DEBUG", "engine fell behind the real clock; resyncing model time", 0},
		{"DEBUG", "engine fell behind the real clock; resyncing model time", 0},
		{"WARN", "engine fell behind the real clock; resyncing model time", 3},
		{"DEBUG", "engine fell behind the real clock; resyncing model time", 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resync logs (-want +got):\n%s", diff)
	}
	if s := e.Snapshot(); s.Resyncs != 5 {
		t.Errorf("resyncs = %d, want 5", s.Resyncs)
	}
}

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
