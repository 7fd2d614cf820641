package router

import (
	"cmp"
	"slices"
	"time"

	"github.com/halyard-dev/halyard/internal/console"
	"github.com/halyard-dev/halyard/internal/routing"
)

// consoleFeedSize is how many recent events the console's feed remembers.
const consoleFeedSize = 200

// mountConsole serves the web console (package console) at /ui/ on the
// admin listener. The playground's requests go through the public handler,
// admission included.
func (r *Router) mountConsole() {
	r.feed = console.NewFeed(consoleFeedSize)
	r.admin.Handle(console.Prefix, console.Handler(console.Options{
		Source: consoleSource{r}, Feed: r.feed, Playground: r.Handler(), AuthRequired: r.authOn, Logger: r.log,
	}))
}

// Feed returns the console's feed of recent decisions.
func (r *Router) Feed() *console.Feed { return r.feed }

// consoleSource gives the console the fleet and the routes.
type consoleSource struct{ r *Router }

func (s consoleSource) Fleet() []console.Endpoint {
	now := s.r.now()
	eps := s.r.store.All()
	out := make([]console.Endpoint, 0, len(eps))
	for _, e := range eps {
		md, m := e.Metadata(), e.Metrics()
		reqs, toks := e.InFlight()
		v := console.Endpoint{
			Name: md.Name, Pool: e.Pool(), Address: md.Address, Model: md.Model, Role: string(md.Role),
			Healthy: e.Healthy(), Ejected: e.Ejected(now), LastError: e.LastError(),
			InFlight: reqs, InFlightTokens: toks,
			Running: m.RunningRequests, Waiting: m.WaitingRequests, KVCacheUsage: m.KVCacheUsage, Scraped: m.UpdateTime,
		}
		if m.PrefixCacheQueries > 0 {
			st := s.r.prefix.drift.Status(md.Name)
			v.PredictedHitRatio = ratio(st.PredictedTotal, m.PrefixCacheQueries)
			v.ActualHitRatio = ratio(m.PrefixCacheHits, m.PrefixCacheQueries)
			if st.OK {
				v.DriftRatio = &st.Ratio
			}
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b console.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func ratio(n, d float64) *float64 {
	v := min(n/d, 1)
	return &v
}

func (s consoleSource) Routes() []console.Route {
	table := s.r.routes().table
	out := make([]console.Route, 0, len(table.Models()))
	for _, m := range table.Models() {
		rt, _ := table.Lookup(m)
		v := console.Route{Model: rt.Model, Adapter: rt.Adapter, Profile: rt.Profile, Targets: consoleTargets(rt.Split()), Fallback: consoleTargets(rt.Fallback())}
		for _, ts := range rt.RuleSplits() {
			v.Rules = append(v.Rules, consoleTargets(ts))
		}
		out = append(out, v)
	}
	return out
}

func consoleTargets(ts []routing.Target) []console.Target {
	if len(ts) == 0 {
		return nil
	}
	out := make([]console.Target, len(ts))
	for i, t := range ts {
		out[i] = console.Target{Pool: t.Pool, Model: t.Model, Weight: t.Weight}
	}
	return out
}

// publishDecision hands the decision that is about to answer to the
// console's feed; called only for watched calls (call.watched).
func (r *Router) publishDecision(c *call, d *pick, attempt int) {
	v := &console.Decision{
		ID: c.req.ID, Time: time.Now(), Model: c.route.Model, Pool: d.Target.Pool, Fallback: d.Fallback,
		Profile: c.profile.Name(), Endpoint: d.endpoint.Metadata().Name, Attempt: attempt,
		Explain: compactExplanation(c, d, attempt), Explanation: d.Explanation,
	}
	if d.HasPrefix {
		p := d.Prefix
		v.PredictedHit = &p
	}
	if a := d.pd; a != nil {
		v.Profile = a.pool.Spec.DecodeProfile
		v.Prefill = a.prefill
	}
	for _, x := range d.Excluded {
		v.Excluded = append(v.Excluded, console.Exclusion{Name: x.Name, Reason: x.Reason})
	}
	c.published = true
	r.feed.Publish(console.Event{Decision: v})
}

// publishOutcome hands a watched call's end to the feed, once a decision
// was published for it.
func (r *Router) publishOutcome(c *call, status int, start time.Time) {
	if !c.published {
		return
	}
	o := &console.Outcome{ID: c.req.ID, Status: status, DurationMs: msSince(start, time.Now())}
	if !c.firstToken.IsZero() {
		o.TTFTMs = msSince(c.start, c.firstToken)
	}
	if c.usage.Known {
		o.PromptTokens, o.CompletionTokens, o.CachedTokens = c.usage.PromptTokens, c.usage.CompletionTokens, c.usage.CachedTokens
	}
	r.feed.Publish(console.Event{Outcome: o})
}

func msSince(from, to time.Time) float64 { return float64(to.Sub(from).Microseconds()) / 1000 }
