package decision

import (
	"context"
	"fmt"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/pd"
)

// PDPool is a disaggregated pool: its pd block and its planner.
type PDPool struct {
	Name string
	Spec config.PDSpec

	planner         *pd.Planner
	prefill, decode *scheduling.Profile
}

func newPDPool(name string, spec config.PDSpec, profiles *Profiles) (*PDPool, error) {
	get := func(field, n string) (*scheduling.Profile, error) {
		if !profiles.Has(n) {
			return nil, errNoProfile(name, field, n)
		}
		p, err := profiles.Get(n)
		if err != nil {
			return nil, fmt.Errorf("pools[%s].pd.%s: %w", name, field, err)
		}
		return p, nil
	}
	pf, err := get("prefillProfile", spec.PrefillProfile)
	if err != nil {
		return nil, err
	}
	dc, err := get("decodeProfile", spec.DecodeProfile)
	if err != nil {
		return nil, err
	}
	planner, err := pd.New(pd.FromSpec(&spec), pf, dc, pd.NewApproximateIndex())
	if err != nil {
		return nil, fmt.Errorf("pools[%s].pd: %w", name, err)
	}
	return &PDPool{Name: name, Spec: spec, planner: planner, prefill: pf, decode: dc}, nil
}

// Planner returns the pool's planner (its configuration, NextPrefill,
// NextDecode).
func (p *PDPool) Planner() *pd.Planner { return p.planner }

// PDPools reports whether the director has disaggregated pools.
func (d *Director) PDPools() bool { return len(d.pd) > 0 }

// PDChoice is the disaggregated pool a request goes to and its candidates.
type PDChoice struct {
	Pool     *PDPool
	Target   Target
	Fallback bool
	// Prefill and Decode are the candidates of each role.
	Prefill, Decode []framework.Endpoint
	Excluded        []Exclusion
}

// ChoosePD finds the first target that can serve the request and reports
// whether it is a disaggregated pool with a decode candidate: a target of
// a pool without a pd block that has candidates ends the search (false).
func (d *Director) ChoosePD(ctx context.Context, c *Call, targets []Target) (*PDChoice, bool) {
	var excluded []Exclusion
	for i, t := range targets {
		pp := d.pd[t.Pool]
		if pp == nil {
			if cands, _ := d.Candidates(ctx, c.Req, t.Pool, false); len(cands) > 0 {
				return nil, false
			}
			continue
		}
		prefill, decode, ex := d.PDCandidates(ctx, c.Req, t.Pool, c.Explain)
		excluded = append(excluded, ex...)
		if len(decode) == 0 {
			continue
		}
		return &PDChoice{Pool: pp, Target: t, Fallback: i > 0, Prefill: prefill, Decode: decode, Excluded: excluded}, true
	}
	return nil, false
}

// PDDecision is the decode side of a Decision in a disaggregated pool.
type PDDecision struct {
	Pool *PDPool
	Plan *pd.Plan
}

// Plan plans the (prefill, decode) pair for the request.
func (d *Director) Plan(ctx context.Context, c *Call, ch *PDChoice) (*pd.Plan, error) {
	if c.Req.TargetModel == "" {
		c.Req.TargetModel = EngineModel(ch.Target, ch.Decode[0])
	}
	t0 := time.Now()
	plan, err := ch.Pool.planner.Plan(ctx, c.Req, ch.Prefill, ch.Decode, c.Explain)
	if d.scheduled != nil {
		d.scheduled(ch.Pool.Spec.DecodeProfile, time.Since(t0))
	}
	return plan, err
}

// PDUnmeetable is, with c.ShedUnmeetable, what Plan's cycles recorded
// when a role had no candidate predicted to meet the request's objectives:
// no prefill endpoint meets the TTFT objective (the prefill preset checks
// only that: the request decodes elsewhere), or no decode endpoint meets
// those the decode profile checks. The caller then has admission refuse
// the request, as Decide hands back a co-located one (Decision.Unmeetable).
// It is nil when both roles have an endpoint predicted on time, or
// without c.ShedUnmeetable. A pair is planned once per request, so this is
// the first attempt's.
func (d *Director) PDUnmeetable(c *Call, plan *pd.Plan) *framework.Unmeetable {
	if !c.ShedUnmeetable || plan == nil {
		return nil
	}
	if un := unmeetable(plan.PrefillState); un != nil {
		return un
	}
	return unmeetable(plan.DecodeState)
}

// Decode returns the Decision of the plan's decode request.
func (d *Director) Decode(ch *PDChoice, plan *pd.Plan) Decision {
	return Decision{Endpoint: plan.Decode, Target: ch.Target, Fallback: ch.Fallback, State: plan.DecodeState,
		Explanation: plan.DecodeExplanation, Excluded: ch.Excluded, PD: &PDDecision{Pool: ch.Pool, Plan: plan}}
}

// PrefillTokens is what a prefill request counts in flight: its prompt and
// one output token.
func PrefillTokens(req *framework.Request) int64 { return int64(req.PromptTokens + 1) }

// PrefillSent is the load accounting hook for the plan's prefill request:
// it counts it in flight on the prefill endpoint and runs the prefill
// profile's PreRequest hooks.
func (d *Director) PrefillSent(ctx context.Context, c *Call, pp *PDPool, plan *pd.Plan) {
	if a, ok := plan.Prefill.(Accountable); ok {
		a.Begin(PrefillTokens(c.Req))
	}
	pp.planner.PrefillSent(ctx, c.Req, plan)
}

// PrefillDone is the load accounting hook for the end of a prefill
// request on ep.
func (d *Director) PrefillDone(ctx context.Context, c *Call, pp *PDPool, ep framework.Endpoint, out framework.Outcome) {
	pp.planner.PrefillDone(ctx, c.Req, ep, out)
	if a, ok := ep.(Accountable); ok {
		a.End(PrefillTokens(c.Req))
	}
}

// CanServe reports whether pool has endpoints that may serve req now: a
// candidate, or for a disaggregated pool a decode candidate and a prefill
// candidate (unless the pool may prefill locally).
func (d *Director) CanServe(ctx context.Context, req *framework.Request, pool string) bool {
	pp := d.pd[pool]
	if pp == nil {
		cands, _ := d.Candidates(ctx, req, pool, false)
		return len(cands) > 0
	}
	prefill, decode, _ := d.PDCandidates(ctx, req, pool, false)
	return len(decode) > 0 && (len(prefill) > 0 || pp.Spec.FallbackToLocalPrefill)
}

// ServingEndpoints are the endpoints of pool a request could be sent to
// now: its candidates, or a disaggregated pool's decode candidates.
func (d *Director) ServingEndpoints(ctx context.Context, req *framework.Request, pool string) []framework.Endpoint {
	if d.pd[pool] != nil {
		_, decode, _ := d.PDCandidates(ctx, req, pool, false)
		return decode
	}
	cands, _ := d.Candidates(ctx, req, pool, false)
	return cands
}
