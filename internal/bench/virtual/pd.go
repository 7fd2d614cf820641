package virtual

import (
	"context"
	"fmt"
	"slices"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/pd"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// defaultTransferPerToken is the simulator's default KV transfer time.
const defaultTransferPerToken = vllmapi.DefaultKVTransferPerToken

// pdFleet is the disaggregated side of a run: the decision the router
// makes for a disaggregated pool (its PD planner), over the run's prefill
// and decode endpoints.
type pdFleet struct {
	director         *decision.Director
	transferPerToken time.Duration
	// Counts of the run, for the log.
	pairs, skipped, failed int
}

// role returns the role of engine i of the fleet under the PD policy.
func (sc *Scenario) role(i int) framework.Role {
	if i < sc.PD.Prefill {
		return framework.RolePrefill
	}
	return framework.RoleDecode
}

// pdPool is the name of the virtual disaggregated pool.
const pdPool = "pd"

// pdTargets is the one target of a virtual route to the disaggregated pool.
var pdTargets = []decision.Target{{Pool: pdPool}}

// newPDFleet builds the decision of a disaggregated pool over the run's
// endpoints: the scenario's pd block, its profiles (the scenario's or
// presets, pickers seeded as the other policies').
func newPDFleet(sc *Scenario, eps []*endpoint, o *oracleState, clock func() time.Time) (*pdFleet, error) {
	specs := map[string]config.ProfileSpec{}
	for _, name := range []string{sc.PD.PrefillProfile, sc.PD.DecodeProfile} {
		spec, ok := sc.Profiles[name]
		if !ok {
			if spec, ok = presets.Specs()[name]; !ok {
				return nil, fmt.Errorf("pd profile %q: neither under profiles nor a preset", name)
			}
		}
		specs[name] = seeded(spec, sc.Seed)
	}
	cands := make([]framework.Endpoint, len(eps))
	for i, e := range eps {
		cands[i] = e
	}
	pool := decision.PoolsFunc(func(string) []framework.Endpoint { return slices.Clone(cands) })
	spec := config.PDSpec{TopologyKey: sc.PD.TopologyKey, DecodeFirst: sc.PD.DecodeFirst, MinPrefillTokens: sc.PD.MinPrefillTokens,
		PrefillProfile: sc.PD.PrefillProfile, DecodeProfile: sc.PD.DecodeProfile}
	d, err := newDirector(o, nil, 0, clock, pool, specs, map[string]config.PDSpec{pdPool: spec})
	if err != nil {
		return nil, err
	}
	return &pdFleet{director: d, transferPerToken: sc.PD.TransferPerToken.Duration}, nil
}

// plan is the router's decision for req in the disaggregated pool: the
// pair, and the call and choice the accounting hooks take. rt's admission
// queue and shed apply when admitted (router.call).
func (p *pdFleet) plan(ctx context.Context, rt *router, req *framework.Request, admitted bool) (*decision.Call, *decision.PDChoice, *pd.Plan, error) {
	call := rt.call(req, admitted)
	ch, ok := p.director.ChoosePD(ctx, call, pdTargets)
	if !ok {
		return nil, nil, nil, pd.ErrNoDecode
	}
	plan, err := p.director.Plan(ctx, call, ch)
	return call, ch, plan, err
}

// servePD serves request i as the router's PD flow does: plan the pair; a
// prefill on the prefill engine that keeps its blocks (max_tokens 1); the
// decode engine pulls them (the prefill engine releases them) and waits the
// modelled transfer time before decoding. Decode-first requests go to the
// decode engine alone. ticket, when not nil, is its admission: a pair
// predicted to miss the request's objectives is handed back to it under
// unmeetable: shed, and it is settled from the decode's usage.
func (f *fleetRun) servePD(i int, rt *router, req *framework.Request, ids []uint32, sentAt time.Time, ticket *admission.Ticket) {
	wr := f.w.Request(i)
	rec := &f.records[i]
	settle := settler(ticket)
	dir := f.pd.director
	call, ch, plan, err := f.pd.plan(f.ctx, rt, req, ticket != nil)
	if err != nil {
		settle(admission.Usage{Known: true})
		f.fail(i, "schedule: "+err.Error())
		return
	}
	if dir.PDUnmeetable(call, plan) != nil {
		f.shed(i, sentAt, ticket) // as the router's servePD does
		return
	}
	if plan.Skip == "" && plan.Prefill == nil {
		f.pd.failed++
		settle(admission.Usage{Known: true})
		f.fail(i, "schedule: "+plan.PrefillErr.Error())
		return
	}
	dec := plan.Decode.(*endpoint)
	if f.onPick != nil {
		name := dec.md.Name
		if plan.Prefill != nil && plan.Skip == "" {
			name = plan.Prefill.Metadata().Name + ">" + name
		}
		f.onPick(i, name)
	}
	decode := func(remote *simulator.RemoteKV) {
		d := dir.Decode(ch, plan)
		dir.Sent(f.ctx, call, &d)
		rec.Endpoint = dec.md.Name
		first := func() {
			dir.FirstByte(f.ctx, call, &d)
			if ticket != nil {
				ticket.FirstToken()
			}
		}
		sink := recordingSink(rec, sentAt, req.ID, first, func(out framework.Outcome) {
			dir.Done(f.ctx, call, &d, out)
			settle(admission.Usage{PromptTokens: out.PromptTokens, CompletionTokens: out.CompletionTokens, CachedTokens: out.CachedTokens, Known: true})
			f.state[i] = finished
			f.left--
			f.after(i)
		})
		err := dec.eng.Submit(simulator.Request{ID: req.ID, Prompt: ids, MaxTokens: wr.OutputTokens, IgnoreEOS: true, Sink: sink, Remote: remote})
		if err != nil {
			dir.Done(f.ctx, call, &d, framework.Outcome{Err: err})
			settle(admission.Usage{Known: true})
			f.fail(i, "engine: "+shortErr(err))
		}
	}
	if plan.Skip != "" {
		f.pd.skipped++
		decode(nil)
		return
	}
	f.pd.pairs++
	pre := plan.Prefill.(*endpoint)
	dir.PrefillSent(f.ctx, call, ch.Pool, plan)
	pid := req.ID + "/prefill"
	err = pre.eng.Submit(simulator.Request{
		ID: pid, Prompt: ids, MaxTokens: 1, IgnoreEOS: true, KeepBlocks: true,
		Sink: simulator.SinkFuncs{OnDone: func(r simulator.Result) {
			out := framework.Outcome{PromptTokens: r.PromptTokens, CachedTokens: r.CachedTokens, CompletionTokens: r.OutputTokens}
			if r.Reason == simulator.FinishAbort || r.Held == nil {
				out.Err = fmt.Errorf("prefill %s aborted", pid)
				dir.PrefillDone(f.ctx, call, ch.Pool, pre, out)
				f.pd.failed++
				settle(admission.Usage{Known: true})
				f.fail(i, "prefill aborted")
				return
			}
			dir.PrefillDone(f.ctx, call, ch.Pool, pre, out)
			// The decode engine pulls the kept blocks: the prefill
			// engine frees them, the decode engine waits the transfer.
			pre.eng.Release(pid)
			decode(&simulator.RemoteKV{Tokens: r.Held.Tokens, PerToken: f.pd.transferPerToken})
		}},
	})
	if err != nil {
		dir.PrefillDone(f.ctx, call, ch.Pool, pre, framework.Outcome{Err: err})
		settle(admission.Usage{Known: true})
		f.fail(i, "prefill engine: "+shortErr(err))
	}
}
