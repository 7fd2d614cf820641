package latencymodel

import (
	"math"
	"sync"

	"github.com/halyard-dev/halyard/internal/steptime"
)

// featureScale brings the form's terms to comparable magnitudes (a step
// has about 1 base, 10³ prefill tokens, 10² decode sequences and 10⁵ context
// tokens), so that the least-squares recursion stays well conditioned.
var featureScale = [4]float64{1, 1e3, 1e2, 1e5}

// Fit is a recursive least-squares estimate of step-time coefficients with
// exponential forgetting, started from a prior. Each observation is the mean
// step time over an interval and the interval's mean batch composition. The
// covariance is bounded by the prior's, so that a long run of uninformative
// observations (an idle engine) cannot wind it up. It is safe for
// concurrent use, so that engines of one pool (same model, same
// accelerator) may share one fit.
type Fit struct {
	mu     sync.Mutex
	theta  [4]float64    // scaled coefficients
	p      [4][4]float64 // covariance of theta
	p0     [4]float64    // prior variances (diagonal), also the bound
	lambda float64
	n      int
	frozen bool
}

// FitConfig tunes a Fit.
type FitConfig struct {
	// Prior is where the fit starts. Zero means steptime.H100Llama3_8B.
	Prior steptime.Coefficients
	// PriorWeight is the relative standard deviation of the prior: 1 lets
	// data move each coefficient by about its own size quickly. Default 1.
	PriorWeight float64
	// Forgetting is the per-observation forgetting factor in (0,1]; the
	// fit remembers about 1/(1-Forgetting) observations. Default 0.999.
	Forgetting float64
	// Frozen keeps the fit at its prior: observations are counted but move
	// nothing. For a known accelerator, and for tests that drive two paths
	// with different timings and need the same predictions on both.
	Frozen bool
}

// NewFit returns a fit at its prior.
func NewFit(c FitConfig) *Fit {
	if c.Prior.IsZero() {
		c.Prior = steptime.H100Llama3_8B
	}
	if !(c.PriorWeight > 0) {
		c.PriorWeight = 1
	}
	if !(c.Forgetting > 0 && c.Forgetting <= 1) {
		c.Forgetting = 0.999
	}
	f := &Fit{lambda: c.Forgetting, frozen: c.Frozen}
	v := c.Prior.Vector()
	for i := range v {
		f.theta[i] = v[i] * featureScale[i]
		sd := c.PriorWeight * max(math.Abs(f.theta[i]), 1e-3)
		f.p0[i] = sd * sd
		f.p[i][i] = f.p0[i]
	}
	return f
}

// Observe adds one observation: over an interval the engine's steps took
// stepMs on average while each step held prefill prefill tokens, decode
// decoding sequences and context tokens of context, on average. Non-finite
// or negative inputs are ignored.
func (f *Fit) Observe(prefill, decode, context, stepMs float64) {
	x := [4]float64{1, prefill, decode, context}
	for i := range x {
		x[i] /= featureScale[i]
		if !(x[i] >= 0) || math.IsInf(x[i], 0) {
			return
		}
	}
	if !(stepMs >= 0) || math.IsInf(stepMs, 0) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	if f.frozen {
		return
	}
	// Standard RLS update with forgetting lambda and unit noise variance.
	var px [4]float64
	for i := range 4 {
		for j := range 4 {
			px[i] += f.p[i][j] * x[j]
		}
	}
	denom := f.lambda
	for i := range 4 {
		denom += x[i] * px[i]
	}
	var pred float64
	for i := range 4 {
		pred += f.theta[i] * x[i]
	}
	err := stepMs - pred
	for i := range 4 {
		f.theta[i] += px[i] / denom * err
	}
	for i := range 4 {
		for j := range 4 {
			f.p[i][j] = (f.p[i][j] - px[i]*px[j]/denom) / f.lambda
		}
	}
	// Bound the covariance by the prior's: scale it down when a diagonal
	// term grows past its prior variance (windup without excitation).
	s := 1.0
	for i := range 4 {
		if r := f.p[i][i] / f.p0[i]; r > s {
			s = r
		}
	}
	if s > 1 {
		for i := range 4 {
			for j := range 4 {
				f.p[i][j] /= s
			}
		}
	}
}

// Coefficients returns the current estimate, each coefficient clamped at
// zero (a step never gets faster with more work).
func (f *Fit) Coefficients() steptime.Coefficients {
	f.mu.Lock()
	defer f.mu.Unlock()
	var v [4]float64
	for i := range v {
		v[i] = max(0, f.theta[i]/featureScale[i])
	}
	return steptime.FromVector(v)
}

// Observations returns how many observations the fit has taken.
func (f *Fit) Observations() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}
