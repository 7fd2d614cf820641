package autoscale

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// State is what exists when a decision is asked for.
type State struct {
	// Groups is the groups asked for so far (spec), starting ones included.
	Groups int
	// Ready is the groups that serve.
	Ready int
	// Prefill and Decode are the role instances asked for so far
	// (disaggregated serving only).
	Prefill, Decode int
}

// Decision is the autoscaler's answer.
type Decision struct {
	// Groups is the desired number of groups.
	Groups int
	// Prefill and Decode are the desired role instances under a PD policy
	// (0 otherwise).
	Prefill, Decode int
	// Recommended is the groups the signals ask for before stabilisation,
	// rate limits and bounds.
	Recommended int
	// Panic reports panic mode.
	Panic bool
	// Reason says why, in one line.
	Reason string
	// Stable is the signals averaged over the stable window.
	Stable Signals
}

// Changed reports whether d differs from the state it was decided in.
func (d Decision) Changed(s State) bool {
	return d.Groups != s.Groups || d.Prefill != s.Prefill || d.Decode != s.Decode
}

type sample struct {
	at time.Time
	s  Signals
}

type stamped struct {
	at time.Time
	n  int
}

// Autoscaler turns observations into decisions for one model. It is not safe
// for concurrent use; the caller serialises Observe and Decide.
type Autoscaler struct {
	p         Policy
	samples   []sample
	recs      []stamped // recommendations, for stabilisation
	ups       []stamped // groups added, for the rate limit
	downs     []stamped // groups removed
	coldStart time.Duration
	starts    int
	lastBusy  time.Time
	panicEnd  time.Time
	decided   bool
}

// New returns an autoscaler for a policy, defaulted and validated.
func New(p Policy) (*Autoscaler, error) {
	p.Default()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &Autoscaler{p: p, coldStart: p.ColdStart}, nil
}

// Policy returns the defaulted policy.
func (a *Autoscaler) Policy() Policy { return a.p }

// ColdStart returns the cold-start time the decisions use: the policy's
// until a start has been observed, then a moving average of the starts.
func (a *Autoscaler) ColdStart() time.Duration { return a.coldStart }

// ObserveColdStart records the time one new group took from creation to
// serving.
func (a *Autoscaler) ObserveColdStart(d time.Duration) {
	if d <= 0 {
		return
	}
	if a.starts == 0 {
		a.coldStart = d
	} else {
		a.coldStart = time.Duration(0.7*float64(a.coldStart) + 0.3*float64(d))
	}
	a.starts++
}

// Observe records the signals seen at now. Observations must come in time
// order.
func (a *Autoscaler) Observe(now time.Time, s Signals) {
	if a.lastBusy.IsZero() || s.busy() {
		a.lastBusy = now
	}
	a.samples = append(a.samples, sample{now, s})
	keep := max(a.p.StableWindow, a.p.PanicWindow, a.p.TrendWindow)
	i := 0
	for i < len(a.samples) && now.Sub(a.samples[i].at) > keep {
		i++
	}
	a.samples = a.samples[i:]
}

// average returns the mean of the samples within w before now (attainment
// over the samples that know it), and how many samples it covers.
func (a *Autoscaler) average(now time.Time, w time.Duration) (Signals, int) {
	var out Signals
	var n, na, nt int
	var ttft, tpot float64
	roles := map[string][]Signals{}
	for _, sm := range a.samples {
		if now.Sub(sm.at) > w {
			continue
		}
		s := sm.s
		n++
		out.Engines += s.Engines
		out.Waiting += s.Waiting
		out.Running += s.Running
		out.KVUsage += s.KVUsage
		out.PrefillTokens += s.PrefillTokens
		out.TokensPerSecond += s.TokensPerSecond
		out.RequestsPerSecond += s.RequestsPerSecond
		out.WaitingRoom += s.WaitingRoom
		if s.TTFTAttainment >= 0 {
			ttft += s.TTFTAttainment
			na++
		}
		if s.TPOTAttainment >= 0 {
			tpot += s.TPOTAttainment
			nt++
		}
		for r, rs := range s.Roles {
			roles[r] = append(roles[r], rs)
		}
	}
	out.TTFTAttainment, out.TPOTAttainment = Unknown, Unknown
	if n == 0 {
		return out, 0
	}
	f := float64(n)
	out.Engines = int(math.Round(float64(out.Engines) / f))
	out.Waiting /= f
	out.Running /= f
	out.KVUsage /= f
	out.PrefillTokens /= f
	out.TokensPerSecond /= f
	out.RequestsPerSecond /= f
	out.WaitingRoom /= f
	if na > 0 {
		out.TTFTAttainment = ttft / float64(na)
	}
	if nt > 0 {
		out.TPOTAttainment = tpot / float64(nt)
	}
	if len(roles) > 0 {
		out.Roles = map[string]Signals{}
		for r, list := range roles {
			sub := &Autoscaler{samples: make([]sample, len(list))}
			for i, s := range list {
				sub.samples[i] = sample{now, s}
			}
			out.Roles[r], _ = sub.average(now, time.Hour)
		}
	}
	return out, n
}

// needed returns the engines the signals ask for under targets t, and the
// signal that asks most.
func needed(s Signals, t Targets) (float64, string) {
	best, why := 0.0, ""
	try := func(name string, total, target float64) {
		if target <= 0 {
			return
		}
		if v := total / target; v > best {
			best, why = v, fmt.Sprintf("%s %.3g/engine over %d engines vs target %.3g", name, total/math.Max(1, float64(s.Engines)), s.Engines, target)
		}
	}
	try("waiting", s.Waiting+s.WaitingRoom, t.WaitingPerEngine)
	try("running", s.Running, t.RunningPerEngine)
	try("kv", s.KVUsage, t.KVUsage)
	try("prefill-tokens", s.PrefillTokens, t.PrefillTokensPerEngine)
	try("tokens/s", s.TokensPerSecond, t.TokensPerSecondPerEngine)
	try("requests/s", s.RequestsPerSecond, t.RequestsPerSecondPerEngine)
	if s.WaitingRoom > 0 && best < 1 {
		best, why = 1, fmt.Sprintf("waiting room holds %.3g requests", s.WaitingRoom)
	}
	return best, why
}

// slope is the least-squares trend, in engines per second, of what the
// samples within w ask for under t.
func (a *Autoscaler) slope(now time.Time, w time.Duration, t Targets, role string) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, sm := range a.samples {
		if now.Sub(sm.at) > w {
			continue
		}
		s := sm.s
		if role != "" {
			s = s.Roles[role]
		}
		x := -now.Sub(sm.at).Seconds()
		y, _ := needed(s, t)
		n++
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	den := n*sxx - sx*sx
	if n < 3 || den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

// engines returns the engines a target set asks for: the stable window's
// demand, raised by the trend one cold start ahead (from the window's
// centre), and the panic window's demand.
func (a *Autoscaler) engines(now time.Time, stable, panicAvg Signals, t Targets, role string) (stableNeed, forecast, panicNeed float64, why string) {
	stableNeed, why = needed(stable, t)
	forecast = stableNeed
	if *a.p.Forecast {
		if sl := a.slope(now, a.p.TrendWindow, t, role); sl > 0 {
			// From the stable window's centre to one cold start ahead.
			horizon := a.p.StableWindow/2 + a.coldStart
			// A trend adds at most half the demand (or one engine): an
			// overloaded queue grows faster than the load behind it.
			forecast = stableNeed + min(sl*horizon.Seconds(), math.Max(stableNeed/2, 1))
		}
	}
	panicNeed, _ = needed(panicAvg, t)
	return stableNeed, forecast, panicNeed, why
}

func ceilDiv(engines float64, per int) int {
	if engines <= 0 {
		return 0
	}
	// Absorb float noise (3.0000000001 engines is 3).
	return int(math.Ceil(engines/float64(per) - 1e-9))
}

// Decide returns the desired groups at now given the current state. It
// assumes the decision is applied: the rate limits count it.
func (a *Autoscaler) Decide(now time.Time, st State) Decision {
	p := a.p
	stable, n := a.average(now, p.StableWindow)
	var panicAvg Signals
	if p.PanicThreshold > 0 {
		panicAvg, _ = a.average(now, p.PanicWindow)
	}
	d := Decision{Stable: stable, Groups: st.Groups, Prefill: st.Prefill, Decode: st.Decode}
	if n == 0 {
		d.Reason = "no signals yet: hold"
		return d
	}
	if p.PD != nil {
		return a.decidePD(now, st, stable, panicAvg, d)
	}

	stableNeed, forecast, panicNeed, why := a.engines(now, stable, panicAvg, p.Targets, "")
	want := ceilDiv(math.Max(stableNeed, forecast), p.EnginesPerGroup)
	var reasons []string
	if why != "" {
		reasons = append(reasons, why)
	}
	if forecast > stableNeed {
		reasons = append(reasons, fmt.Sprintf("trend +%.2g engines over cold start %s", forecast-stableNeed, a.coldStart.Round(time.Second)))
	}
	// Objective guard: below attainment, add a group unless groups are
	// already starting, and never remove one.
	att := stable.attainment()
	if p.Targets.Attainment > 0 && att >= 0 && att < p.Targets.Attainment {
		if want <= st.Groups {
			want = st.Groups
			if st.Groups == st.Ready {
				want++
			}
		}
		reasons = append(reasons, fmt.Sprintf("attainment %.3f < %.3f", att, p.Targets.Attainment))
	}
	// Panic mode.
	if p.PanicThreshold > 0 {
		pw := ceilDiv(panicNeed, p.EnginesPerGroup)
		if float64(pw) >= p.PanicThreshold*float64(max(st.Ready, 1)) && pw > st.Groups {
			if !now.Before(a.panicEnd) {
				reasons = append(reasons, fmt.Sprintf("panic: %s asks %d groups, %d ready", p.PanicWindow, pw, st.Ready))
			}
			a.panicEnd = now.Add(p.StableWindow)
		}
		if now.Before(a.panicEnd) {
			d.Panic = true
			want = max(want, pw, st.Groups)
		}
	}
	// Groups asked for and still starting have not absorbed the load
	// yet, and a backlog overstates the demand while they start (Little's
	// law: latency, hence concurrency, grows under overload). Until they
	// serve, add more only when the demand is still a step above what was
	// asked (the panic threshold, 2 when panic mode is off).
	if starting := st.Groups - st.Ready; *p.HoldWhileStarting && starting > 0 && want > st.Groups {
		step := p.PanicThreshold
		if step <= 1 {
			step = 2
		}
		if float64(want) < step*float64(st.Groups) {
			want = st.Groups
			reasons = append(reasons, fmt.Sprintf("%d groups still starting", starting))
		}
	}
	d.Recommended = want
	if !a.decided {
		// The groups that exist count as a recommendation: no scale-down
		// in the first stabilisation window.
		a.decided = true
		a.recs = append(a.recs, stamped{now, st.Groups})
	}
	a.recs = append(a.recs, stamped{now, want})
	a.prune(now)

	// Stabilisation: up to the lowest recommendation of the up window,
	// down to the highest of the down window.
	target := want
	if target > st.Groups && p.ScaleUpStabilization > 0 {
		for _, r := range a.recs {
			if now.Sub(r.at) <= p.ScaleUpStabilization {
				target = min(target, r.n)
			}
		}
		target = max(target, st.Groups)
	}
	if target < st.Groups {
		for _, r := range a.recs {
			if now.Sub(r.at) <= p.ScaleDownStabilization {
				target = max(target, r.n)
			}
		}
		target = min(target, st.Groups)
	}
	if target != st.Groups && p.Tolerance > 0 && st.Groups > 0 &&
		math.Abs(float64(target-st.Groups))/float64(st.Groups) <= p.Tolerance {
		target = st.Groups
		reasons = append(reasons, fmt.Sprintf("within tolerance %.2g", p.Tolerance))
	}
	// Scale to zero only after IdleToZero; from zero on demand.
	if target == 0 && p.MinGroups == 0 && st.Groups > 0 && now.Sub(a.lastBusy) < p.IdleToZero {
		target = 1
	}
	if target == 0 && stable.WaitingRoom > 0 {
		target = 1
	}
	// Rate limits.
	if target > st.Groups {
		room := p.MaxScaleUpGroups - sum(a.ups, now, p.ScaleUpPeriod)
		if target-st.Groups > room {
			target = st.Groups + max(room, 0)
			reasons = append(reasons, fmt.Sprintf("limited to %d groups per %s", p.MaxScaleUpGroups, p.ScaleUpPeriod))
		}
	}
	if target < st.Groups {
		room := p.MaxScaleDownGroups - sum(a.downs, now, p.ScaleDownPeriod)
		if st.Groups-target > room {
			target = st.Groups - max(room, 0)
		}
	}
	target = min(max(target, p.MinGroups), p.MaxGroups)
	d.Groups = target
	switch {
	case target > st.Groups:
		a.ups = append(a.ups, stamped{now, target - st.Groups})
		d.Reason = fmt.Sprintf("scale up %d→%d: %s", st.Groups, target, strings.Join(reasons, "; "))
	case target < st.Groups:
		a.downs = append(a.downs, stamped{now, st.Groups - target})
		d.Reason = fmt.Sprintf("scale down %d→%d: %s", st.Groups, target, orIdle(reasons))
	default:
		d.Reason = fmt.Sprintf("hold %d (recommended %d): %s", target, want, orIdle(reasons))
	}
	return d
}

func orIdle(r []string) string {
	if len(r) == 0 {
		return "no load"
	}
	return strings.Join(r, "; ")
}

func sum(evs []stamped, now time.Time, w time.Duration) int {
	n := 0
	for _, e := range evs {
		if now.Sub(e.at) < w {
			n += e.n
		}
	}
	return n
}

// prune drops history no window looks at any more.
func (a *Autoscaler) prune(now time.Time) {
	keep := max(a.p.ScaleUpStabilization, a.p.ScaleDownStabilization, a.p.ScaleUpPeriod, a.p.ScaleDownPeriod)
	drop := func(s []stamped) []stamped {
		i := 0
		for i < len(s) && now.Sub(s[i].at) > keep {
			i++
		}
		return s[i:]
	}
	a.recs, a.ups, a.downs = drop(a.recs), drop(a.ups), drop(a.downs)
}

// decidePD scales the prefill and decode instances apart, each on its own
// role's signals and targets, then brings their ratio within bounds by
// raising the smaller side.
func (a *Autoscaler) decidePD(now time.Time, st State, stable, panicAvg Signals, d Decision) Decision {
	pd := a.p.PD
	role := func(name string, t Targets, cur int) (int, string) {
		s, pn := stable.Roles[name], panicAvg.Roles[name]
		sn, fc, pnNeed, why := a.engines(now, s, pn, t, name)
		want := int(math.Ceil(math.Max(sn, fc) - 1e-9))
		if a.p.PanicThreshold > 0 && pnNeed >= a.p.PanicThreshold*float64(max(cur, 1)) {
			want = max(want, int(math.Ceil(pnNeed-1e-9)), cur)
		}
		if att := s.attainment(); t.Attainment > 0 && att >= 0 && att < t.Attainment && want <= cur {
			want = cur + 1
			why += fmt.Sprintf("; attainment %.3f < %.3f", att, t.Attainment)
		}
		// Scale down one instance per decision at most, and only when the
		// stable window agrees (the caller's period spaces decisions).
		if want < cur {
			want = cur - 1
		}
		return min(max(want, pd.MinPerRole), pd.MaxPerRole), why
	}
	pf, pwhy := role(RolePrefill, pd.Prefill, st.Prefill)
	dc, dwhy := role(RoleDecode, pd.Decode, st.Decode)
	ratio := ""
	if pd.MaxRatio > 0 && float64(pf) > pd.MaxRatio*float64(dc) {
		dc = min(int(math.Ceil(float64(pf)/pd.MaxRatio-1e-9)), pd.MaxPerRole)
		ratio = fmt.Sprintf("; decode raised to keep prefill:decode <= %.3g", pd.MaxRatio)
	}
	if pd.MinRatio > 0 && float64(pf) < pd.MinRatio*float64(dc) {
		pf = min(int(math.Ceil(pd.MinRatio*float64(dc)-1e-9)), pd.MaxPerRole)
		ratio = fmt.Sprintf("; prefill raised to keep prefill:decode >= %.3g", pd.MinRatio)
	}
	d.Prefill, d.Decode = pf, dc
	d.Groups = max(st.Groups, min(1, a.p.MaxGroups), a.p.MinGroups)
	d.Recommended = d.Groups
	d.Reason = fmt.Sprintf("prefill %d→%d (%s), decode %d→%d (%s)%s", st.Prefill, pf, orIdle(nonEmpty(pwhy)), st.Decode, dc, orIdle(nonEmpty(dwhy)), ratio)
	return d
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
