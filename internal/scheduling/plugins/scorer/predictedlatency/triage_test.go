package predictedlatency_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
)

// triageFleet is three endpoints a, b, c with queued (not started)
// prefill of queued[i] tokens each, scored by a scorer with params.
func triageFleet(t *testing.T, params string, queued [3]int) (*predictedlatency.Scorer, []*plugintest.Endpoint) {
	t.Helper()
	pl, err := predictedlatency.Factory("pl", json.RawMessage(params), plugintest.NewHandle())
	if err != nil {
		t.Fatal(err)
	}
	s := pl.(*predictedlatency.Scorer)
	eps := []*plugintest.Endpoint{plugintest.NewEndpoint("a"), plugintest.NewEndpoint("b"), plugintest.NewEndpoint("c")}
	ctx := context.Background()
	for i, n := range queued {
		req := &framework.Request{ID: fmt.Sprint("queued-", i), PromptTokens: n, MaxTokens: 100}
		s.PreRequest(ctx, nil, req, eps[i]) // no cycle state: every token uncached
	}
	return s, eps
}

// score scores one request of prompt tokens, matched[i] of them cached on
// endpoint i (nil: none), with a TTFT objective in the header, and returns
// the scores and the explanation.
func score(s *predictedlatency.Scorer, eps []*plugintest.Endpoint, prompt int, matched []int, ttftMs string) ([]float64, string) {
	req := &framework.Request{ID: "new", PromptTokens: prompt, MaxTokens: 100,
		Headers: map[string]string{predictedlatency.HeaderSLOTTFT: ttftMs}}
	st := framework.NewCycleState()
	framework.SetExplaining(st)
	if matched != nil {
		st.Write(prefixcache.MatchedKey, prefixcache.Matched{Tokens: matched})
	}
	scores := make([]float64, len(eps))
	s.Score(context.Background(), st, req, plugintest.Endpoints(eps...), scores)
	return scores, strings.Join(framework.Notes(st), "\n")
}

func argmax(xs []float64) int {
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return best
}

// With the H100 prior (0.018 ms per prefill token), 120k, 80k and 40k
// queued tokens are about 2.2, 1.5 and 0.75 s of wait; a 20k-token request
// adds about 0.4 s, so a 1 s objective is met nowhere, a and b are late
// and c is not.
var triageQueues = [3]int{120_000, 80_000, 40_000}

func TestTriagePicksTheEndpointFurthestBehind(t *testing.T) {
	for _, tt := range []struct {
		name    string
		params  string
		queued  [3]int
		ttft    string // the objective, ms; "" is 1000
		matched []int
		want    int
		notes   []string
	}{
		{name: "least-cost (the default): the least late", params: `{}`, queued: triageQueues, want: 2},
		{
			name: "triage: the endpoint furthest behind", params: `{"unmeetable":"triage"}`, queued: triageQueues, want: 0,
			notes: []string{"triage: a is already", "no endpoint is predicted to meet"},
		},
		{
			// a is 4k tokens (72 ms) further behind, but b holds the
			// request's whole prompt: 360 ms of prefill avoided.
			name: "triage: a cached prefix tips two late endpoints", params: `{"unmeetable":"triage"}`,
			queued: [3]int{100_000, 96_000, 40_000}, matched: []int{0, 20_000, 0}, want: 1,
			notes: []string{"triage: b is already"},
		},
		{
			// a (2.2 s behind) is past the bound, b (1.5 s) is not.
			name: "triage: the furthest behind under triageMaxWaitMs", params: `{"unmeetable":"triage","triageMaxWaitMs":2000}`,
			queued: triageQueues, want: 1, notes: []string{"triage: b is already"},
		},
		{
			// Both late endpoints are past the bound: least-cost, so that
			// c is the next to take triaged requests.
			name: "triage: every late endpoint past triageMaxWaitMs, least-cost", params: `{"unmeetable":"triage","triageMaxWaitMs":1200}`,
			queued: triageQueues, want: 2,
		},
		{
			// c's predicted TTFT (about 1,133 ms) misses the 1 s objective
			// by less than the 25 % margin: least-cost; by more than 10 %:
			// triaged.
			name: "triage: a narrow miss within triageMargin, least-cost", params: `{"unmeetable":"triage","triageMargin":0.25}`,
			queued: triageQueues, want: 2,
		},
		{
			name: "triage: a miss beyond triageMargin", params: `{"unmeetable":"triage","triageMargin":0.1}`,
			queued: triageQueues, want: 0, notes: []string{"triage: a is already"},
		},
		{
			// Every endpoint misses 0.3 s but none is behind it: no
			// request after this one is on time only where it goes, so
			// the pick is least-cost.
			name: "triage with no endpoint late: least-cost", params: `{"unmeetable":"triage"}`,
			queued: [3]int{12_000, 8_000, 4_000}, ttft: "300", want: 2,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, eps := triageFleet(t, tt.params, tt.queued)
			ttft := tt.ttft
			if ttft == "" {
				ttft = "1000"
			}
			scores, notes := score(s, eps, 20_000, tt.matched, ttft)
			if got := argmax(scores); got != tt.want || scores[tt.want] != 1 {
				t.Errorf("scores %v: want endpoint %d alone at 1\n%s", scores, tt.want, notes)
			}
			for _, n := range tt.notes {
				if !strings.Contains(notes, n) {
					t.Errorf("explanation lacks %q:\n%s", n, notes)
				}
			}
			if !strings.Contains(notes, "predicted ttft") {
				t.Errorf("explanation lacks the per-candidate notes:\n%s", notes)
			}
			if got := testutil.ToFloat64(s); got != 1 {
				t.Errorf("%s = %v, want 1: the metric counts the request whatever the pick", predictedlatency.MetricSLOUnmeetable, got)
			}
			if strings.Contains(tt.params, "triage") && tt.want == 0 {
				if scores[1] != 0 || scores[2] != 0 {
					t.Errorf("scores %v: the endpoints not picked by triage must score 0", scores)
				}
			}
		})
	}
}

// When some endpoint meets the objective, triage changes nothing: the
// scores are the least-cost scorer's, exactly.
func TestTriageUnchangedWhenSomeMeets(t *testing.T) {
	for _, tt := range []struct {
		name    string
		ttft    string
		matched []int
	}{
		{name: "only c meets, a and b late", ttft: "1500"},
		{name: "all meet", ttft: "5000"},
		{name: "no objective", ttft: "0"},
		{name: "a cached prefix on a late endpoint", ttft: "1500", matched: []int{20_000, 0, 0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lc, lcEps := triageFleet(t, `{}`, triageQueues)
			tr, trEps := triageFleet(t, `{"unmeetable":"triage"}`, triageQueues)
			want, _ := score(lc, lcEps, 20_000, tt.matched, tt.ttft)
			got, notes := score(tr, trEps, 20_000, tt.matched, tt.ttft)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("triage scores differ from least-cost's (-least-cost +triage):\n%s\n%s", diff, notes)
			}
			if strings.Contains(notes, "triage:") {
				t.Errorf("explanation mentions triage though some endpoint meets the objective:\n%s", notes)
			}
			if tr.Unmeetable() != 0 {
				t.Errorf("Unmeetable() = %d, want 0", tr.Unmeetable())
			}
		})
	}
}

func TestTriageParamRejected(t *testing.T) {
	for _, tt := range []struct{ params, want string }{
		{`{"unmeetable":"sacrifice-all"}`, "params.unmeetable"},
		{`{"unmeetable":"triage","triageMaxWaitMs":-1}`, "params.triageMaxWaitMs"},
		{`{"unmeetable":"triage","triageMargin":-0.5}`, "params.triageMargin"},
	} {
		_, err := predictedlatency.Factory("pl", json.RawMessage(tt.params), plugintest.NewHandle())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("params %s: error %v, want one naming %s", tt.params, err, tt.want)
		}
	}
}
