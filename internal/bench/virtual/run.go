package virtual

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/bench/arrival"
	"github.com/halyard-dev/halyard/internal/bench/enginestats"
	"github.com/halyard-dev/halyard/internal/bench/report"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/bench/workload"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/kvevents"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/prefixtrack"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// epoch is the virtual clock's start; any fixed instant keeps runs
// repeatable.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// renderChat is the simulator's chat template.
var renderChat = vllmapi.RenderChat

// Options tune a virtual run beyond the scenario.
type Options struct {
	// Log receives progress logs; slog.Default() when nil.
	Log *slog.Logger
	// Now gives the report's date; time.Now when nil.
	Now func() time.Time
}

// Run runs every policy of the scenario at every arrival step, each on a
// fresh fleet with the same workload and arrivals, and returns the report.
func Run(ctx context.Context, sc *Scenario, o Options) (*report.Report, error) {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	slo, err := stats.ParseSLO(sc.SLO)
	if err != nil {
		return nil, fmt.Errorf("slo: %w", err)
	}
	cfg, err := sc.engineConfig()
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	b := &workload.Builder{Spec: sc.Workload, Seed: sc.Seed}
	first, err := b.Build(0)
	if err != nil {
		return nil, err
	}
	steps := sc.arrivals(first.Timed())
	rep := &report.Report{
		Schema: report.Schema,
		Date:   now().UTC().Format(time.RFC3339),
		Mode:   "virtual",
		Model:  sc.Model,
		Workload: report.Workload{
			Name: first.Name(), Requests: workload.Head(first, sc.MaxRequests).Len(),
			Params: sc.Workload.Params(), Dropped: b.Dropped,
		},
		SLO:  slo.String(),
		Seed: sc.Seed,
	}
	for si, spec := range steps {
		w, err := b.Build(si)
		if err != nil {
			return nil, err
		}
		w = workload.Head(w, sc.MaxRequests)
		var sched []time.Duration
		if sh := sc.Arrival.Shape; sh != nil {
			if sh.Repeat > 1 {
				parts := []workload.Workload{w}
				for k := 1; k < sh.Repeat; k++ {
					p, err := b.Build(si + k*len(steps))
					if err != nil {
						return nil, err
					}
					parts = append(parts, p)
				}
				if w, err = newRepeated(parts); err != nil {
					return nil, err
				}
			}
			sched, err = sh.schedule(w, sc.Seed+uint64(si))
			w = workload.Head(w, len(sched))
		} else {
			sched, err = arrival.Schedule(spec, w)
		}
		if err != nil {
			return nil, err
		}
		tenantOf := sc.assignTenants(w.Len(), si)
		fleets := []string{""}
		if sc.Autoscaling != nil {
			fleets = sc.Autoscaling.Policies
		}
		for _, policy := range sc.Policies {
			group := len(rep.Runs)
			for _, fleet := range fleets {
				for _, variant := range sc.variants() {
					if err := ctx.Err(); err != nil {
						return nil, err
					}
					wall := time.Now()
					r, err := runOne(ctx, sc, cfg, policy, fleet, w, spec, sched, slo, variant, tenantOf)
					if err != nil {
						return nil, fmt.Errorf("policy %s, %s: %w", policy, spec, err)
					}
					if sh := sc.Arrival.Shape; sh != nil {
						r.Arrival = sh.String()
					}
					r.WallSeconds = time.Since(wall).Seconds()
					log.Info("virtual run done", "policy", policy, "fleet", fleet, "admission", variant, "arrival", r.Arrival, "completed", r.Completed,
						"failed", r.Failed, "median_ttft_ms", r.MedianTTFTMs, "engine_hours", r.EngineHours, "virtual_seconds", r.Duration, "wall_seconds", r.WallSeconds)
					rep.Runs = append(rep.Runs, r)
				}
			}
			report.CompareAlone(rep.Runs[group:])
		}
	}
	return rep, nil
}

// policyProfile returns the spec of the policy's profile: the scenario's
// own, else the built-in policy's (its picker seeded).
func policyProfile(sc *Scenario, policy string) (config.ProfileSpec, error) {
	if spec, ok := sc.Profiles[policy]; ok {
		return spec, nil
	}
	return policySpec(policy, sc.Seed)
}

// deliverEvents returns the emit function of an engine's event hooks: each
// step's events reach every consumer (one per router) for endpoint after
// delay, in virtual time, as a subscriber would hand them on.
func deliverEvents(clock simclock.Clock, delay time.Duration, consumers []kvevents.Consumer, endpoint string) func([]kvevents.Event) {
	return func(evs []kvevents.Event) {
		clock.AfterFunc(delay, func() {
			for _, c := range consumers {
				for _, ev := range evs {
					switch e := ev.(type) {
					case *kvevents.BlockStored:
						c.BlockStored(endpoint, e)
					case *kvevents.BlockRemoved:
						c.BlockRemoved(endpoint, e)
					case *kvevents.AllBlocksCleared:
						c.AllCleared(endpoint)
					}
				}
			}
		})
	}
}

func runOne(ctx context.Context, sc *Scenario, cfg simulator.Config, policy, fleet string, w workload.Workload,
	spec arrival.Spec, sched []time.Duration, slo stats.SLO, variant string, tenantOf []int) (report.Run, error) {
	clock := simclock.NewVirtual(epoch)
	n := w.Len()
	f := &fleetRun{
		ctx:      ctx,
		clock:    clock,
		start:    epoch,
		model:    sc.Model,
		chat:     sc.API == "chat",
		w:        w,
		prev:     workload.PreviousTurns(w),
		deadline: sc.Duration.Duration,
		records:  make([]stats.Record, n),
		state:    make([]reqState, n),
		waiter:   map[int]int{},
		left:     n,
		only:     -1,
	}
	if sc.SLOHeaders {
		f.headers = predictedlatency.ObjectiveHeaders(slo.TTFT, slo.TPOT)
	}
	if len(sc.Tenants) > 0 {
		f.tenantOf = tenantOf
		for _, t := range sc.Tenants {
			f.tenants = append(f.tenants, t.Name)
		}
	}
	if name, ok := strings.CutPrefix(variant, "alone:"); ok {
		f.only = slices.IndexFunc(sc.Tenants, func(t TenantLoad) bool { return t.Name == name })
	}
	_, isCustom := sc.Profiles[policy]
	f.oracle = newOracleState(policy == PolicyOracle && !isCustom, cfg, sc.Fleet.Engines)
	f.routers = make([]*router, sc.Routers)
	for r := range f.routers {
		f.routers[r] = &router{}
		if precise(policy) && !isCustom {
			tracker, err := prefixtrack.New(prefixtrack.Config{
				Clock: clock, Logger: slog.New(slog.DiscardHandler),
				BlockSize: cfg.Capacity.BlockSize, PendingTTL: sc.KVEvents.PendingTTL.Duration,
			})
			if err != nil {
				return report.Run{}, err
			}
			f.routers[r].tracker, f.tokenIDs = tracker, true
		}
	}
	// addEngine creates engine i with a view of it in every router; the
	// first router's view is returned (and kept in f.eps).
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	addEngine := func(inCands bool) (*endpoint, error) {
		i := len(f.eps)
		ecfg := cfg
		name := fmt.Sprintf("sim-%d", i)
		var consumers []kvevents.Consumer
		for _, rt := range f.routers {
			if rt.tracker != nil {
				rt.tracker.Feed(name, sc.Model)
				consumers = append(consumers, rt.tracker.Consumer())
			}
		}
		if len(consumers) > 0 {
			ecfg.KVEvents = vllmapi.NewEventHooks(cfg.Capacity.BlockSize, deliverEvents(clock, sc.KVEvents.Delay.Duration, consumers, name))
		}
		eng, err := simulator.NewEngine(ecfg, clock)
		if err != nil {
			return nil, fmt.Errorf("engine %d: %w", i, err)
		}
		closers = append(closers, eng.Close)
		md := framework.EndpointMetadata{Name: name, Address: "virtual://" + name, Model: sc.Model, Role: framework.RoleBoth}
		if policy == PolicyPD && !isCustom {
			md.Role = sc.role(i)
			md.Name = fmt.Sprintf("%s-%d", md.Role, i)
			md.Address = "virtual://" + md.Name
			md.Labels = map[string]string{"zone": string(rune('a' + i%2))}
		}
		metrics := &atomic.Pointer[framework.Metrics]{}
		metrics.Store(&framework.Metrics{})
		views := make([]*endpoint, len(f.routers))
		for r, rt := range f.routers {
			ep := &endpoint{md: md, idx: i, eng: eng, metrics: metrics, created: clock.Now(), state: engineReady}
			views[r] = ep
			if inCands {
				rt.cands = append(rt.cands, ep)
			}
		}
		for _, v := range views {
			v.views = views
		}
		f.eps = append(f.eps, views[0])
		return views[0], nil
	}
	engines := sc.Fleet.Engines
	if fleet != "" {
		var err error
		f.scaler, engines, err = newFleetScaler(f, fleet, sc.Autoscaling, slo, sc.Seed, prefixindex.Hasher{BlockTokens: cfg.Capacity.BlockSize})
		if err != nil {
			return report.Run{}, err
		}
		f.scaler.add = func() (*endpoint, error) { return addEngine(false) }
	}
	for range engines {
		if _, err := addEngine(true); err != nil {
			return report.Run{}, err
		}
	}
	if f.scaler != nil {
		f.scaler.maxLive = engines
	}
	if policy == PolicyPD && !isCustom {
		// One router's decision over the first router's view of the fleet,
		// with the scenario's pd block as the pool's.
		var err error
		if f.pd, err = newPDFleet(sc, f.eps, f.oracle, clock.Now); err != nil {
			return report.Run{}, err
		}
	} else {
		spec, err := policyProfile(sc, policy)
		if err != nil {
			return report.Run{}, err
		}
		for _, rt := range f.routers {
			// The pool is read per decision: an autoscaled fleet's
			// candidates change.
			pools := decision.PoolsFunc(func(string) []framework.Endpoint { return slices.Clone(rt.cands) })
			rt.director, err = newDirector(f.oracle, rt.tracker, cfg.Capacity.BlockSize, clock.Now, pools, map[string]config.ProfileSpec{policy: spec}, nil)
			if err != nil {
				return report.Run{}, err
			}
			if rt.profile, err = rt.director.Profiles().Get(policy); err != nil {
				return report.Run{}, err
			}
		}
	}

	if variant != "" && variant != variantOff {
		acfg, err := sc.admissionConfig()
		if err != nil {
			return report.Run{}, err
		}
		for _, rt := range f.routers {
			var gate admission.Gate
			if q := acfg.Router.Admission; q != nil {
				// The capacity of the route's pool: a disaggregated
				// pool's is its decode endpoints' (Capacity).
				d, targets := rt.director, fleetTargets
				if f.pd != nil {
					d, targets = f.pd.director, pdTargets
				}
				rt.queue = &q.Queue
				gate = admission.GateFunc(func(model string) (int, int) {
					return d.Capacity(ctx, &framework.Request{Model: model}, targets, q.Queue)
				})
			}
			a, err := admission.New(admission.Options{Config: acfg, Gate: gate, Clock: clock, Log: slog.New(slog.DiscardHandler)})
			if err != nil {
				return report.Run{}, err
			}
			defer a.Close()
			rt.adm = a
			rt.shed = acfg.Router.Admission != nil && acfg.Router.Admission.Unmeetable == config.UnmeetableShed
		}
	}
	f.scrapeLoop(sc.ScrapeInterval.Duration)
	if f.scaler != nil {
		f.scaler.loop()
	}
	if sched == nil {
		f.closed = true
		f.next = min(spec.Concurrency, n)
		for i := range f.next {
			f.arm(i, 0)
		}
	} else {
		for i, at := range sched {
			f.arm(i, at)
		}
	}
	// Run the loop in slices so that a cancelled context stops it.
	for clock.Len() > 0 {
		if err := ctx.Err(); err != nil {
			return report.Run{}, err
		}
		for k := 0; k < 100_000 && clock.Step(); k++ {
		}
	}
	if f.left != 0 {
		return report.Run{}, fmt.Errorf("internal: %d requests neither finished nor skipped", f.left)
	}

	var recs []stats.Record
	var end time.Duration
	if sched != nil && n > 0 { // an open-loop run lasts at least until its last arrival
		end = sched[n-1]
		if d := sc.Duration.Duration; d > 0 && end > d {
			end = d
		}
	}
	for i := range f.records {
		if f.state[i] == skipped {
			continue
		}
		recs = append(recs, f.records[i])
		end = max(end, f.records[i].Start+f.records[i].E2E)
	}
	label := policy
	if fleet != "" {
		label = fleet
		if len(sc.Policies) > 1 {
			label = fleet + "/" + policy
		}
	}
	if variant != "" {
		label += " admission=" + variant
	}
	r := report.NewRun(label, stats.Summarize(recs, end, slo))
	r.Policy = policy
	r.Admission = variant
	if f.tenantOf != nil {
		r.Tenants = report.TenantRuns(recs, slo)
	}
	if s := f.scaler; s != nil {
		s.summarize(&r, recs, epoch.Add(end), slo)
	}
	r.Arrival = spec.String()
	if spec.Kind == arrival.Poisson {
		r.SetRate(spec.Rate)
	}
	if spec.Kind == arrival.Concurrency {
		r.MaxConcurrency = spec.Concurrency
	}
	res := enginestats.Result{}
	var hits, queries float64
	reqs := make([]float64, 0, len(f.eps))
	toks := make([]float64, 0, len(f.eps))
	for _, ep := range f.eps {
		s := ep.eng.Snapshot()
		e := enginestats.Engine{
			URL:                ep.md.Address,
			Requests:           float64(s.FinishedLength + s.FinishedStop),
			PromptTokens:       float64(s.PromptTokens),
			PrefixCacheQueries: float64(s.PrefixQueries),
			PrefixCacheHits:    float64(s.PrefixHits),
		}
		res.Engines = append(res.Engines, e)
		hits += e.PrefixCacheHits
		queries += e.PrefixCacheQueries
		reqs = append(reqs, e.Requests)
		toks = append(toks, e.PromptTokens)
	}
	if queries > 0 {
		res.PrefixCacheHitRate = hits / queries
	}
	res.RequestImbalance = stats.Imbalance(reqs)
	res.PromptTokenImbalance = stats.Imbalance(toks)
	r.SetEngines(res)
	return r, nil
}

// variantOff is the run without the admission stage.
const variantOff = "off"

// variants are the admission variants each policy runs: none without
// tenants and admission; else "on" (when the scenario has an admission
// block), "off", and "alone:<tenant>" for each tenant marked alone.
func (s *Scenario) variants() []string {
	if s.Admission == nil && len(s.Tenants) == 0 {
		return []string{""}
	}
	var out []string
	if s.Admission != nil {
		out = append(out, "on")
	}
	out = append(out, variantOff)
	for _, t := range s.Tenants {
		if t.Alone {
			out = append(out, "alone:"+t.Name)
		}
	}
	return out
}

// assignTenants draws each of n requests' tenant by share, seeded by the
// scenario's seed and the step; nil without tenants.
func (s *Scenario) assignTenants(n, step int) []int {
	shares := make([]float64, len(s.Tenants))
	for i, t := range s.Tenants {
		shares[i] = t.Share
	}
	return workload.AssignTenants(shares, s.Seed, step, n)
}
