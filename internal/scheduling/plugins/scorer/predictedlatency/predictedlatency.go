package predictedlatency

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/latencymodel"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
	"github.com/halyard-dev/halyard/internal/steptime"
)

// Type is the registered plugin type.
const Type = "predicted-latency"

// Request headers carrying a request's objectives, in milliseconds.
const (
	HeaderSLOTTFT = "x-halyard-slo-ttft-ms"
	HeaderSLOTPOT = "x-halyard-slo-tpot-ms"
)

// MetricSLOUnmeetable counts requests for which no candidate was predicted
// to meet the request's objectives.
const MetricSLOUnmeetable = "halyard_router_slo_unmeetable_total"

// sloPenaltyMs is added to the cost of an endpoint predicted to miss an
// objective: any endpoint that meets them wins, and among those that miss,
// the cheapest.
const sloPenaltyMs = 1e7

// What the scorer does when no candidate is predicted to meet a request's
// objectives (Params.Unmeetable).
const (
	// UnmeetableLeastCost picks the endpoint of least predicted cost, as
	// when some meet them: the request is late everywhere, and least late
	// there.
	UnmeetableLeastCost = "least-cost"
	// UnmeetableTriage sends the request to the endpoint already furthest
	// behind its TTFT objective, where it delays no request that could
	// still be on time, so that the other endpoints' queues stay under the
	// objective (goodput-maximising placement past capacity).
	UnmeetableTriage = "triage"
)

// Params configure a Scorer.
type Params struct {
	// Prior is the step-time model the online fit starts from. Default the
	// simulator's h100-llama3-8b (steptime.H100Llama3_8B).
	Prior *steptime.Coefficients `json:"prior,omitempty"`
	// MaxBatchedTokens is the engines' step token budget (vLLM's
	// max_num_batched_tokens), which chunks prefill. Default 8192.
	MaxBatchedTokens int `json:"maxBatchedTokens"`
	// Forgetting is the online fit's forgetting factor per observation, in
	// (0,1]. Default 0.999.
	Forgetting float64 `json:"forgetting"`
	// FrozenFit keeps the step-time model at Prior: the fit learns nothing
	// from observed timings. For an accelerator whose profile is known, and
	// for tests that compare two paths whose timings differ.
	FrozenFit bool `json:"frozenFit"`
	// PerEndpointFit fits each endpoint's step time on its own
	// observations; by default the scorer's endpoints share one fit (a pool
	// serves one model on one kind of accelerator), which learns from
	// every endpoint's traffic and so varies less.
	PerEndpointFit bool `json:"perEndpointFit"`
	// FutureWeight weighs the prefill time a request's uncached tokens
	// take from every request queued after it (the oracle's second term).
	// Default 1 (docs/scheduling.md has the sweep of 1 to 8).
	FutureWeight float64 `json:"futureWeight"`
	// StallWeight weighs the time the request's prefill adds to each
	// stream decoding on the endpoint, per stream. Default 0.
	StallWeight float64 `json:"stallWeight"`
	// DecodeWeight weighs the request's own predicted decode time (its
	// output tokens, max_tokens or DefaultOutputTokens, times the step
	// time of the decode batch it joins there), counted above the least
	// any candidate predicts, so that the cost is the request's predicted
	// end-to-end latency rather than its TTFT alone: a long answer avoids
	// an engine whose decode batch or context would slow every step of it.
	// A time every candidate shares says nothing of where to go and is
	// left out (it would only flatten the minCost/cost scores). Default 0:
	// TTFT alone. DecodePrefillRate also counts the prefill the engine has
	// been mixing into its steps (the predicted TPOT).
	DecodeWeight float64 `json:"decodeWeight"`
	// DecodePrefillRate makes the decode term use the predicted TPOT,
	// which includes the engine's recent prefill per step, instead of the
	// decode batch's step time alone. Default false: the recent rate is a
	// trailing average that says little of where the next prefills go
	// (the router decides that), and steering by it was measured to herd
	// (docs/benchmarks.md, "a fourth attempt").
	DecodePrefillRate bool `json:"decodePrefillRate"`
	// DecodeWhole makes the decode term charge the request's whole
	// predicted decode time, not only the part above the least candidate's.
	// The argmin is the same; the scores (minCost/cost) then weigh a TTFT
	// gap against the request's whole predicted latency, so that in a
	// profile with other scorers a gap that is small beside a long answer
	// counts little against them. Default false.
	DecodeWhole bool `json:"decodeWhole"`
	// DefaultOutputTokens is the output length assumed when a request sets
	// no max_tokens. Default 256.
	DefaultOutputTokens int `json:"defaultOutputTokens"`
	// TTFTObjectiveMs and TPOTObjectiveMs are the objectives of requests
	// that carry no header; 0 means none.
	TTFTObjectiveMs float64 `json:"ttftObjectiveMs"`
	TPOTObjectiveMs float64 `json:"tpotObjectiveMs"`
	// Unmeetable is what to do with a request that no candidate is
	// predicted to meet the objectives of: UnmeetableLeastCost (the
	// default) or UnmeetableTriage. With triage, when some endpoint's
	// queue alone (the prefill waiting ahead of the request) already
	// exceeds the TTFT objective, the request goes to the late endpoint
	// whose queue minus the request's own prefill there is longest: every
	// request queued after it there misses anyway, and a cached prefix is
	// still work avoided. With no endpoint late, or no TTFT objective, the
	// pick is least-cost.
	Unmeetable string `json:"unmeetable"`
	// TriageMaxWaitMs bounds how far behind a late endpoint may be to take
	// a triaged request: one whose wait exceeds it is passed over, and
	// when every late endpoint is, the pick is least-cost (which makes
	// another endpoint late, the next one to take them). It bounds a
	// triaged request's TTFT at about this plus its own prefill, for as
	// long as some endpoint is under it. 0 (the default) is no bound.
	TriageMaxWaitMs float64 `json:"triageMaxWaitMs"`
	// TriageMargin makes triage act only when the least predicted TTFT
	// exceeds the objective by more than this fraction of it: a request
	// that would miss narrowly on the least-cost endpoint goes there (the
	// prediction may be pessimistic), one that misses clearly is triaged.
	// Default 0.
	TriageMargin float64 `json:"triageMargin"`
	// ObjectiveWeight grades the penalty of an endpoint predicted to miss
	// the request's objectives by how far it misses them: ObjectiveWeight
	// times the request's predicted time beyond them (TTFT over its
	// objective, plus its output tokens times TPOT over its objective),
	// in milliseconds like the cost. Default 0: a flat penalty of 10^7 ms,
	// so that any endpoint predicted to meet them wins however long its
	// queue.
	ObjectiveWeight float64 `json:"objectiveWeight"`
	// ObjectiveOnStreams checks the TPOT objective against the streams
	// already decoding on an endpoint rather than the request's own
	// predicted TPOT: an endpoint misses it when its decoding streams'
	// predicted TPOT, with the stall the request's prefill adds spread
	// over a stream's output, exceeds the objective. An endpoint with no
	// stream decoding meets it. Default false.
	ObjectiveOnStreams bool `json:"objectiveOnStreams"`
	// SlackMs counts every cost within SlackMs of the least as the least:
	// those endpoints score 1, and a costlier one (least+SlackMs)/cost.
	// Where candidates' predicted costs differ by less than it, the
	// profile's other scorers decide (prefix affinity, load balance, KV
	// headroom) rather than a few milliseconds of predicted TTFT. Default
	// 0: the least cost alone scores 1.
	SlackMs float64 `json:"slackMs"`
	// SlackShare adds SlackShare times the least cost to SlackMs, a slack
	// that grows with the request's own predicted latency. Default 0.
	SlackShare float64 `json:"slackShare"`
	// SlackMaxMs caps the slack (SlackMs plus SlackShare times the least
	// cost); 0 is no cap. Past capacity, where queues are seconds long, a
	// slack proportional to them would hand the pick to the other scorers
	// across whole seconds of predicted wait.
	SlackMaxMs float64 `json:"slackMaxMs"`
	// HonorLoadOverride predicts an endpoint whose prefix affinity the
	// prefix-cache scorer's load override zeroed (its queue or KV usage too
	// far above the least) as holding none of the prompt: the cache hit it
	// would give is not counted, so that the request goes to another
	// endpoint unless this one is still the cheapest without it. Without
	// it, a prompt whose prefix one endpoint holds goes there however many
	// streams decode there, since the scorer minimises TTFT and a cached
	// prefix costs little to prefill. Default false.
	HonorLoadOverride bool `json:"honorLoadOverride"`
	// RemotePrefill is for the decode profile of a disaggregated pool: a
	// request's prompt arrives on the decode endpoint by KV transfer, so it
	// is predicted with no prefill of its own there (its context still
	// lengthens every decode step), and it counts as decoding from when it
	// is sent: its first token, after the remote prefill and the transfer,
	// says nothing of this endpoint's step time and feeds no fit. Pair it
	// with DecodeWeight, so that the cost is the request's predicted decode
	// time where it would join. Default false.
	RemotePrefill bool `json:"remotePrefill"`
	// RemoteDecode is for the prefill profile of a disaggregated pool: the
	// endpoint computes the prompt and one token, and the request decodes
	// elsewhere, so its TPOT objective is the decode profile's to check,
	// not this one's: a prefill endpoint's predicted TPOT is that of a
	// decode that will not happen there, the prefill it mixes into its
	// steps counted, and a miss of it would steer the prefill pick, or
	// under unmeetable: shed refuse the request, for the wrong reason.
	// Only the TTFT objective is checked here. Default false.
	RemoteDecode bool `json:"remoteDecode"`
}

// DefaultParams returns the defaults.
func DefaultParams() Params {
	return Params{MaxBatchedTokens: 8192, Forgetting: 0.999, FutureWeight: 1, DefaultOutputTokens: 256, Unmeetable: UnmeetableLeastCost}
}

// Validate reports the first invalid field, named by its path.
func (p Params) Validate() error {
	if p.Prior != nil {
		if err := p.Prior.Validate("params.prior"); err != nil {
			return err
		}
	}
	switch {
	case p.MaxBatchedTokens <= 0:
		return fmt.Errorf("params.maxBatchedTokens: must be positive, got %d", p.MaxBatchedTokens)
	case !(p.Forgetting > 0 && p.Forgetting <= 1):
		return fmt.Errorf("params.forgetting: must be in (0,1], got %v", p.Forgetting)
	case !(p.FutureWeight >= 0) || math.IsInf(p.FutureWeight, 0):
		return fmt.Errorf("params.futureWeight: must be a finite number >= 0, got %v", p.FutureWeight)
	case !(p.StallWeight >= 0) || math.IsInf(p.StallWeight, 0):
		return fmt.Errorf("params.stallWeight: must be a finite number >= 0, got %v", p.StallWeight)
	case !(p.DecodeWeight >= 0) || math.IsInf(p.DecodeWeight, 0):
		return fmt.Errorf("params.decodeWeight: must be a finite number >= 0, got %v", p.DecodeWeight)
	case p.DefaultOutputTokens <= 0:
		return fmt.Errorf("params.defaultOutputTokens: must be positive, got %d", p.DefaultOutputTokens)
	case !(p.TTFTObjectiveMs >= 0) || math.IsInf(p.TTFTObjectiveMs, 0):
		return fmt.Errorf("params.ttftObjectiveMs: must be a finite number >= 0, got %v", p.TTFTObjectiveMs)
	case !(p.TPOTObjectiveMs >= 0) || math.IsInf(p.TPOTObjectiveMs, 0):
		return fmt.Errorf("params.tpotObjectiveMs: must be a finite number >= 0, got %v", p.TPOTObjectiveMs)
	case !(p.TriageMaxWaitMs >= 0) || math.IsInf(p.TriageMaxWaitMs, 0):
		return fmt.Errorf("params.triageMaxWaitMs: must be a finite number >= 0, got %v", p.TriageMaxWaitMs)
	case !(p.TriageMargin >= 0) || math.IsInf(p.TriageMargin, 0):
		return fmt.Errorf("params.triageMargin: must be a finite number >= 0, got %v", p.TriageMargin)
	case p.Unmeetable != UnmeetableLeastCost && p.Unmeetable != UnmeetableTriage:
		return fmt.Errorf("params.unmeetable: must be %q or %q, got %q", UnmeetableLeastCost, UnmeetableTriage, p.Unmeetable)
	case !(p.ObjectiveWeight >= 0) || math.IsInf(p.ObjectiveWeight, 0):
		return fmt.Errorf("params.objectiveWeight: must be a finite number >= 0, got %v", p.ObjectiveWeight)
	case !(p.SlackMs >= 0) || math.IsInf(p.SlackMs, 0):
		return fmt.Errorf("params.slackMs: must be a finite number >= 0, got %v", p.SlackMs)
	case !(p.SlackShare >= 0) || math.IsInf(p.SlackShare, 0):
		return fmt.Errorf("params.slackShare: must be a finite number >= 0, got %v", p.SlackShare)
	case !(p.SlackMaxMs >= 0) || math.IsInf(p.SlackMaxMs, 0):
		return fmt.Errorf("params.slackMaxMs: must be a finite number >= 0, got %v", p.SlackMaxMs)
	}
	return nil
}

// Scorer is the predicted-latency scorer. It is safe for concurrent use.
type Scorer struct {
	tn       framework.TypedName
	stateKey framework.StateKey
	params   Params
	cfg      latencymodel.Config
	now      func() time.Time
	mu       sync.RWMutex
	engines  map[string]*latencymodel.Engine // by endpoint name, under mu
	unmet    atomic.Uint64
	desc     *prometheus.Desc
}

var (
	_ framework.Scorer           = (*Scorer)(nil)
	_ framework.PreRequest       = (*Scorer)(nil)
	_ framework.FirstToken       = (*Scorer)(nil)
	_ framework.ResponseComplete = (*Scorer)(nil)
	_ prometheus.Collector       = (*Scorer)(nil)
)

// Factory builds a Scorer from JSON params.
func Factory(name string, params json.RawMessage, h framework.Handle) (framework.Plugin, error) {
	p := DefaultParams()
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return New(name, p, h)
}

// New returns a Scorer named name.
func New(name string, p Params, h framework.Handle) (*Scorer, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	now := time.Now // a nil handle: the wall clock
	if h != nil {
		now = h.Now
	}
	fc := latencymodel.FitConfig{Forgetting: p.Forgetting, Frozen: p.FrozenFit}
	if p.Prior != nil {
		fc.Prior = *p.Prior
	}
	cfg := latencymodel.Config{Fit: fc, MaxBatchedTokens: p.MaxBatchedTokens}
	if !p.PerEndpointFit {
		cfg.Shared = latencymodel.NewFit(fc)
	}
	return &Scorer{
		tn:       framework.TypedName{Type: Type, Name: name},
		stateKey: framework.StateKey(Type + "/" + name + "/cycle"),
		params:   p,
		cfg:      cfg,
		now:      now,
		engines:  map[string]*latencymodel.Engine{},
		desc: prometheus.NewDesc(MetricSLOUnmeetable,
			"Requests for which no candidate endpoint was predicted to meet the request's TTFT and TPOT objectives.",
			nil, prometheus.Labels{"plugin": name}),
	}, nil
}

// TypedName returns the plugin's type and name.
func (s *Scorer) TypedName() framework.TypedName { return s.tn }

// Engine returns the scorer's estimate of endpoint name, creating it.
func (s *Scorer) Engine(name string) *latencymodel.Engine {
	s.mu.RLock()
	e := s.engines[name]
	s.mu.RUnlock()
	if e != nil {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e = s.engines[name]; e == nil {
		e = latencymodel.NewEngine(s.cfg)
		s.engines[name] = e
	}
	return e
}

// Candidate is the scorer's prediction for one endpoint.
type Candidate struct {
	Endpoint string
	Uncached int
	latencymodel.Prediction
	// CostMs is what the scorer minimises: TTFT, plus FutureWeight times
	// the request's own prefill time, plus StallWeight times the stall it
	// imposes on each stream decoding there, plus DecodeWeight times its
	// own decode time (above the least predicted, or whole with
	// DecodeWhole), plus a penalty when an objective is predicted missed.
	CostMs float64
	// MeetsSLO reports whether the request's objectives (if any) are
	// predicted met.
	MeetsSLO bool
}

// cycle is what Score leaves for PreRequest: the uncached tokens
// predicted on each endpoint, in one allocation per cycle.
type cycle []cycleEntry

type cycleEntry struct {
	name     string
	uncached int
	ttftMs   float64 // predicted, for a buffered answer's expected first token
}

// Objectives returns the request's TTFT and TPOT objectives in
// milliseconds: from its headers, else the params' defaults; 0 is none.
func (s *Scorer) Objectives(req *framework.Request) (ttftMs, tpotMs float64) {
	ttftMs, tpotMs = s.params.TTFTObjectiveMs, s.params.TPOTObjectiveMs
	if req == nil {
		return
	}
	if v, ok := headerMs(req.Headers, HeaderSLOTTFT); ok {
		ttftMs = v
	}
	if v, ok := headerMs(req.Headers, HeaderSLOTPOT); ok {
		tpotMs = v
	}
	return
}

// checked returns the objectives this scorer checks req against: its
// Objectives, without the TPOT objective under RemoteDecode.
func (s *Scorer) checked(req *framework.Request) (ttftMs, tpotMs float64) {
	ttftMs, tpotMs = s.Objectives(req)
	if s.params.RemoteDecode {
		tpotMs = 0
	}
	return ttftMs, tpotMs
}

// ObjectiveHeaders returns the request headers (lowercase, as the router
// hands them to the scheduler) that declare the objectives ttft and tpot
// (none for a zero one), for a client that sends its objectives on every
// request; nil when both are zero. Objectives reads them back.
func ObjectiveHeaders(ttft, tpot time.Duration) map[string]string {
	var h map[string]string
	for _, o := range []struct {
		name string
		d    time.Duration
	}{{HeaderSLOTTFT, ttft}, {HeaderSLOTPOT, tpot}} {
		if o.d <= 0 {
			continue
		}
		if h == nil {
			h = make(map[string]string, 2)
		}
		h[o.name] = strconv.FormatFloat(float64(o.d)/float64(time.Millisecond), 'g', -1, 64)
	}
	return h
}

func headerMs(h map[string]string, name string) (float64, bool) {
	v, ok := h[name]
	if !ok {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f > 0) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// Predict returns the scorer's prediction for req on each endpoint, in
// order. matched gives the tokens each endpoint holds (nil: none).
func (s *Scorer) Predict(req *framework.Request, endpoints []framework.Endpoint, matched []int) []Candidate {
	out := make([]Candidate, len(endpoints))
	s.predict(req, endpoints, matched, func(i int, c Candidate) { out[i] = c })
	return out
}

// predict calls each with the prediction of every endpoint, in order.
// each runs under the read lock of the engines and must not call Engine.
func (s *Scorer) predict(req *framework.Request, endpoints []framework.Endpoint, matched []int, each func(int, Candidate)) {
	ttftObj, tpotObj := s.checked(req)
	prompt := req.PromptTokens
	out := req.MaxTokens
	if out <= 0 {
		out = s.params.DefaultOutputTokens
	}
	var shared steptime.Coefficients
	if s.cfg.Shared != nil {
		shared = s.cfg.Shared.Coefficients() // once per cycle, not per endpoint
	}
	// With a decode term the costs wait for the least decode step.
	var pending []Candidate
	minStep := math.Inf(1)
	if s.params.DecodeWeight > 0 {
		pending = make([]Candidate, 0, len(endpoints))
	}
	// One read lock for the cycle's lookups rather than one per endpoint;
	// an endpoint seen for the first time is added under the write lock.
	now := s.now()
	s.mu.RLock()
	for i, e := range endpoints {
		m := 0
		if i < len(matched) {
			m = matched[i]
		}
		uncached := max(prompt-m, 0)
		if s.params.RemotePrefill {
			uncached = 0
		}
		met := e.Metrics()
		name := e.Metadata().Name
		eng := s.engines[name]
		if eng == nil {
			s.mu.RUnlock()
			eng = s.Engine(name)
			s.mu.RLock()
		}
		eng.Expire(now) // buffered answers past their expected first token
		coef := shared
		if s.cfg.Shared == nil {
			coef = eng.Coefficients()
		}
		pr := eng.PredictWith(coef, prompt, uncached, latencymodel.Scraped{Running: met.RunningRequests, Waiting: met.WaitingRequests})
		c := Candidate{Endpoint: name, Uncached: uncached, Prediction: pr, MeetsSLO: true}
		c.CostMs = pr.TTFTMs + s.params.FutureWeight*pr.Step.PrefillTokenMs*float64(uncached) +
			s.params.StallWeight*pr.StallMs*float64(pr.Decoding)
		if (ttftObj > 0 && pr.TTFTMs > ttftObj) || (tpotObj > 0 && s.tpotMs(pr, out) > tpotObj) {
			c.MeetsSLO = false
			c.CostMs += s.missPenalty(pr, ttftObj, tpotObj, out)
		}
		if pending != nil {
			pending = append(pending, c)
			minStep = min(minStep, s.decodeStep(pr))
			continue
		}
		each(i, c)
	}
	s.mu.RUnlock()
	if pending == nil {
		return
	}
	if s.params.DecodeWhole {
		minStep = 0
	}
	for i, c := range pending {
		c.CostMs += s.params.DecodeWeight * float64(out) * (s.decodeStep(c.Prediction) - minStep)
		each(i, c)
	}
}

// tpotMs is the TPOT the objective is checked against: the request's own
// predicted TPOT, or with ObjectiveOnStreams that of the streams decoding
// on the endpoint with the request's stall spread over out tokens (0
// where none decodes).
func (s *Scorer) tpotMs(pr latencymodel.Prediction, out int) float64 {
	if !s.params.ObjectiveOnStreams {
		return pr.TPOTMs
	}
	if pr.Decoding == 0 {
		return 0
	}
	return pr.TPOTMs + pr.StallMs/float64(out)
}

// missPenalty is the cost added to an endpoint predicted to miss the
// objectives: the flat penalty, or with ObjectiveWeight the request's
// predicted time beyond them, weighted.
func (s *Scorer) missPenalty(pr latencymodel.Prediction, ttftObj, tpotObj float64, out int) float64 {
	if s.params.ObjectiveWeight == 0 {
		return sloPenaltyMs
	}
	var over float64
	if ttftObj > 0 {
		over += max(pr.TTFTMs-ttftObj, 0)
	}
	if tpotObj > 0 {
		over += float64(out) * max(s.tpotMs(pr, out)-tpotObj, 0)
	}
	return s.params.ObjectiveWeight * over
}

// decodeStep is the step time the decode term charges: the predicted
// TPOT with DecodePrefillRate, else the decode batch's step alone.
func (s *Scorer) decodeStep(p latencymodel.Prediction) float64 {
	if s.params.DecodePrefillRate {
		return p.TPOTMs
	}
	return p.DecodeStepMs
}

// Score writes minCost/cost per endpoint: 1 for the cheapest (with a
// slack, floor/max(cost, floor), floor the least cost plus the slack). With
// Unmeetable triage and no endpoint predicted to meet the objectives, it
// writes 1 for the triage pick (triageKey's largest among the late
// endpoints) and 0 for the rest, when some endpoint is late.
func (s *Scorer) Score(_ context.Context, state *framework.CycleState, req *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	if req == nil || len(endpoints) == 0 {
		return
	}
	var matched []int
	if state != nil {
		if m, ok := framework.ReadAs[prefixcache.Matched](state, prefixcache.MatchedKey); ok && len(m.Tokens) == len(endpoints) {
			matched = m.Tokens
			if s.params.HonorLoadOverride && len(m.Overridden) == len(endpoints) {
				matched = slices.Clone(matched)
				for i, over := range m.Overridden {
					if over {
						matched[i] = 0
					}
				}
			}
		}
	}
	explain := framework.Explaining(state)
	var cands []Candidate
	cy := make(cycle, len(endpoints))
	lo, anyMet := math.Inf(1), false
	ttftObj := 0.0
	if s.params.Unmeetable == UnmeetableTriage {
		ttftObj, _ = s.Objectives(req)
	}
	capMs := s.params.TriageMaxWaitMs
	late, lateKey := -1, math.Inf(-1) // the triage pick among late endpoints
	leastTTFT := math.Inf(1)
	s.predict(req, endpoints, matched, func(i int, c Candidate) {
		scores[i] = c.CostMs
		cy[i] = cycleEntry{name: c.Endpoint, uncached: c.Uncached, ttftMs: c.TTFTMs}
		lo = min(lo, c.CostMs)
		anyMet = anyMet || c.MeetsSLO
		leastTTFT = min(leastTTFT, c.TTFTMs)
		if ttftObj > 0 {
			if wait := waitMs(c.Prediction, c.Uncached); wait > ttftObj && (capMs == 0 || wait <= capMs) {
				if k := triageKey(c.Prediction, c.Uncached); k > lateKey {
					late, lateKey = i, k
				}
			}
		}
		if explain {
			cands = append(cands, c)
		}
	})
	triage := !anyMet && late >= 0 && leastTTFT > ttftObj*(1+s.params.TriageMargin)
	const eps = 1e-3 // ms: keeps an all-zero cost finite
	slack := s.slack(lo)
	floor := lo + slack
	for i, cost := range scores[:len(endpoints)] {
		switch {
		case !triage:
			scores[i] = (floor + eps) / (max(cost, floor) + eps)
		case i == late:
			scores[i] = 1
		default:
			scores[i] = 0
		}
	}
	if !anyMet {
		s.unmet.Add(1)
	}
	if state == nil {
		return
	}
	state.Write(s.stateKey, cy)
	var un framework.Unmeetable
	if !anyMet {
		un.TTFTObjectiveMs, un.TPOTObjectiveMs = s.checked(req)
		un.LeastTTFTMs = leastTTFT
		state.Write(framework.UnmeetableKey, un)
	}
	if !explain {
		return
	}
	if !anyMet {
		framework.AddNote(state, fmt.Sprintf("%s: no endpoint is predicted to meet the objectives (%s)", s.tn, un.Objectives()))
	}
	if triage {
		c := cands[late]
		framework.AddNote(state, fmt.Sprintf("%s: triage: %s is already %.1fms behind (over the %gms TTFT objective), so the request goes there and the other endpoints' queues stay under the objective; predicted ttft %.1fms",
			s.tn, c.Endpoint, waitMs(c.Prediction, c.Uncached), ttftObj, c.TTFTMs))
	}
	if slack > 0 && !triage {
		framework.AddNote(state, fmt.Sprintf("%s: slack %.1fms: every cost up to %.1fms scores as the least", s.tn, slack, floor))
	}
	for _, c := range cands {
		framework.AddNote(state, fmt.Sprintf("%s: %s predicted ttft %.1fms tpot %.1fms, %d uncached tokens, %d queued prefill tokens, stall %.1fms on %d streams, cost %.1fms%s",
			s.tn, c.Endpoint, c.TTFTMs, c.TPOTMs, c.Uncached, c.WaitingTokens, c.StallMs, c.Decoding, c.CostMs, sloNote(c.MeetsSLO)))
	}
}

// slack is how far above the least cost lo a cost still scores 1.
func (s *Scorer) slack(lo float64) float64 {
	sl := s.params.SlackMs + s.params.SlackShare*lo
	if s.params.SlackMaxMs > 0 {
		sl = min(sl, s.params.SlackMaxMs)
	}
	return sl
}

// waitMs is the part of the predicted TTFT that the prefill queued ahead
// of the request takes: the TTFT's share of the queued tokens among the
// queued and the request's own uncached tokens (the prediction is linear
// in them but for the step rounding).
func waitMs(p latencymodel.Prediction, uncached int) float64 {
	total := p.WaitingTokens + uncached
	if total <= 0 {
		return 0
	}
	return p.TTFTMs * float64(p.WaitingTokens) / float64(total)
}

// triageKey ranks late endpoints for a request that meets its objectives
// nowhere: how far behind the endpoint is (its wait) less the prefill the
// request adds there (its predicted TTFT less the wait), so that of two
// endpoints about as far behind the one holding the request's prefix takes
// it.
func triageKey(p latencymodel.Prediction, uncached int) float64 {
	w := waitMs(p, uncached)
	return w - (p.TTFTMs - w)
}

func sloNote(met bool) string {
	if met {
		return ""
	}
	return ", misses the objectives"
}

// PreRequest records the request as sent to picked, with the uncached
// tokens predicted there; a request without a stream (no first token will
// be reported) is expected to end its prefill at its predicted TTFT.
func (s *Scorer) PreRequest(_ context.Context, state *framework.CycleState, req *framework.Request, picked framework.Endpoint) {
	if req == nil || picked == nil {
		return
	}
	name := picked.Metadata().Name
	uncached, ttftMs := req.PromptTokens, -1.0
	if state != nil {
		if c, ok := framework.ReadAs[cycle](state, s.stateKey); ok {
			for _, e := range c {
				if e.name == name {
					uncached, ttftMs = e.uncached, e.ttftMs
					break
				}
			}
		}
	}
	out := req.MaxTokens
	if out <= 0 {
		out = s.params.DefaultOutputTokens
	}
	now := s.now()
	eng := s.Engine(name)
	eng.Sent(req.ID, now, req.PromptTokens, uncached, out)
	switch {
	case s.params.RemotePrefill:
		// Decoding from now: no first token of its own is awaited here.
		eng.ExpectFirst(req.ID, now)
	case !req.Stream && ttftMs >= 0:
		// A buffered answer reports no first token: its prefill is taken
		// to end when predicted.
		eng.ExpectFirst(req.ID, now.Add(time.Duration(ttftMs*float64(time.Millisecond))))
	}
}

// FirstToken records that the request's prefill on ep is over.
func (s *Scorer) FirstToken(_ context.Context, req *framework.Request, ep framework.Endpoint) {
	if req == nil || ep == nil {
		return
	}
	s.Engine(ep.Metadata().Name).FirstToken(req.ID, s.now())
}

// ResponseComplete records the end of the request on ep; a streamed
// request's inter-token time feeds the endpoint's step-time fit.
func (s *Scorer) ResponseComplete(_ context.Context, req *framework.Request, ep framework.Endpoint, out framework.Outcome) {
	if req == nil || ep == nil {
		return
	}
	tokens := out.CompletionTokens
	if out.Err != nil {
		tokens = 0 // an aborted stream's timing says nothing of the step
	}
	s.Engine(ep.Metadata().Name).Done(req.ID, s.now(), tokens)
}

// Unmeetable returns how many requests found no endpoint predicted to meet
// their objectives.
func (s *Scorer) Unmeetable() uint64 { return s.unmet.Load() }

// Describe sends the scorer's metric description.
func (s *Scorer) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

// Collect sends the scorer's metrics.
func (s *Scorer) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(s.desc, prometheus.CounterValue, float64(s.unmet.Load()))
}

// DefaultPriorBaseMs is the base step time of the default prior, for tests
// that check the fit moved.
func DefaultPriorBaseMs() float64 { return steptime.H100Llama3_8B.BaseMs }
