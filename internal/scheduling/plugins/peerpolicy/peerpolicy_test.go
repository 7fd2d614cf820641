package peerpolicy_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/peerpolicy"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
)

// state returns a cycle state holding the prefix-cache scorer's match
// ratios, as that scorer leaves them when it runs first.
func state(ratios ...float64) *framework.CycleState {
	s := framework.NewCycleState()
	if ratios != nil {
		s.Write(prefixcache.MatchedKey, prefixcache.Matched{Tokens: make([]int, len(ratios)), Ratios: ratios})
	}
	return s
}

// eps returns endpoints e0, e1, … with the given in-flight counts.
func eps(inflight ...int64) []framework.Endpoint {
	out := make([]*plugintest.Endpoint, len(inflight))
	for i, n := range inflight {
		out[i] = plugintest.NewEndpoint(string(rune('a'+i))).WithInFlight(n, 0)
	}
	return plugintest.Endpoints(out...)
}

func TestSGLangCacheAware(t *testing.T) {
	tests := []struct {
		name     string
		inflight []int64
		ratios   []float64
		want     []float64
	}{
		{"match above the threshold wins over load", []int64{10, 0, 5}, []float64{0.9, 0, 0.2}, []float64{1, 0, 0}},
		{"match at or below the threshold goes to the least loaded", []int64{10, 0, 5}, []float64{0.3, 0, 0.2}, []float64{0, 1, 0}},
		{"equal best matches: the less loaded", []int64{7, 3, 0}, []float64{0.8, 0.8, 0}, []float64{0, 1, 0}},
		{"imbalanced (spread 70 > 64 and 80 > 1.5×10): least loaded despite a match", []int64{80, 10, 30}, []float64{0.95, 0, 0}, []float64{0, 1, 0}},
		{"spread above 64 but within 1.5×: still balanced", []int64{200, 135, 150}, []float64{0.95, 0, 0}, []float64{1, 0, 0}},
		{"no prefix scorer ran: least loaded", []int64{4, 2, 9}, nil, []float64{0, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := plugintest.Build[*peerpolicy.SGLang](t, peerpolicy.SGLangFactory, `{"seed":1}`, plugintest.NewHandle())
			got := plugintest.Score(s, state(tt.ratios...), &framework.Request{}, eps(tt.inflight...))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAIBrixPrefixCache(t *testing.T) {
	tests := []struct {
		name     string
		inflight []int64
		ratios   []float64
		want     []float64
	}{
		{"best match within mean + 1 sd", []int64{3, 2, 4}, []float64{0.5, 0.9, 0}, []float64{0, 1, 0}},
		// loads 9,1,1,1: mean 3, sd 3.46, limit 6.46: e0 (9) is out, the
		// next match e1 wins.
		{"best match too loaded: the next match", []int64{9, 1, 1, 1}, []float64{0.9, 0.4, 0, 0}, []float64{0, 1, 0, 0}},
		{"equal matches: the less loaded", []int64{2, 1, 3}, []float64{0.6, 0.6, 0}, []float64{0, 1, 0}},
		// spread 10 > 8: only the least loaded (e2) may be picked, and it
		// has no match: fallback to the least loaded of all, e2.
		{"imbalanced: only the least loaded count", []int64{10, 5, 0}, []float64{0.9, 0.9, 0}, []float64{0, 0, 1}},
		{"no match: least loaded", []int64{3, 1, 2}, []float64{0, 0, 0}, []float64{0, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := plugintest.Build[*peerpolicy.AIBrix](t, peerpolicy.AIBrixFactory, `{"seed":1}`, plugintest.NewHandle())
			got := plugintest.Score(s, state(tt.ratios...), &framework.Request{}, eps(tt.inflight...))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKthenaLeastRequest(t *testing.T) {
	a := plugintest.NewEndpoint("a").WithInFlight(2, 0).WithMetrics(framework.Metrics{RunningRequests: 2})
	b := plugintest.NewEndpoint("b").WithInFlight(3, 0).WithMetrics(framework.Metrics{RunningRequests: 2}) // one not yet running: 3 + 100
	c := plugintest.NewEndpoint("c")
	s := plugintest.Build[*peerpolicy.KthenaLeast](t, peerpolicy.KthenaLeastFactory, "", plugintest.NewHandle())
	got := plugintest.Score(s, framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(a, b, c))
	want := []float64{(103.0 - 2) / 103, 0, 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
	got = plugintest.Score(s, framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(c, plugintest.NewEndpoint("d")))
	if diff := cmp.Diff([]float64{1, 1}, got); diff != "" {
		t.Errorf("idle endpoints (-want +got):\n%s", diff)
	}
}

// With span the scores run from 1 (least) to 0 (most) whatever the
// counts: on endpoints running 100, 102 and 104 requests the least loaded
// is a full point ahead of the most, where Kthena's own score puts them
// 0.04 apart.
func TestKthenaLeastRequestSpan(t *testing.T) {
	busy := func(name string, n int) *plugintest.Endpoint {
		return plugintest.NewEndpoint(name).WithInFlight(int64(n), 0).WithMetrics(framework.Metrics{RunningRequests: n})
	}
	a, b, d := busy("a", 100), busy("b", 102), busy("d", 104)
	s := plugintest.Build[*peerpolicy.KthenaLeast](t, peerpolicy.KthenaLeastFactory, `{"span":true}`, plugintest.NewHandle())
	got := plugintest.Score(s, framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(a, b, d))
	if diff := cmp.Diff([]float64{1, 0.5, 0}, got); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
	plain := plugintest.Build[*peerpolicy.KthenaLeast](t, peerpolicy.KthenaLeastFactory, "", plugintest.NewHandle())
	got = plugintest.Score(plain, framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(a, b, d))
	if diff := cmp.Diff([]float64{4.0 / 104, 2.0 / 104, 0}, got); diff != "" {
		t.Errorf("without span (-want +got):\n%s", diff)
	}
	got = plugintest.Score(s, framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(a, a))
	if diff := cmp.Diff([]float64{1, 1}, got); diff != "" {
		t.Errorf("equal endpoints (-want +got):\n%s", diff)
	}
}

func TestMaxWaiting(t *testing.T) {
	f := plugintest.Build[*peerpolicy.MaxWaiting](t, peerpolicy.MaxWaitingFactory, `{"maxWaiting":3}`, plugintest.NewHandle())
	mk := func(name string, waiting int) *plugintest.Endpoint {
		return plugintest.NewEndpoint(name).WithMetrics(framework.Metrics{WaitingRequests: waiting})
	}
	kept := f.Filter(t.Context(), framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(mk("a", 2), mk("b", 3), mk("c", 0)))
	var names []string
	for _, e := range kept {
		names = append(names, e.Metadata().Name)
	}
	if diff := cmp.Diff([]string{"a", "c"}, names); diff != "" {
		t.Errorf("kept (-want +got):\n%s", diff)
	}
	if kept := f.Filter(t.Context(), framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(mk("a", 3))); len(kept) != 0 {
		t.Errorf("an endpoint at the limit was kept: %d", len(kept))
	}
}

func TestFactoriesRejectBadParams(t *testing.T) {
	for _, c := range []struct {
		f      framework.Factory
		params string
	}{
		{peerpolicy.SGLangFactory, `{"cacheThreshold":1.5}`},
		{peerpolicy.SGLangFactory, `{"unknown":1}`},
		{peerpolicy.AIBrixFactory, `{"imbalanceAbsCount":-1}`},
		{peerpolicy.KthenaLeastFactory, `{"x":1}`},
		{peerpolicy.MaxWaitingFactory, `{"maxWaiting":0}`},
	} {
		if _, err := c.f("p", []byte(c.params), plugintest.NewHandle()); err == nil {
			t.Errorf("params %s accepted", c.params)
		}
	}
}
