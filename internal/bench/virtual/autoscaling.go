package virtual

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
	"github.com/halyard-dev/halyard/internal/bench/report"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Fleet policies of an autoscaling scenario: how many engines serve, and
// when.
const (
	// FleetStaticPeak is a static fleet of autoscaling.peakEngines.
	FleetStaticPeak = "static-peak"
	// FleetStaticMean is a static fleet of autoscaling.meanEngines.
	FleetStaticMean = "static-mean"
	// FleetHPA is a utilisation rule as a Kubernetes HPA applies it: KV
	// usage against a target, 15 s sync period, 10 % tolerance, 5 min
	// scale-down stabilisation, no panic mode and no forecast (package
	// autoscale configured so).
	FleetHPA = "hpa"
	// FleetHalyard is Halyard's autoscaler with autoscaling.halyard.
	FleetHalyard = "halyard"
	// FleetDrainCacheAware, FleetDrainRandom and FleetDrainNewest run a
	// static peak fleet and at autoscaling.scaleDown.at (and, with
	// scaleDown.every, again every so often) remove
	// autoscaling.scaleDown.groups engines, chosen by least unique hot
	// prefix cache (package autoscale), at random, or newest first; the
	// report gives the prefix hit rate and TTFT p90 of the requests sent
	// in the window after each scale-down.
	FleetDrainCacheAware = "drain-cache-aware"
	FleetDrainRandom     = "drain-random"
	FleetDrainNewest     = "drain-newest"
)

// AutoscalingScenario compares fleet policies (autoscalers and static
// fleets) under the scenario's routing policy. Each engine is one group.
type AutoscalingScenario struct {
	// Policies are the fleet policies to compare (constants Fleet*).
	Policies []string `json:"policies"`
	// PeakEngines and MeanEngines size the static fleets.
	PeakEngines int `json:"peakEngines"`
	MeanEngines int `json:"meanEngines,omitempty"`
	// InitialEngines is where the autoscalers start; default meanEngines,
	// else 1.
	InitialEngines int `json:"initialEngines,omitempty"`
	// ColdStart is the time from asking for an engine to its serving
	// (weights, engine start); default 90s.
	ColdStart config.Duration `json:"coldStart,omitempty"`
	// Interval is how often the signals are read from the fleet (and
	// Halyard's autoscaler decides); default 1s.
	Interval config.Duration `json:"interval,omitempty"`
	// DrainGrace bounds a draining engine's requests in flight; default 5m.
	DrainGrace config.Duration `json:"drainGrace,omitempty"`
	// WaitingRoom bounds how long a request waits while no engine is
	// ready; default 5m.
	WaitingRoom config.Duration `json:"waitingRoom,omitempty"`
	// Halyard is the policy of FleetHalyard, as a ModelServing's
	// spec.autoscaling.
	Halyard *servingv1.AutoscalingSpec `json:"halyard,omitempty"`
	// HPA configures FleetHPA: the KV-usage target (default 70 %) and the
	// sync period (default 15s).
	HPA HPARule `json:"hpa,omitempty"`
	// HitHalfLife is the half-life of the prefix-use ledger behind
	// cache-aware victim choice; default 1m (of the order of how long a
	// block stays in a busy engine's cache).
	HitHalfLife config.Duration `json:"hitHalfLife,omitempty"`
	// HitCredit is what a finished request credits to the ledger:
	// "cached" (default, as the router does: the prompt blocks the engine
	// reported cached) or "prompt" (every prompt block, hit or stored).
	HitCredit string `json:"hitCredit,omitempty"`
	// HotBlocks is how many of each engine's hottest ledger blocks the
	// victim choice sees; default autoscale.HotBlocksReported, what a
	// router reports to the controller; -1: all, and every block of a
	// chain (no autoscale.SampleChain).
	HotBlocks int `json:"hotBlocks,omitempty"`
	// ScaleDown configures the drain-* policies.
	ScaleDown ScaleDownAt `json:"scaleDown,omitempty"`
}

// HPARule is the utilisation rule of FleetHPA.
type HPARule struct {
	KVUsagePercent int             `json:"kvUsagePercent,omitempty"`
	SyncPeriod     config.Duration `json:"syncPeriod,omitempty"`
}

// ScaleDownAt is a forced scale-down, once or repeated.
type ScaleDownAt struct {
	At     config.Duration `json:"at,omitempty"`
	Groups int             `json:"groups,omitempty"`
	// Window is how long after each scale-down the hit rate and TTFT are
	// measured (requests sent in [t, t+Window)); default 3m.
	Window config.Duration `json:"window,omitempty"`
	// Every repeats the scale-down every this long after At, Count times
	// in all (default 1: once). Between two, the fleet grows back:
	// RestoreAfter after each scale-down, as many new engines as were
	// removed are asked for (they serve after the cold start, with empty
	// caches), as an autoscaled fleet that shrinks and grows again.
	Every        config.Duration `json:"every,omitempty"`
	Count        int             `json:"count,omitempty"`
	RestoreAfter config.Duration `json:"restoreAfter,omitempty"`
}

func (a *AutoscalingScenario) defaults() {
	if a.InitialEngines == 0 {
		a.InitialEngines = max(a.MeanEngines, 1)
	}
	def := func(d *config.Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	def(&a.ColdStart, 90*time.Second)
	def(&a.Interval, time.Second)
	def(&a.DrainGrace, 5*time.Minute)
	def(&a.WaitingRoom, 5*time.Minute)
	def(&a.HPA.SyncPeriod, 15*time.Second)
	def(&a.ScaleDown.Window, 3*time.Minute)
	def(&a.HitHalfLife, time.Minute)
	if a.HitCredit == "" {
		a.HitCredit = HitCreditCached
	}
	if a.ScaleDown.Count == 0 {
		a.ScaleDown.Count = 1
	}
	if a.HPA.KVUsagePercent == 0 {
		a.HPA.KVUsagePercent = 70
	}
}

func (a *AutoscalingScenario) validate() error {
	var errs []error
	if a.PeakEngines < 1 || a.PeakEngines > 1000 {
		errs = append(errs, fmt.Errorf("autoscaling.peakEngines: must be 1 to 1000, got %d", a.PeakEngines))
	}
	if len(a.Policies) == 0 {
		errs = append(errs, errors.New("autoscaling.policies: at least one required"))
	}
	for i, p := range a.Policies {
		switch p {
		case FleetStaticPeak, FleetHPA, FleetDrainCacheAware, FleetDrainRandom, FleetDrainNewest:
		case FleetStaticMean:
			if a.MeanEngines < 1 {
				errs = append(errs, fmt.Errorf("autoscaling.policies[%d]: %s needs meanEngines", i, p))
			}
		case FleetHalyard:
			if a.Halyard == nil {
				errs = append(errs, fmt.Errorf("autoscaling.policies[%d]: %s needs autoscaling.halyard", i, p))
			} else if _, err := autoscale.New(autoscale.FromSpec(a.Halyard, 1)); err != nil {
				errs = append(errs, fmt.Errorf("autoscaling.halyard: %w", err))
			}
		default:
			errs = append(errs, fmt.Errorf("autoscaling.policies[%d]: unknown fleet policy %q (want %s, %s, %s, %s, %s, %s or %s)", i, p,
				FleetStaticPeak, FleetStaticMean, FleetHPA, FleetHalyard, FleetDrainCacheAware, FleetDrainRandom, FleetDrainNewest))
		}
		if isDrain(p) && (a.ScaleDown.Groups < 1 || a.ScaleDown.Groups >= a.PeakEngines || a.ScaleDown.At.Duration <= 0) {
			errs = append(errs, fmt.Errorf("autoscaling.scaleDown: %s needs at > 0 and 1 <= groups < peakEngines", p))
		}
	}
	if sd := a.ScaleDown; sd.Count > 1 && (sd.Every.Duration <= 0 || sd.RestoreAfter.Duration <= 0 || sd.RestoreAfter.Duration >= sd.Every.Duration) {
		errs = append(errs, fmt.Errorf("autoscaling.scaleDown: count %d needs every > 0 and 0 < restoreAfter < every", sd.Count))
	}
	if a.ScaleDown.Count < 1 {
		errs = append(errs, fmt.Errorf("autoscaling.scaleDown.count: must be at least 1, got %d", a.ScaleDown.Count))
	}
	if a.HitCredit != HitCreditCached && a.HitCredit != HitCreditPrompt {
		errs = append(errs, fmt.Errorf("autoscaling.hitCredit: want %s or %s, got %q", HitCreditCached, HitCreditPrompt, a.HitCredit))
	}
	if a.HPA.KVUsagePercent < 1 || a.HPA.KVUsagePercent > 100 {
		errs = append(errs, fmt.Errorf("autoscaling.hpa.kvUsagePercent: must be 1 to 100, got %d", a.HPA.KVUsagePercent))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"coldStart", a.ColdStart.Duration}, {"interval", a.Interval.Duration}, {"drainGrace", a.DrainGrace.Duration}, {"waitingRoom", a.WaitingRoom.Duration}, {"hpa.syncPeriod", a.HPA.SyncPeriod.Duration}} {
		if d.v < 0 || (d.name != "coldStart" && d.v == 0) {
			errs = append(errs, fmt.Errorf("autoscaling.%s: must be positive, got %s", d.name, d.v))
		}
	}
	return errors.Join(errs...)
}

// hotBlocks is how many of an engine's hottest blocks the victim choice
// sees: as many as a router reports (autoscale.HotBlocksReported), or
// HotBlocks when set (-1: all).
func (a *AutoscalingScenario) hotBlocks() int {
	if a.HotBlocks != 0 {
		return a.HotBlocks
	}
	return autoscale.HotBlocksReported
}

// What a finished request credits to the hit ledger
// (AutoscalingScenario.HitCredit).
const (
	HitCreditCached = "cached"
	HitCreditPrompt = "prompt"
)

func isDrain(p string) bool {
	return p == FleetDrainCacheAware || p == FleetDrainRandom || p == FleetDrainNewest
}

// hpaPolicy is FleetHPA's rule in package autoscale's terms: the
// HPA's algorithm (desired = ceil(current × metric / target) is the total
// over the target) with its defaults.
func hpaPolicy(a *AutoscalingScenario) autoscale.Policy {
	off := false
	return autoscale.Policy{
		MinGroups: 1, MaxGroups: a.PeakEngines * 2,
		Targets:                autoscale.Targets{KVUsage: float64(a.HPA.KVUsagePercent) / 100},
		StableWindow:           a.HPA.SyncPeriod.Duration, // metrics-server's resolution
		PanicThreshold:         -1,
		ScaleDownStabilization: 5 * time.Minute,
		MaxScaleUpGroups:       max(4, a.PeakEngines), ScaleUpPeriod: 15 * time.Second,
		MaxScaleDownGroups: a.PeakEngines, ScaleDownPeriod: 15 * time.Second,
		Tolerance:         0.1,
		Forecast:          &off,
		HoldWhileStarting: &off,
	}
}

// engineState is where a simulated engine is in its life.
type engineState uint8

const (
	engineStarting engineState = iota
	engineReady
	engineDraining
	engineGone
)

// fleetScaler runs a fleet policy over a fleetRun: it reads the signals
// every interval, asks package autoscale, starts engines (ready after the
// cold start) and drains victims.
type fleetScaler struct {
	f       *fleetRun
	policy  string
	a       *autoscale.Autoscaler // nil: static
	sc      *AutoscalingScenario
	slo     stats.SLO
	period  time.Duration // between decisions
	ledger  autoscale.HitLedger
	hasher  prefixindex.Hasher // the routers' prefix hashing
	rng     *rand.Rand
	add     func() (*endpoint, error)
	last    time.Time
	tokens  int64 // generated tokens since the last reading
	arrived int   // requests arrived since the last reading
	prefill int64 // prompt tokens sent and not yet at their first token
	done    []int // requests finished since the last reading
	room    []int // requests waiting for an engine
	// waitedFrom is when each request in the waiting room arrived.
	waitedFrom map[int]time.Time
	maxLive    int
	events     int
	// scaleDowns are the drain-* policy's scale-downs so far.
	scaleDowns []scaleDownMark
	err        error
	decisions  []report.ScaleDecision
}

// newFleetScaler runs policy over f; hasher is the routers' prefix
// hashing, which the hit ledger's blocks are cut with.
func newFleetScaler(f *fleetRun, policy string, sc *AutoscalingScenario, slo stats.SLO, seed uint64, hasher prefixindex.Hasher) (*fleetScaler, int, error) {
	s := &fleetScaler{f: f, policy: policy, sc: sc, slo: slo, period: sc.Interval.Duration, rng: rand.New(rand.NewPCG(seed, 0xa5)), waitedFrom: map[int]time.Time{}, hasher: hasher}
	s.ledger.HalfLife = sc.HitHalfLife.Duration
	if sc.HotBlocks == -1 {
		s.ledger.Stride = 1 // every block of a chain
	}
	initial := sc.PeakEngines
	var err error
	switch policy {
	case FleetStaticMean:
		initial = sc.MeanEngines
	case FleetHPA:
		initial = sc.InitialEngines
		s.period = sc.HPA.SyncPeriod.Duration
		s.a, err = autoscale.New(hpaPolicy(sc))
	case FleetHalyard:
		initial = sc.InitialEngines
		s.a, err = autoscale.New(autoscale.FromSpec(sc.Halyard, 1))
	}
	if err != nil {
		return nil, 0, err
	}
	if s.a != nil {
		p := s.a.Policy()
		initial = min(max(initial, p.MinGroups), p.MaxGroups)
	}
	return s, initial, nil
}

// live returns the engines that exist (starting, ready or draining), by
// age.
func (s *fleetScaler) live() (starting, ready, draining []*endpoint) {
	for _, ep := range s.f.eps {
		switch ep.state {
		case engineStarting:
			starting = append(starting, ep)
		case engineReady:
			ready = append(ready, ep)
		case engineDraining:
			draining = append(draining, ep)
		}
	}
	return
}

// start asks for a new engine; it serves after the cold start.
func (s *fleetScaler) start(cold time.Duration) {
	ep, err := s.add()
	if err != nil {
		s.err = err
		return
	}
	ep.state = engineStarting
	s.f.clock.AfterFunc(cold, func() {
		if ep.state != engineStarting {
			return
		}
		s.ready(ep)
		if s.a != nil {
			s.a.ObserveColdStart(s.f.clock.Now().Sub(ep.created))
		}
	})
}

// ready puts an engine in every router's candidates and sends the waiting
// room's requests.
func (s *fleetScaler) ready(ep *endpoint) {
	ep.state = engineReady
	for r, rt := range s.f.routers {
		rt.cands = append(rt.cands, ep.views[r])
	}
	room := s.room
	s.room = nil
	for _, i := range room {
		if s.f.state[i] == pending {
			s.f.send(i)
		}
	}
	s.maxLive = max(s.maxLive, s.count())
}

func (s *fleetScaler) count() int {
	st, rd, dr := s.live()
	return len(st) + len(rd) + len(dr)
}

// drain takes an engine out of every router's candidates; it goes when its
// requests in flight end, or after the drain grace.
func (s *fleetScaler) drain(ep *endpoint) {
	if ep.state == engineStarting { // never served: goes at once
		s.retire(ep)
		return
	}
	ep.state = engineDraining
	for r, rt := range s.f.routers {
		v := ep.views[r]
		rt.cands = slices.DeleteFunc(rt.cands, func(c framework.Endpoint) bool { return c == v })
	}
	if ep.inFlight() == 0 {
		s.retire(ep)
		return
	}
	s.f.clock.AfterFunc(s.sc.DrainGrace.Duration, func() {
		if ep.state == engineDraining {
			s.retire(ep) // aborts what is left: counted as failures
		}
	})
}

// ended is told when a request on ep ended.
func (s *fleetScaler) ended(ep *endpoint) {
	if ep.state == engineDraining && ep.inFlight() == 0 {
		s.retire(ep)
	}
}

func (s *fleetScaler) retire(ep *endpoint) {
	ep.state = engineGone
	ep.removed = s.f.clock.Now()
	s.ledger.Forget(ep.md.Name)
	ep.eng.Close()
}

// wait holds request i until an engine is ready, for at most the waiting
// room's bound.
func (s *fleetScaler) wait(i int) {
	s.room = append(s.room, i)
	s.f.clock.AfterFunc(s.sc.WaitingRoom.Duration, func() {
		if s.f.state[i] == pending {
			s.room = slices.DeleteFunc(s.room, func(j int) bool { return j == i })
			s.f.fail(i, "waiting room: no engine became ready")
		}
	})
}

// signals are the fleet's load as the routers see it.
func (s *fleetScaler) signals(now time.Time) autoscale.Signals {
	_, ready, _ := s.live()
	sig := autoscale.Signals{Engines: len(ready), TTFTAttainment: autoscale.Unknown, TPOTAttainment: autoscale.Unknown}
	for _, ep := range ready {
		m := ep.Metrics()
		sig.Waiting += float64(m.WaitingRequests)
		sig.Running += float64(m.RunningRequests)
		sig.KVUsage += m.KVCacheUsage
	}
	sig.PrefillTokens = float64(s.prefill)
	if !s.last.IsZero() {
		if dt := now.Sub(s.last).Seconds(); dt > 0 {
			sig.TokensPerSecond = float64(s.tokens) / dt
			sig.RequestsPerSecond = float64(s.arrived) / dt
		}
	}
	if len(s.done) > 0 && !s.slo.IsZero() {
		var ttft, tpot, n int
		for _, i := range s.done {
			r := &s.f.records[i]
			n++
			if r.OK() && (s.slo.TTFT == 0 || r.TTFT <= s.slo.TTFT) {
				ttft++
			}
			if v, ok := r.TPOT(); r.OK() && (!ok || s.slo.TPOT == 0 || v <= s.slo.TPOT) {
				tpot++
			}
		}
		sig.TTFTAttainment, sig.TPOTAttainment = float64(ttft)/float64(n), float64(tpot)/float64(n)
	}
	sig.WaitingRoom = float64(len(s.room))
	s.tokens, s.arrived, s.done, s.last = 0, 0, s.done[:0], now
	return sig
}

// loop reads the signals every interval and, every period, decides.
func (s *fleetScaler) loop() {
	now := s.f.clock.Now()
	if isDrain(s.policy) {
		sd := s.sc.ScaleDown
		k := len(s.scaleDowns)
		if k < sd.Count && s.f.elapsed() >= sd.At.Duration+time.Duration(k)*sd.Every.Duration {
			at := s.f.elapsed()
			removed := s.remove(sd.Groups)
			s.scaleDowns = append(s.scaleDowns, scaleDownMark{at: at, removed: removed})
			if k+1 < sd.Count {
				s.f.clock.AfterFunc(sd.RestoreAfter.Duration, func() {
					for range removed {
						s.start(s.sc.ColdStart.Duration)
					}
				})
			}
		}
	} else if s.a != nil {
		s.a.Observe(now, s.signals(now))
		if now.Sub(s.f.start)%s.period < s.sc.Interval.Duration {
			s.decide(now)
		}
	}
	if s.f.left > 0 && s.err == nil {
		s.f.clock.AfterFunc(s.sc.Interval.Duration, s.loop)
	}
}

func (s *fleetScaler) decide(now time.Time) {
	starting, ready, _ := s.live()
	st := autoscale.State{Groups: len(starting) + len(ready), Ready: len(ready)}
	d := s.a.Decide(now, st)
	if d.Groups != st.Groups {
		s.decisions = append(s.decisions, report.ScaleDecision{Time: s.f.elapsed().Seconds(), From: st.Groups, To: d.Groups, Ready: st.Ready, Reason: d.Reason})
	}
	switch {
	case d.Groups > st.Groups:
		for range d.Groups - st.Groups {
			s.start(s.sc.ColdStart.Duration)
		}
		s.events++
	case d.Groups < st.Groups:
		s.remove(st.Groups - d.Groups)
		s.events++
	}
}

// scaleDownMark is one forced scale-down: when, and the engines removed.
type scaleDownMark struct {
	at      time.Duration
	removed []string
}

// remove drains n engines: starting ones first (newest first: they hold
// nothing), then ready ones chosen by the policy's victim rule. It
// returns the ready engines it drained.
func (s *fleetScaler) remove(n int) []string {
	starting, ready, _ := s.live()
	for i := len(starting) - 1; i >= 0 && n > 0; i-- {
		s.drain(starting[i])
		n--
	}
	n = min(n, len(ready)-1) // never the last ready engine
	if n <= 0 {
		if len(ready) == 1 && s.a != nil && s.a.Policy().MinGroups == 0 {
			s.drain(ready[0]) // to zero
			return []string{ready[0].md.Name}
		}
		return nil
	}
	var victims []*endpoint
	switch s.policy {
	case FleetDrainRandom:
		perm := s.rng.Perm(len(ready))
		for _, k := range perm[:n] {
			victims = append(victims, ready[k])
		}
	case FleetDrainNewest:
		victims = ready[len(ready)-n:]
	default: // cache-aware: the autoscalers and drain-cache-aware
		groups := make([]autoscale.GroupEngines, len(ready))
		byName := map[string]*endpoint{}
		for k, ep := range ready {
			groups[k] = autoscale.GroupEngines{Group: ep.md.Name, Engines: []string{ep.md.Name}}
			byName[ep.md.Name] = ep
		}
		now := s.f.clock.Now()
		for _, v := range autoscale.ChooseVictims(groups, func(e string) map[uint64]float64 { return s.ledger.Hottest(e, now, s.sc.hotBlocks()) }, n) {
			victims = append(victims, byName[v.Group])
		}
	}
	names := make([]string, len(victims))
	for k, ep := range victims {
		names[k] = ep.md.Name
		s.drain(ep)
	}
	return names
}

// hit credits a finished request to its engine's ledger as the router
// does (autoscale.HitLedger.Credit over the request the decision saw,
// hashed as the router's prefix path hashes it): with HitCredit "cached",
// the blocks the engine reported cached; with "prompt", every block of
// the prompt, hit or just stored.
func (s *fleetScaler) hit(ep *endpoint, req *framework.Request, out framework.Outcome) {
	if s.sc.HitCredit == HitCreditPrompt {
		out.CachedTokens = max(out.PromptTokens, req.PromptTokens)
	}
	s.ledger.Credit(ep.md.Name, s.f.clock.Now(), s.hasher, req, out)
}

// engineHours sums every engine's life (cold start included: the GPU is
// held) up to end.
func (s *fleetScaler) engineHours(end time.Time) float64 {
	var h float64
	for _, ep := range s.f.eps {
		stop := end
		if ep.state == engineGone && ep.removed.Before(end) {
			stop = ep.removed
		}
		if stop.After(ep.created) {
			h += stop.Sub(ep.created).Hours()
		}
	}
	return h
}

// summarize adds the fleet's figures to the run's report.
func (s *fleetScaler) summarize(r *report.Run, recs []stats.Record, end time.Time, slo stats.SLO) {
	r.Fleet = s.policy
	r.EngineHours = s.engineHours(end)
	r.MaxEngines = s.maxLive
	r.ScaleEvents = s.events
	r.ScaleDecisions = s.decisions
	for i := range recs {
		if !slo.IsZero() && slo.Met(&recs[i]) {
			r.GoodRequests++
		}
	}
	if !isDrain(s.policy) || len(s.scaleDowns) == 0 {
		return
	}
	// Per scale-down, the requests sent in its window; pooled over all.
	var all []stats.Record
	for _, m := range s.scaleDowns {
		var in []stats.Record
		for i := range recs {
			if recs[i].Start >= m.at && recs[i].Start < m.at+s.sc.ScaleDown.Window.Duration {
				in = append(in, recs[i])
			}
		}
		all = append(all, in...)
		w := windowFigures(in, slo)
		w.At, w.Removed = m.at.Seconds(), m.removed
		r.ScaleDowns = append(r.ScaleDowns, w)
	}
	if w := windowFigures(all, slo); w.Requests > 0 {
		r.HitRateAfterScaleDown = &w.HitRate
		r.P90TTFTAfterScaleDownMs = w.P90TTFTMs
	}
}

// windowFigures are the hit rate (cached over prompt tokens of the
// requests that completed), TTFT p90 and SLO attainment of recs, from the
// run's own summary of them (stats.Summarize).
func windowFigures(recs []stats.Record, slo stats.SLO) report.ScaleDownWindow {
	s := stats.Summarize(recs, 0, slo)
	w := report.ScaleDownWindow{Requests: s.Completed + s.Failed, Good: s.Good, P90TTFTMs: s.TTFT.P90}
	if s.TotalInput > 0 {
		w.HitRate = float64(s.CachedTokens) / float64(s.TotalInput)
	}
	return w
}
