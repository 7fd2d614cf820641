package simclock

import (
	"container/heap"
	"sync"
	"time"
)

// Clock tells the time and runs functions later.
type Clock interface {
	// Now returns the current time of this clock.
	Now() time.Time
	// AfterFunc arranges for f to run once d has passed on this clock.
	// A non-positive d runs f as soon as possible, never synchronously
	// inside AfterFunc itself.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop cancels the call. It reports whether the call was still pending.
	Stop() bool
}

// Real is the wall clock. Its zero value is ready to use.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// AfterFunc calls time.AfterFunc; f runs on its own goroutine.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Virtual is a discrete-event clock. Time moves only when Run, RunUntil or
// Step pops the next scheduled event, and every event runs on the goroutine
// that drives the loop, in time order; events at the same instant run in the
// order they were scheduled. A Virtual clock is safe for concurrent use, but
// the usual pattern is one goroutine that schedules and runs everything.
type Virtual struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	events eventHeap
}

// NewVirtual returns a virtual clock that starts at start.
func NewVirtual(start time.Time) *Virtual {
	return &Virtual{now: start}
}

// Now returns the clock's current virtual time.
func (v *Virtual) Now() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.now
}

// AfterFunc schedules f at Now()+d. f runs when the loop reaches that time.
func (v *Virtual) AfterFunc(d time.Duration, f func()) Timer {
	if d < 0 {
		d = 0
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seq++
	e := &event{at: v.now.Add(d), seq: v.seq, f: f, clock: v}
	heap.Push(&v.events, e)
	return e
}

// Len returns the number of pending events.
func (v *Virtual) Len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.events)
}

// Step runs the earliest pending event, advancing the clock to its time.
// It reports false when no event is pending.
func (v *Virtual) Step() bool {
	v.mu.Lock()
	if len(v.events) == 0 {
		v.mu.Unlock()
		return false
	}
	e := heap.Pop(&v.events).(*event)
	e.index = -1
	if e.at.After(v.now) {
		v.now = e.at
	}
	v.mu.Unlock()
	e.f()
	return true
}

// Run runs events until none is pending and returns the number run.
func (v *Virtual) Run() int {
	n := 0
	for v.Step() {
		n++
	}
	return n
}

// RunUntil runs every event scheduled at or before t, then sets the clock to
// t if it is not already past it. It returns the number of events run.
func (v *Virtual) RunUntil(t time.Time) int {
	n := 0
	for {
		v.mu.Lock()
		if len(v.events) == 0 || v.events[0].at.After(t) {
			if t.After(v.now) {
				v.now = t
			}
			v.mu.Unlock()
			return n
		}
		v.mu.Unlock()
		v.Step()
		n++
	}
}

// Advance is RunUntil(Now()+d).
func (v *Virtual) Advance(d time.Duration) int {
	return v.RunUntil(v.Now().Add(d))
}

type event struct {
	at    time.Time
	seq   uint64
	f     func()
	index int
	clock *Virtual
}

// Stop removes the event from its clock's queue.
func (e *event) Stop() bool {
	v := e.clock
	v.mu.Lock()
	defer v.mu.Unlock()
	if e.index < 0 {
		return false
	}
	heap.Remove(&v.events, e.index)
	e.index = -1
	return true
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h eventHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *eventHeap) Push(x any) {
	e := x.(*event)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *eventHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return e
}

// Interface guards.
var (
	_ Clock = Real{}
	_ Clock = (*Virtual)(nil)
	_ Timer = (*event)(nil)
	_ Timer = (*time.Timer)(nil)
)
