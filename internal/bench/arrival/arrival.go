package arrival

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/halyard-dev/halyard/internal/bench/workload"
)

// Kind names an arrival process.
type Kind string

// Arrival processes.
const (
	// Poisson sends at Rate requests per second on average, with
	// exponentially distributed gaps; an infinite rate sends everything at
	// once.
	Poisson Kind = "poisson"
	// Trace sends each request at its trace timestamp divided by TimeScale.
	Trace Kind = "trace"
	// Concurrency keeps Concurrency requests in flight (closed loop).
	Concurrency Kind = "concurrency"
)

// Spec describes how requests arrive.
type Spec struct {
	Kind Kind
	// Rate is requests per second for Poisson; math.Inf(1) for all at once.
	Rate float64
	// TimeScale speeds a trace up: 2 replays it twice as fast. Default 1.
	TimeScale float64
	// Concurrency is the number of requests in flight for Concurrency.
	Concurrency int
	// Seed seeds the Poisson gaps.
	Seed uint64
}

// Validate checks the spec, naming the field at fault.
func (s Spec) Validate() error {
	switch s.Kind {
	case Poisson:
		if !(s.Rate > 0) {
			return fmt.Errorf("rate: must be positive, got %v", s.Rate)
		}
	case Trace:
		if s.TimeScale < 0 || math.IsNaN(s.TimeScale) || math.IsInf(s.TimeScale, 0) {
			return fmt.Errorf("time scale: must be positive, got %v", s.TimeScale)
		}
	case Concurrency:
		if s.Concurrency <= 0 {
			return fmt.Errorf("concurrency: must be positive, got %d", s.Concurrency)
		}
	default:
		return fmt.Errorf("arrival: unknown kind %q (want poisson, trace or concurrency)", s.Kind)
	}
	return nil
}

// String describes the spec for reports, e.g. "poisson 4/s".
func (s Spec) String() string {
	switch s.Kind {
	case Poisson:
		if math.IsInf(s.Rate, 1) {
			return "all at once"
		}
		return fmt.Sprintf("poisson %g/s", s.Rate)
	case Trace:
		return fmt.Sprintf("trace ×%g", s.timeScale())
	case Concurrency:
		return fmt.Sprintf("concurrency %d", s.Concurrency)
	}
	return string(s.Kind)
}

func (s Spec) timeScale() float64 {
	if s.TimeScale == 0 {
		return 1
	}
	return s.TimeScale
}

// ErrNotTimed is returned when a trace schedule is asked of a workload
// without timestamps.
var ErrNotTimed = errors.New("the workload has no timestamps of its own")

// Schedule returns the send offset of each of w's requests, in workload
// order and never decreasing, or nil for closed-loop concurrency.
func Schedule(s Spec, w workload.Workload) ([]time.Duration, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	n := w.Len()
	switch s.Kind {
	case Concurrency:
		return nil, nil
	case Trace:
		if !w.Timed() {
			return nil, fmt.Errorf("trace arrivals for %s: %w", w.Name(), ErrNotTimed)
		}
		out := make([]time.Duration, n)
		scale := s.timeScale()
		var first time.Duration
		for i := range n {
			at := w.Shape(i).At
			if i == 0 {
				first = at
			}
			out[i] = time.Duration(float64(at-first) / scale)
			if i > 0 && out[i] < out[i-1] {
				out[i] = out[i-1]
			}
		}
		return out, nil
	default: // Poisson
		out := make([]time.Duration, n)
		if math.IsInf(s.Rate, 1) {
			return out, nil
		}
		r := rand.New(rand.NewPCG(s.Seed, 0xa77))
		var t float64
		for i := range n {
			if i > 0 {
				t += r.ExpFloat64() / s.Rate
			}
			out[i] = time.Duration(t * float64(time.Second))
		}
		return out, nil
	}
}
