package autoscale

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Targets are the per-engine load an engine should carry: the autoscaler
// asks for as many engines as the observed totals divided by these. A zero
// target is not used.
type Targets struct {
	// WaitingPerEngine is the number of requests waiting in an engine's
	// queue (vllm:num_requests_waiting) an engine should carry.
	WaitingPerEngine float64 `json:"waitingPerEngine,omitempty"`
	// RunningPerEngine is the requests an engine runs at once
	// (vllm:num_requests_running; Knative's concurrency target).
	RunningPerEngine float64 `json:"runningPerEngine,omitempty"`
	// KVUsage is the share of an engine's KV cache (0–1) in use.
	KVUsage float64 `json:"kvUsage,omitempty"`
	// PrefillTokensPerEngine is the prompt tokens sent to an engine and
	// not yet prefilled (the router counts them until the first token).
	PrefillTokensPerEngine float64 `json:"prefillTokensPerEngine,omitempty"`
	// TokensPerSecondPerEngine is the generated tokens per second of one
	// engine.
	TokensPerSecondPerEngine float64 `json:"tokensPerSecondPerEngine,omitempty"`
	// RequestsPerSecondPerEngine is the arrival rate one engine serves
	// within the objectives (measured: the smallest static fleet that
	// meets them at a known rate).
	RequestsPerSecondPerEngine float64 `json:"requestsPerSecondPerEngine,omitempty"`
	// Attainment is the share of requests (0–1) that must meet the TTFT and
	// TPOT objectives; below it the autoscaler adds a group even when the
	// load targets are met, and never removes one.
	Attainment float64 `json:"attainment,omitempty"`
}

func (t Targets) validate(path string) error {
	var errs []error
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"waitingPerEngine", t.WaitingPerEngine}, {"runningPerEngine", t.RunningPerEngine}, {"kvUsage", t.KVUsage},
		{"prefillTokensPerEngine", t.PrefillTokensPerEngine}, {"tokensPerSecondPerEngine", t.TokensPerSecondPerEngine}, {"requestsPerSecondPerEngine", t.RequestsPerSecondPerEngine},
		{"attainment", t.Attainment},
	} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			errs = append(errs, fmt.Errorf("%s.%s: must be a non-negative number, got %v", path, f.name, f.v))
		}
	}
	if t.KVUsage > 1 {
		errs = append(errs, fmt.Errorf("%s.kvUsage: must be at most 1, got %v", path, t.KVUsage))
	}
	if t.Attainment > 1 {
		errs = append(errs, fmt.Errorf("%s.attainment: must be at most 1, got %v", path, t.Attainment))
	}
	if len(errs) == 0 && t.WaitingPerEngine == 0 && t.RunningPerEngine == 0 && t.KVUsage == 0 && t.PrefillTokensPerEngine == 0 && t.TokensPerSecondPerEngine == 0 && t.RequestsPerSecondPerEngine == 0 {
		errs = append(errs, fmt.Errorf("%s: at least one load target is required", path))
	}
	return errors.Join(errs...)
}

// PDPolicy scales the prefill and decode roles of disaggregated serving
// apart: each role has its own targets (computed from that role's signals),
// and the prefill:decode ratio of instances is kept within bounds.
type PDPolicy struct {
	// Prefill and Decode are the roles' targets.
	Prefill Targets `json:"prefill"`
	Decode  Targets `json:"decode"`
	// MinRatio and MaxRatio bound prefill instances / decode instances
	// (0: no bound).
	MinRatio float64 `json:"minRatio,omitempty"`
	MaxRatio float64 `json:"maxRatio,omitempty"`
	// MinPerRole and MaxPerRole bound each role's instances (defaults 1
	// and 64).
	MinPerRole int `json:"minPerRole,omitempty"`
	MaxPerRole int `json:"maxPerRole,omitempty"`
}

// Policy is how a model scales. Durations are plain time.Duration here; the
// API types and the bench's scenario convert theirs.
type Policy struct {
	// MinGroups and MaxGroups bound the groups; MinGroups may be 0 (scale
	// to zero after IdleToZero without traffic).
	MinGroups int `json:"minGroups"`
	MaxGroups int `json:"maxGroups"`
	// EnginesPerGroup is how many engines (serving endpoints) one group
	// adds; default 1.
	EnginesPerGroup int `json:"enginesPerGroup,omitempty"`
	// Targets are the per-engine targets.
	Targets Targets `json:"targets"`
	// StableWindow is the window signals are averaged over for an ordinary
	// decision; default 60s.
	StableWindow time.Duration `json:"stableWindow,omitempty"`
	// PanicWindow is the short window that detects a step in demand;
	// default 6s. PanicThreshold (default 2) is the ratio of the groups
	// the panic window asks for to the ready groups that enters panic
	// mode: the autoscaler then scales on the short window and does not
	// scale down until StableWindow has passed without panic. Zero
	// PanicWindow with a negative PanicThreshold turns panic mode off.
	PanicWindow    time.Duration `json:"panicWindow,omitempty"`
	PanicThreshold float64       `json:"panicThreshold,omitempty"`
	// ScaleUpStabilization: scale up only to the lowest recommendation of
	// this window (default 0: at once). ScaleDownStabilization: scale down
	// only to the highest recommendation of this window (default 5m).
	ScaleUpStabilization   time.Duration `json:"scaleUpStabilization,omitempty"`
	ScaleDownStabilization time.Duration `json:"scaleDownStabilization,omitempty"`
	// MaxScaleUpGroups is how many groups may be added per ScaleUpPeriod
	// (default 4 per 15s); MaxScaleDownGroups how many may be removed per
	// ScaleDownPeriod (default 1 per 60s).
	MaxScaleUpGroups   int           `json:"maxScaleUpGroups,omitempty"`
	ScaleUpPeriod      time.Duration `json:"scaleUpPeriod,omitempty"`
	MaxScaleDownGroups int           `json:"maxScaleDownGroups,omitempty"`
	ScaleDownPeriod    time.Duration `json:"scaleDownPeriod,omitempty"`
	// Tolerance ignores a change smaller than this share of the current
	// groups (HPA's --horizontal-pod-autoscaler-tolerance); default 0.
	Tolerance float64 `json:"tolerance,omitempty"`
	// ColdStart is the time a new group takes until it serves, used until
	// starts have been observed (ObserveColdStart); default 2m. The
	// autoscaler scales for the demand its trend predicts one cold start
	// ahead. Forecast false turns that off.
	ColdStart time.Duration `json:"coldStart,omitempty"`
	Forecast  *bool         `json:"forecast,omitempty"`
	// TrendWindow is the window the trend is fitted over (a least-squares
	// line through what each observation asks for); default 5m, at least
	// StableWindow. Longer windows are steadier on bursty traffic.
	TrendWindow time.Duration `json:"trendWindow,omitempty"`
	// HoldWhileStarting (default on): while groups asked for are still
	// starting, add more only when the demand is a step (the panic
	// threshold, or 2) above the groups asked for.
	HoldWhileStarting *bool `json:"holdWhileStarting,omitempty"`
	// IdleToZero is how long a model with MinGroups 0 must see no request
	// before its last group goes; default 10m.
	IdleToZero time.Duration `json:"idleToZero,omitempty"`
	// PD, when set, scales prefill and decode instances apart.
	PD *PDPolicy `json:"pd,omitempty"`
}

// Default fills unset fields with the defaults documented on each.
func (p *Policy) Default() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if p.EnginesPerGroup == 0 {
		p.EnginesPerGroup = 1
	}
	def(&p.StableWindow, 60*time.Second)
	if p.PanicThreshold == 0 {
		p.PanicThreshold = 2
	}
	if p.PanicThreshold > 0 {
		def(&p.PanicWindow, 6*time.Second)
	}
	def(&p.ScaleDownStabilization, 5*time.Minute)
	if p.MaxScaleUpGroups == 0 {
		p.MaxScaleUpGroups = 4
	}
	def(&p.ScaleUpPeriod, 15*time.Second)
	if p.MaxScaleDownGroups == 0 {
		p.MaxScaleDownGroups = 1
	}
	def(&p.ScaleDownPeriod, 60*time.Second)
	def(&p.ColdStart, 2*time.Minute)
	if p.Forecast == nil {
		on := true
		p.Forecast = &on
	}
	def(&p.IdleToZero, 10*time.Minute)
	if p.HoldWhileStarting == nil {
		on := true
		p.HoldWhileStarting = &on
	}
	def(&p.TrendWindow, max(5*time.Minute, p.StableWindow))
	if pd := p.PD; pd != nil {
		if pd.MinPerRole == 0 {
			pd.MinPerRole = 1
		}
		if pd.MaxPerRole == 0 {
			pd.MaxPerRole = 64
		}
	}
}

// Validate checks a defaulted policy; errors name the field.
func (p *Policy) Validate() error {
	var errs []error
	if p.MinGroups < 0 {
		errs = append(errs, fmt.Errorf("minGroups: must not be negative, got %d", p.MinGroups))
	}
	if p.MaxGroups < 1 || p.MaxGroups < p.MinGroups {
		errs = append(errs, fmt.Errorf("maxGroups: must be at least 1 and at least minGroups (%d), got %d", p.MinGroups, p.MaxGroups))
	}
	if p.EnginesPerGroup < 1 {
		errs = append(errs, fmt.Errorf("enginesPerGroup: must be at least 1, got %d", p.EnginesPerGroup))
	}
	if p.PD == nil {
		if err := p.Targets.validate("targets"); err != nil {
			errs = append(errs, err)
		}
	} else {
		for _, r := range []struct {
			path string
			t    Targets
		}{{"pd.prefill", p.PD.Prefill}, {"pd.decode", p.PD.Decode}} {
			if err := r.t.validate(r.path); err != nil {
				errs = append(errs, err)
			}
		}
		if p.PD.MinRatio < 0 || p.PD.MaxRatio < 0 || (p.PD.MaxRatio > 0 && p.PD.MinRatio > p.PD.MaxRatio) {
			errs = append(errs, fmt.Errorf("pd: want 0 <= minRatio <= maxRatio, got %v and %v", p.PD.MinRatio, p.PD.MaxRatio))
		}
		if p.PD.MinPerRole < 1 || p.PD.MaxPerRole < p.PD.MinPerRole {
			errs = append(errs, fmt.Errorf("pd: want 1 <= minPerRole <= maxPerRole, got %d and %d", p.PD.MinPerRole, p.PD.MaxPerRole))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"stableWindow", p.StableWindow}, {"panicWindow", p.PanicWindow},
		{"scaleUpStabilization", p.ScaleUpStabilization}, {"scaleDownStabilization", p.ScaleDownStabilization},
		{"scaleUpPeriod", p.ScaleUpPeriod}, {"scaleDownPeriod", p.ScaleDownPeriod},
		{"coldStart", p.ColdStart}, {"idleToZero", p.IdleToZero}, {"trendWindow", p.TrendWindow},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", d.name, d.v))
		}
	}
	if p.PanicThreshold > 0 && (p.PanicWindow <= 0 || p.PanicWindow > p.StableWindow) {
		errs = append(errs, fmt.Errorf("panicWindow: must be positive and at most stableWindow (%s), got %s", p.StableWindow, p.PanicWindow))
	}
	if p.TrendWindow < p.StableWindow {
		errs = append(errs, fmt.Errorf("trendWindow: must be at least stableWindow (%s), got %s", p.StableWindow, p.TrendWindow))
	}
	if p.PanicThreshold > 0 && p.PanicThreshold <= 1 {
		errs = append(errs, fmt.Errorf("panicThreshold: must be above 1 (or negative: off), got %v", p.PanicThreshold))
	}
	if p.MaxScaleUpGroups < 1 || p.MaxScaleDownGroups < 1 {
		errs = append(errs, fmt.Errorf("maxScaleUpGroups, maxScaleDownGroups: must be at least 1, got %d and %d", p.MaxScaleUpGroups, p.MaxScaleDownGroups))
	}
	if p.Tolerance < 0 || p.Tolerance >= 1 {
		errs = append(errs, fmt.Errorf("tolerance: must be in [0,1), got %v", p.Tolerance))
	}
	return errors.Join(errs...)
}
