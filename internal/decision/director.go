package decision

import (
	"context"
	"errors"
	"fmt"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Target is a pool a route sends requests to, and the model name its
// engines are asked for ("" for each endpoint's own model).
type Target struct {
	Pool  string
	Model string
}

// EngineModel is the model name sent to ep for t.
func EngineModel(t Target, ep framework.Endpoint) string {
	if t.Model != "" {
		return t.Model
	}
	return ep.Metadata().Model
}

// Accountable is an endpoint whose in-flight counts (what
// framework.Endpoint.InFlight reads) the decision keeps.
type Accountable interface {
	Begin(tokens int64)
	End(tokens int64)
}

// Prefilling is an endpoint that also counts the requests sent to it
// whose first token has not come back, and their uncached prompt tokens:
// the router's estimate of the prefill it has outstanding there (what
// Capacity reads with queue.prefillTokens).
type Prefilling interface {
	PrefillBegin(tokens int64)
	PrefillEnd(tokens int64)
	Prefilling() (requests, tokens int64)
}

// Options configure a Director. Pools and Profiles are required.
type Options struct {
	// Pools gives each pool's endpoints.
	Pools Pools
	// Profiles resolves profile names (routes', and the pd blocks').
	Profiles *Profiles
	// Handle gives the candidate filters their clock (outlier ejection).
	Handle framework.Handle
	// PD are the disaggregated pools by name.
	PD map[string]config.PDSpec
	// DefaultOutputTokens is counted in flight for a request without
	// max_tokens.
	DefaultOutputTokens int
	// Scheduled, when set, is told how long each scheduling cycle took,
	// by profile.
	Scheduled func(profile string, took time.Duration)
	// Explain, when set, completes an explanation (the router adds each
	// candidate's prefix index mode).
	Explain func(*framework.Explanation)
}

// Director holds the decision of where requests go. It is safe for
// concurrent use.
type Director struct {
	pools     Pools
	profiles  *Profiles
	filters   *candidateFilters
	pd        map[string]*PDPool
	output    int
	scheduled func(string, time.Duration)
	explain   func(*framework.Explanation)
}

// New builds a Director, and the planners of its disaggregated pools.
func New(o Options) (*Director, error) {
	if o.Pools == nil || o.Profiles == nil {
		return nil, errors.New("decision: Pools and Profiles are required")
	}
	h := o.Handle
	if h == nil {
		h = scheduling.Handle{}
	}
	filters, err := newCandidateFilters(h)
	if err != nil {
		return nil, err
	}
	d := &Director{pools: o.Pools, profiles: o.Profiles, filters: filters, pd: map[string]*PDPool{},
		output: o.DefaultOutputTokens, scheduled: o.Scheduled, explain: o.Explain}
	for name, spec := range o.PD {
		if d.pd[name], err = newPDPool(name, spec, o.Profiles); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Profiles returns the director's profile resolution.
func (d *Director) Profiles() *Profiles { return d.profiles }

// Call is one request's passage through the decision.
type Call struct {
	// Req is the scheduling request; the decision sets its TargetModel.
	Req *framework.Request
	// Profile is the route's profile (Profiles.Get).
	Profile *scheduling.Profile
	// Explain asks for explanations and exclusions.
	Explain bool
	// Prepare, when set, runs before each scheduling cycle with the model
	// the candidates' engines serve (the router tokenises the prompt with
	// that model's tokenizer).
	Prepare func(engineModel string)
	// Queue, when set (admission's fair queue is on), leaves out the
	// candidates that have no room by Capacity's rule while others have
	// some: the queue admitted the request for the room it saw, and the
	// pick goes where that room is (an endpoint not prefilling, under its
	// concurrency and KV bounds).
	Queue *config.QueueConfig
	// ShedUnmeetable (admission's unmeetable: shed, for an admitted
	// request) makes Decide hand back, instead of a pick, a request that
	// no target's candidates are predicted to meet the objectives of
	// (Decision.Unmeetable), on its first attempt: admission refuses it.
	ShedUnmeetable bool
}

// Decision is where one attempt of a request goes.
type Decision struct {
	Endpoint framework.Endpoint
	Target   Target
	// Fallback: Target is one of the route's fallbacks.
	Fallback    bool
	State       *framework.CycleState
	Explanation *framework.Explanation
	// Excluded are the endpoints of the targets' pools that could not
	// serve, when explaining.
	Excluded []Exclusion
	// Prefix is the prefix-cache scorer's score of Endpoint (the fraction
	// of the prompt the index says it holds), when the profile has one.
	Prefix    float64
	HasPrefix bool
	// PD is set for the decode request of a disaggregated pool.
	PD *PDDecision
	// Unmeetable, with Call.ShedUnmeetable, is set when Decide found no
	// target with an endpoint predicted to meet the request's objectives
	// (and returned false): the caller has admission refuse the request.
	Unmeetable *framework.Unmeetable

	tokens int64
	// prefill is the uncached prompt counted as outstanding prefill on
	// Endpoint until its first token (or its end); prefilling says it
	// still is.
	prefill    int64
	prefilling bool
}

// Decide runs the targets in order (the split's pick, then the fallbacks)
// until one has an endpoint the profile picks, leaving out the endpoints
// already tried when others remain. With c.ShedUnmeetable, on the first
// attempt, a target whose candidates are all predicted to miss the
// request's objectives is passed over; when every target is, Decide
// returns false with Decision.Unmeetable set.
func (d *Director) Decide(ctx context.Context, c *Call, targets []Target, tried []framework.Endpoint) (Decision, bool) {
	var dec Decision
	shed := c.ShedUnmeetable && len(tried) == 0
	for i, t := range targets {
		cands, excluded := d.Candidates(ctx, c.Req, t.Pool, c.Explain)
		dec.Excluded = append(dec.Excluded, excluded...)
		cands = notTried(cands, tried)
		if len(cands) == 0 {
			continue
		}
		if c.Queue != nil {
			cands = withRoom(cands, *c.Queue, c.Explain, &dec.Excluded)
		}
		d.prepare(c, t, cands[0], i)
		state := framework.NewCycleState()
		t0 := time.Now()
		res, err := c.Profile.Schedule(ctx, state, c.Req, cands, c.Explain)
		if d.scheduled != nil {
			d.scheduled(c.Profile.Name(), time.Since(t0))
		}
		if res.Explanation != nil {
			if d.explain != nil {
				d.explain(res.Explanation)
			}
			dec.Explanation = res.Explanation
		}
		if err != nil || len(res.Picked) == 0 {
			continue
		}
		if shed {
			if un := unmeetable(state); un != nil {
				if dec.Unmeetable == nil {
					dec.Unmeetable = un
				}
				continue
			}
		}
		ep := res.Picked[0]
		dec.Endpoint, dec.Target, dec.Fallback, dec.State = ep, t, i > 0, state
		if ps, ok := framework.ReadAs[*prefixScores](state, prefixScoresKey); ok {
			dec.Prefix, dec.HasPrefix = ps.scoreOf(ep)
		}
		dec.Unmeetable = nil // a fallback meets the objectives
		return dec, true
	}
	return dec, false
}

// unmeetable is what the cycle's predicted-latency scorer recorded when no
// candidate was predicted to meet the request's objectives, or nil.
func unmeetable(state *framework.CycleState) *framework.Unmeetable {
	if state == nil {
		return nil
	}
	if un, ok := framework.ReadAs[framework.Unmeetable](state, framework.UnmeetableKey); ok {
		return &un
	}
	return nil
}

// prepare sets the engine model of the request for target i and lets the
// caller prepare the prompt for it.
func (d *Director) prepare(c *Call, t Target, first framework.Endpoint, i int) {
	if c.Req.TargetModel == "" || i > 0 {
		c.Req.TargetModel = EngineModel(t, first)
	}
	if c.Prepare != nil {
		c.Prepare(first.Metadata().Model)
	}
}

// OutputTokens is the output a request is expected to produce: its
// max_tokens, or Options.DefaultOutputTokens without one.
func (d *Director) OutputTokens(req *framework.Request) int {
	if req.MaxTokens > 0 {
		return req.MaxTokens
	}
	return d.output
}

// InFlightTokens is what a request counts in flight: its prompt plus
// OutputTokens.
func (d *Director) InFlightTokens(req *framework.Request) int64 {
	return int64(req.PromptTokens + d.OutputTokens(req))
}

// Sent is the load accounting hook for a request about to be sent to
// dec.Endpoint: it counts it in flight and runs the profile's PreRequest
// hooks (for a PD decode, the decode profile's, and records the prompt as
// held by the decode endpoint).
func (d *Director) Sent(ctx context.Context, c *Call, dec *Decision) {
	dec.tokens = d.InFlightTokens(c.Req)
	if a, ok := dec.Endpoint.(Accountable); ok {
		a.Begin(dec.tokens)
	}
	if p, ok := dec.Endpoint.(Prefilling); ok && dec.PD == nil {
		dec.prefill = uncachedPrompt(c.Req, dec)
		dec.prefilling = true
		p.PrefillBegin(dec.prefill)
	}
	if dec.PD != nil {
		dec.PD.Pool.planner.DecodeSent(ctx, c.Req, dec.PD.Plan)
		return
	}
	c.Profile.PreRequest(ctx, dec.State, c.Req, dec.Endpoint)
}

// FirstByte is the load accounting hook for the first token of a streamed
// answer from dec.Endpoint: it runs the profile's FirstToken hooks. The
// router calls it for streams only (a buffered answer's first byte comes
// with its last token); a PD decode's first token includes the KV
// transfer, so the decode profile is not told.
func (d *Director) FirstByte(ctx context.Context, c *Call, dec *Decision) {
	if dec.PD != nil {
		return
	}
	prefillEnd(dec)
	c.Profile.FirstToken(ctx, c.Req, dec.Endpoint)
}

// Done is the load accounting hook for the end of a request sent with
// Sent: it runs the profile's ResponseComplete hooks and ends the
// in-flight count.
func (d *Director) Done(ctx context.Context, c *Call, dec *Decision, out framework.Outcome) {
	if dec.PD != nil {
		dec.PD.Pool.planner.DecodeDone(ctx, c.Req, dec.Endpoint, out)
	} else {
		c.Profile.ResponseComplete(ctx, c.Req, dec.Endpoint, out)
	}
	prefillEnd(dec)
	if a, ok := dec.Endpoint.(Accountable); ok {
		a.End(dec.tokens)
	}
}

// prefillEnd ends dec's outstanding prefill, once: at the first token of
// a stream, or at the end of an answer that had none.
func prefillEnd(dec *Decision) {
	if !dec.prefilling {
		return
	}
	dec.prefilling = false
	if p, ok := dec.Endpoint.(Prefilling); ok {
		p.PrefillEnd(dec.prefill)
	}
}

// uncachedPrompt is the prompt tokens the engine is expected to compute:
// the prompt less the share the prefix scorer says dec.Endpoint holds
// (at least one token).
func uncachedPrompt(req *framework.Request, dec *Decision) int64 {
	n := float64(req.PromptTokens)
	if dec.HasPrefix {
		n *= 1 - dec.Prefix
	}
	return max(int64(n), 1)
}

// errNoProfile is a pd block naming an unknown profile.
func errNoProfile(pool, field, name string) error {
	return fmt.Errorf("pools[%s].pd.%s: %q is neither in router.profiles nor a preset", pool, field, name)
}
