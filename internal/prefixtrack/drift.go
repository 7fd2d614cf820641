package prefixtrack

import (
	"fmt"
	"sync"
	"time"
)

// Defaults of DriftConfig.
const (
	DefaultDriftWindow = 5 * time.Minute
	// DefaultDriftMinTokens: below this many predicted or reported hit
	// tokens in the window there is nothing to compare (an idle endpoint)
	// and no ratio is given.
	DefaultDriftMinTokens = 1024
)

// DriftConfig configures a Drift.
type DriftConfig struct {
	// Window is the span over which predicted and reported hits are
	// compared; default 5m.
	Window time.Duration
	// MinTokens is the least number of hit tokens, predicted or reported,
	// in the window for a ratio; default 1024.
	MinTokens float64
}

// Drift compares, per endpoint, the prefix-cache hits the router predicted
// (the tokens it expected cached at the endpoint it picked) with the hits
// the engine reports (increases of vllm:prefix_cache_hits_total). Their
// agreement over the window, min/max in [0,1], is 1 when the two match and
// collapses towards 0 when they disagree either way: the router predicts
// hits the engine does not see (an engine with prefix caching off, an
// approximate index fooled by evictions), or the engine hits where the
// router predicts none (a router tokenising differently from the engine,
// so that its hashes never meet the engine's). The two totals say which.
// It is safe for concurrent use.
type Drift struct {
	cfg DriftConfig

	mu  sync.Mutex
	eps map[string]*driftState
}

type driftState struct {
	predicted float64 // total predicted hit tokens
	reported  float64 // total engine-reported hit tokens since followed
	haveHits  bool
	lastHits  float64
	// samples of the totals, oldest first, one per window/driftSlots at
	// most; the newest is always the latest observation.
	samples []driftSample
}

type driftSample struct {
	at                  time.Time
	predicted, reported float64
}

// driftSlots is how finely the window is sampled.
const driftSlots = 60

// NewDrift returns a Drift.
func NewDrift(cfg DriftConfig) (*Drift, error) {
	if cfg.Window == 0 {
		cfg.Window = DefaultDriftWindow
	}
	if cfg.MinTokens == 0 {
		cfg.MinTokens = DefaultDriftMinTokens
	}
	if cfg.Window < 0 || cfg.MinTokens < 0 {
		return nil, fmt.Errorf("drift: window and minTokens must be positive, got %s and %v", cfg.Window, cfg.MinTokens)
	}
	return &Drift{cfg: cfg, eps: make(map[string]*driftState)}, nil
}

func (d *Drift) stateLocked(endpoint string) *driftState {
	s, ok := d.eps[endpoint]
	if !ok {
		s = &driftState{}
		d.eps[endpoint] = s
	}
	return s
}

// Predicted records that a request was sent to endpoint where the router
// expected tokens of its prompt to be cached.
func (d *Drift) Predicted(endpoint string, tokens int) {
	if tokens <= 0 {
		return
	}
	d.mu.Lock()
	d.stateLocked(endpoint).predicted += float64(tokens)
	d.mu.Unlock()
}

// ObserveEngine records the engine's vllm:prefix_cache_hits_total as
// scraped at at. A counter that went down means a restarted engine: its
// new count is all new hits.
func (d *Drift) ObserveEngine(endpoint string, hits float64, at time.Time) {
	if at.IsZero() {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stateLocked(endpoint)
	switch {
	case !s.haveHits:
		s.haveHits = true
	case hits >= s.lastHits:
		s.reported += hits - s.lastHits
	default:
		s.reported += hits
	}
	s.lastHits = hits
	cur := driftSample{at: at, predicted: s.predicted, reported: s.reported}
	n := len(s.samples)
	// The newest sample floats: the latest observation replaces it until it
	// lies a slot after the sample before it, then it stays.
	if n >= 2 && s.samples[n-1].at.Sub(s.samples[n-2].at) < d.cfg.Window/driftSlots {
		s.samples[n-1] = cur
	} else {
		s.samples = append(s.samples, cur)
	}
	// Drop samples older than the one that starts the window.
	cut := 0
	for cut+1 < len(s.samples) && !s.samples[cut+1].at.After(at.Add(-d.cfg.Window)) {
		cut++
	}
	if cut > 0 {
		s.samples = append(s.samples[:0], s.samples[cut:]...)
	}
}

// DriftStatus is an endpoint's comparison.
type DriftStatus struct {
	// PredictedTotal and ReportedTotal are the totals since the endpoint
	// was first seen.
	PredictedTotal, ReportedTotal float64
	// Predicted and Reported are the hit tokens within the window.
	Predicted, Reported float64
	// Ratio is min/max of Predicted and Reported; meaningful only when OK.
	Ratio float64
	// OK is false when the window holds too few hit tokens to compare.
	OK bool
}

// Status returns endpoint's comparison over the window ending at the last
// observation.
func (d *Drift) Status(endpoint string) DriftStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.eps[endpoint]
	if !ok {
		return DriftStatus{}
	}
	st := DriftStatus{PredictedTotal: s.predicted, ReportedTotal: s.reported}
	if len(s.samples) < 2 {
		return st
	}
	first, last := s.samples[0], s.samples[len(s.samples)-1]
	st.Predicted, st.Reported = last.predicted-first.predicted, last.reported-first.reported
	lo, hi := min(st.Predicted, st.Reported), max(st.Predicted, st.Reported)
	if hi >= d.cfg.MinTokens {
		st.Ratio, st.OK = lo/hi, true
	}
	return st
}

// Endpoints returns the endpoints with data.
func (d *Drift) Endpoints() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.eps))
	for n := range d.eps {
		out = append(out, n)
	}
	return out
}

// Forget drops an endpoint that went away.
func (d *Drift) Forget(endpoint string) {
	d.mu.Lock()
	delete(d.eps, endpoint)
	d.mu.Unlock()
}
