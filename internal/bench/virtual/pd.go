package virtual

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/pd"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// defaultTransferPerToken is the simulator's default KV transfer time.
const defaultTransferPerToken = vllmapi.DefaultKVTransferPerToken

// pdFleet is the disaggregated side of a run: the planner the router uses,
// over the run's prefill and decode endpoints.
type pdFleet struct {
	planner          *pd.Planner
	prefill, decode  []framework.Endpoint
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

// pdProfile builds a PD profile, seeding a max-score or random picker as
// the other policies' pickers are.
func pdProfile(sc *Scenario, name string, reg *framework.Registry, h framework.Handle) (*scheduling.Profile, error) {
	spec, ok := sc.Profiles[name]
	if !ok {
		if spec, ok = scheduling.PresetProfileSpecs()[name]; !ok {
			return nil, fmt.Errorf("pd profile %q: neither under profiles nor a preset", name)
		}
	}
	if p := spec.Picker; p != nil && len(p.Params) == 0 && (p.Type == random.Type || p.Type == maxscore.Type) {
		seeded := *p
		seeded.Params, _ = json.Marshal(map[string]uint64{"seed": sc.Seed + 1})
		spec.Picker = &seeded
	}
	return scheduling.NewProfile(name, spec, reg, h)
}

// newPDFleet builds the planner over the run's endpoints, split by role.
func newPDFleet(sc *Scenario, eps []*endpoint, reg *framework.Registry) (*pdFleet, error) {
	h := scheduling.Handle{Clock: eps[0].eng.Clock().Now, Log: slog.New(slog.DiscardHandler)}
	pf, err := pdProfile(sc, sc.PD.PrefillProfile, reg, h)
	if err != nil {
		return nil, err
	}
	dc, err := pdProfile(sc, sc.PD.DecodeProfile, reg, h)
	if err != nil {
		return nil, err
	}
	spec := config.PDSpec{TopologyKey: sc.PD.TopologyKey, DecodeFirst: sc.PD.DecodeFirst, MinPrefillTokens: sc.PD.MinPrefillTokens}
	planner, err := pd.New(pd.FromSpec(&spec), pf, dc, pd.NewApproximateIndex())
	if err != nil {
		return nil, err
	}
	f := &pdFleet{planner: planner, transferPerToken: sc.PD.TransferPerToken.Duration}
	for _, e := range eps {
		if e.md.Role == framework.RolePrefill {
			f.prefill = append(f.prefill, e)
		} else {
			f.decode = append(f.decode, e)
		}
	}
	return f, nil
}

// sendPD serves request i as the router's PD flow does: plan the pair; a
// prefill on the prefill engine that keeps its blocks (max_tokens 1); the
// decode engine pulls them (the prefill engine releases them) and waits the
// modelled transfer time before decoding. Decode-first requests go to the
// decode engine alone.
func (f *fleetRun) sendPD(i int) {
	wr := f.w.Request(i)
	ids, text := promptIDs(wr, f.chat)
	req := &framework.Request{
		ID:           fmt.Sprintf("%s#%d", wr.ID, i),
		Model:        f.model,
		TargetModel:  f.model,
		Prompt:       framework.Prompt{Text: text},
		PromptTokens: tokenizer.Pseudo{}.Count(string(text)),
		MaxTokens:    wr.OutputTokens,
		Stream:       true,
	}
	rec := &f.records[i]
	rec.ID = wr.ID
	rec.Start = f.elapsed()
	rec.PromptTokens = len(ids)
	sentAt := f.clock.Now()
	f.state[i] = inFlight

	plan, err := f.pd.planner.Plan(f.ctx, req, f.pd.prefill, f.pd.decode, false)
	if err != nil {
		f.fail(i, "schedule: "+err.Error())
		return
	}
	if plan.Skip == "" && plan.Prefill == nil {
		f.pd.failed++
		f.fail(i, "schedule: "+plan.PrefillErr.Error())
		return
	}
	dec := plan.Decode.(*endpoint)
	decode := func(remote *simulator.RemoteKV) {
		f.pd.planner.DecodeSent(f.ctx, req, plan)
		rec.Endpoint = dec.md.Name
		cost := int64(len(ids) + wr.OutputTokens)
		dec.requests.Add(1)
		dec.tokens.Add(cost)
		sink := recordingSink(rec, sentAt, req.ID, nil, func(out framework.Outcome) {
			dec.requests.Add(-1)
			dec.tokens.Add(-cost)
			f.pd.planner.DecodeDone(f.ctx, req, dec, out)
			f.state[i] = finished
			f.left--
			f.after(i)
		})
		err := dec.eng.Submit(simulator.Request{ID: req.ID, Prompt: ids, MaxTokens: wr.OutputTokens, IgnoreEOS: true, Sink: sink, Remote: remote})
		if err != nil {
			dec.requests.Add(-1)
			dec.tokens.Add(-cost)
			f.pd.planner.DecodeDone(f.ctx, req, dec, framework.Outcome{Err: err})
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
	f.pd.planner.PrefillSent(f.ctx, req, plan)
	cost := int64(len(ids) + 1)
	pre.requests.Add(1)
	pre.tokens.Add(cost)
	pid := req.ID + "/prefill"
	err = pre.eng.Submit(simulator.Request{
		ID: pid, Prompt: ids, MaxTokens: 1, IgnoreEOS: true, KeepBlocks: true,
		Sink: simulator.SinkFuncs{OnDone: func(r simulator.Result) {
			pre.requests.Add(-1)
			pre.tokens.Add(-cost)
			out := framework.Outcome{PromptTokens: r.PromptTokens, CachedTokens: r.CachedTokens, CompletionTokens: r.OutputTokens}
			if r.Reason == simulator.FinishAbort || r.Held == nil {
				out.Err = fmt.Errorf("prefill %s aborted", pid)
				f.pd.planner.PrefillDone(f.ctx, req, pre, out)
				f.pd.failed++
				f.fail(i, "prefill aborted")
				return
			}
			f.pd.planner.PrefillDone(f.ctx, req, pre, out)
			// The decode engine pulls the kept blocks: the prefill
			// engine frees them, the decode engine waits the transfer.
			pre.eng.Release(pid)
			decode(&simulator.RemoteKV{Tokens: r.Held.Tokens, PerToken: f.pd.transferPerToken})
		}},
	})
	if err != nil {
		pre.requests.Add(-1)
		pre.tokens.Add(-cost)
		f.pd.planner.PrefillDone(f.ctx, req, pre, framework.Outcome{Err: err})
		f.fail(i, "prefill engine: "+shortErr(err))
	}
}
