package virtual

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/bench/workload"
)

// Load shapes.
const (
	ShapeStep    = "step"
	ShapeDiurnal = "diurnal"
)

// Shape is an arrival rate that changes over time. Requests keep the
// workload's order and are time-warped onto the shape: a timed workload (a
// trace) keeps its own bursts, since request i arrives when the shape's
// expected count reaches what the trace's was at its timestamp; an untimed
// one gets Poisson arrivals at the shape's rate. Requests the shape has no
// room for (past its end) are not sent.
type Shape struct {
	// Kind is step or diurnal.
	Kind string `json:"kind"`
	// Step: Rate requests per second, Factor times that during
	// [At, At+Length), then Rate again until End (default At+2·Length).
	Rate   float64         `json:"rate,omitempty"`
	Factor float64         `json:"factor,omitempty"`
	At     config.Duration `json:"at,omitempty"`
	Length config.Duration `json:"length,omitempty"`
	End    config.Duration `json:"end,omitempty"`
	// Diurnal: one day compressed into Period, the rate a raised cosine
	// from Trough·Peak at the start (midnight) to Peak at Period/2 (noon)
	// and back: Peak·(Trough + (1−Trough)·(1−cos 2πt/Period)/2). Peak 0
	// (timed workloads only) fits the whole workload into the day.
	Period config.Duration `json:"period,omitempty"`
	Trough float64         `json:"trough,omitempty"`
	Peak   float64         `json:"peak,omitempty"`
	// Repeat lays Repeat copies of a trace workload end to end (each with
	// its own seed) before warping, for a longer day at the same rates.
	Repeat int `json:"repeat,omitempty"`
}

func (s *Shape) validate() error {
	switch s.Kind {
	case ShapeStep:
		if !(s.Rate > 0) || !(s.Factor > 0) || s.At.Duration <= 0 || s.Length.Duration <= 0 {
			return errors.New("arrival.shape: step needs rate > 0, factor > 0, at > 0 and length > 0")
		}
	case ShapeDiurnal:
		if s.Period.Duration <= 0 || s.Trough < 0 || s.Trough > 1 || s.Peak < 0 {
			return errors.New("arrival.shape: diurnal needs period > 0, 0 <= trough <= 1 and peak >= 0")
		}
	default:
		return fmt.Errorf("arrival.shape.kind: want step or diurnal, got %q", s.Kind)
	}
	if s.Repeat < 0 || s.Repeat > 100 {
		return fmt.Errorf("arrival.shape.repeat: must be 0 to 100, got %d", s.Repeat)
	}
	return nil
}

// String describes the shape for reports.
func (s *Shape) String() string {
	if s.Kind == ShapeStep {
		return fmt.Sprintf("step %g/s ×%g at %s for %s", s.Rate, s.Factor, s.At.Duration, s.Length.Duration)
	}
	return fmt.Sprintf("diurnal day in %s, trough %.0f%% of peak %.3g/s", s.Period.Duration, s.Trough*100, s.Peak)
}

// end is when the shape stops sending.
func (s *Shape) end() time.Duration {
	if s.Kind == ShapeStep {
		if s.End.Duration > 0 {
			return s.End.Duration
		}
		return s.At.Duration + 2*s.Length.Duration
	}
	return s.Period.Duration
}

// count is the expected requests by offset t (the cumulative rate).
func (s *Shape) count(t float64) float64 {
	if s.Kind == ShapeStep {
		at, l := s.At.Seconds(), s.Length.Seconds()
		switch {
		case t < at:
			return s.Rate * t
		case t < at+l:
			return s.Rate*at + s.Rate*s.Factor*(t-at)
		default:
			return s.Rate*at + s.Rate*s.Factor*l + s.Rate*(t-at-l)
		}
	}
	p := s.Period.Seconds()
	return s.Peak * (s.Trough*t + (1-s.Trough)/2*(t-p/(2*math.Pi)*math.Sin(2*math.Pi*t/p)))
}

// at inverts count by bisection (count never decreases).
func (s *Shape) at(n float64) float64 {
	lo, hi := 0.0, s.end().Seconds()
	for range 60 {
		mid := (lo + hi) / 2
		if s.count(mid) < n {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

// schedule returns the send offsets of w's requests that fit in the shape
// (a prefix of the workload), and fills a diurnal Peak left at 0.
func (s *Shape) schedule(w workload.Workload, seed uint64) ([]time.Duration, error) {
	n := w.Len()
	if n == 0 {
		return nil, nil
	}
	// u[i] is request i's position in expected-count units.
	u := make([]float64, n)
	if w.Timed() {
		first, last := w.Shape(0).At, w.Shape(n-1).At
		span := (last - first).Seconds()
		if span <= 0 {
			return nil, errors.New("arrival.shape: the trace spans no time")
		}
		for i := range n {
			u[i] = (w.Shape(i).At - first).Seconds() / span * float64(n-1)
		}
		if s.Kind == ShapeDiurnal && s.Peak == 0 {
			s.Peak = 1
			s.Peak = float64(n) / s.count(s.Period.Seconds())
		}
	} else {
		if s.Kind == ShapeDiurnal && s.Peak == 0 {
			return nil, errors.New("arrival.shape.peak: required for a workload without timestamps")
		}
		r := rand.New(rand.NewPCG(seed, 0x5ca1e))
		acc := 0.0
		for i := range n {
			acc += r.ExpFloat64()
			u[i] = acc
		}
	}
	total := s.count(s.end().Seconds())
	out := make([]time.Duration, 0, n)
	for i := range n {
		if u[i] > total {
			break
		}
		out = append(out, time.Duration(s.at(u[i])*float64(time.Second)))
		if k := len(out); k > 1 && out[k-1] < out[k-2] {
			out[k-1] = out[k-2]
		}
	}
	return out, nil
}

// repeated lays copies of a timed workload of standalone requests end to
// end (each copy built with its own seed, so no prompt text repeats), for a
// shape that needs more requests than the trace has.
type repeated struct {
	parts []workload.Workload
	span  time.Duration // one copy's span plus its mean gap
}

func newRepeated(parts []workload.Workload) (*repeated, error) {
	w := parts[0]
	n := w.Len()
	if n < 2 || !w.Timed() {
		return nil, errors.New("arrival.shape.repeat: needs a trace workload")
	}
	for i := range n {
		if w.Shape(i).Session >= 0 {
			return nil, errors.New("arrival.shape.repeat: the workload has multi-turn sessions")
		}
	}
	first, last := w.Shape(0).At, w.Shape(n-1).At
	return &repeated{parts: parts, span: last - first + (last-first)/time.Duration(n-1)}, nil
}

func (r *repeated) Name() string { return r.parts[0].Name() }
func (r *repeated) Len() int     { return len(r.parts) * r.parts[0].Len() }
func (r *repeated) Timed() bool  { return true }

func (r *repeated) Shape(i int) workload.Shape {
	n := r.parts[0].Len()
	s := r.parts[i/n].Shape(i % n)
	s.At += time.Duration(i/n) * r.span
	return s
}

func (r *repeated) Request(i int) *workload.Request {
	n := r.parts[0].Len()
	q := *r.parts[i/n].Request(i % n)
	q.Shape, q.Index = r.Shape(i), i
	q.ID = fmt.Sprintf("%s.%d", q.ID, i/n)
	return &q
}

var _ workload.Workload = (*repeated)(nil)
