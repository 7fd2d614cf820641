package predictedlatency_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
)

type sent struct {
	endpoint         int
	prompt, uncached int
	first            bool // its first token came
}

// decoding returns n requests of prompt tokens decoding on endpoint.
func decoding(endpoint, n, prompt int) []sent {
	out := make([]sent, n)
	for i := range out {
		out[i] = sent{endpoint: endpoint, prompt: prompt, uncached: prompt, first: true}
	}
	return out
}

func TestScore(t *testing.T) {
	tests := []struct {
		name    string
		params  string
		before  []sent              // requests already on the endpoints
		metrics []framework.Metrics // scraped, per endpoint (nil: empty)
		matched []int               // prefix-cache's matches for the request
		headers map[string]string   // request headers
		prompt  int                 // the request's prompt tokens
		want    int                 // the endpoint that must score 1
		notes   []string            // substrings the explanation must hold
		absent  []string            // substrings it must not hold
	}{
		{name: "idle fleet: first endpoint", prompt: 1000, want: 0},
		{
			name:   "queued prefill pushes away",
			before: []sent{{endpoint: 0, prompt: 8000, uncached: 8000}},
			prompt: 1000, want: 1,
		},
		{
			name:    "a cached prefix wins over an empty idle endpoint",
			before:  []sent{{endpoint: 0, prompt: 500, uncached: 500}},
			matched: []int{6000, 0},
			prompt:  7000, want: 0,
		},
		{
			name:    "but not when the prefill queued there costs more than the prefix saves",
			before:  []sent{{endpoint: 0, prompt: 30000, uncached: 30000}},
			matched: []int{6000, 0},
			prompt:  7000, want: 1,
		},
		{
			name:    "the scrape shows another router's queue",
			metrics: []framework.Metrics{{WaitingRequests: 8}, {}},
			before:  []sent{{endpoint: 1, prompt: 200, uncached: 200}},
			prompt:  1000, want: 1,
		},
		{
			name:    "an objective that only the slower endpoint meets",
			params:  `{"stallWeight":0}`,
			before:  append([]sent{{endpoint: 0, prompt: 4000, uncached: 4000}}, decoding(1, 20, 4000)...),
			headers: map[string]string{predictedlatency.HeaderSLOTTFT: "10000", predictedlatency.HeaderSLOTPOT: "7"},
			prompt:  1000, want: 0,
			notes: []string{"misses the objectives"},
		},
		{
			name:    "graded: a small miss weighs less than a queued prefill",
			params:  `{"stallWeight":0,"objectiveWeight":0.001}`,
			before:  append([]sent{{endpoint: 0, prompt: 4000, uncached: 4000}}, decoding(1, 20, 4000)...),
			headers: map[string]string{predictedlatency.HeaderSLOTTFT: "10000", predictedlatency.HeaderSLOTPOT: "7"},
			prompt:  1000, want: 1,
			notes: []string{"misses the objectives"},
		},
		{
			name:    "graded: a large weight keeps the endpoint that meets them",
			params:  `{"stallWeight":0,"objectiveWeight":10}`,
			before:  append([]sent{{endpoint: 0, prompt: 4000, uncached: 4000}}, decoding(1, 20, 4000)...),
			headers: map[string]string{predictedlatency.HeaderSLOTTFT: "10000", predictedlatency.HeaderSLOTPOT: "7"},
			prompt:  1000, want: 0,
		},
		{
			// a has a prefill queued and nothing decoding; b two short
			// streams. Nobody's own TPOT can be 1 ms, so by default both
			// miss and the earlier TTFT (b) wins.
			name:    "a TPOT objective nobody meets: the earlier TTFT",
			before:  append([]sent{{endpoint: 0, prompt: 4000, uncached: 4000}}, decoding(1, 2, 100)...),
			headers: map[string]string{predictedlatency.HeaderSLOTPOT: "1"},
			prompt:  1000, want: 1,
			notes: []string{"no endpoint is predicted to meet the objectives"},
		},
		{
			// A prefill endpoint of a disaggregated pool: the request
			// decodes elsewhere, so the TPOT objective is not its to
			// meet; both meet the TTFT objective.
			name:    "remoteDecode: only the TTFT objective is checked",
			params:  `{"remoteDecode":true}`,
			before:  append([]sent{{endpoint: 0, prompt: 4000, uncached: 4000}}, decoding(1, 2, 100)...),
			headers: map[string]string{predictedlatency.HeaderSLOTTFT: "10000", predictedlatency.HeaderSLOTPOT: "1"},
			prompt:  1000, want: 1,
			absent: []string{"no endpoint is predicted to meet", "misses the objectives"},
		},
		{
			name:    "remoteDecode: a TTFT objective nobody meets is said",
			params:  `{"remoteDecode":true}`,
			headers: map[string]string{predictedlatency.HeaderSLOTTFT: "1", predictedlatency.HeaderSLOTPOT: "1"},
			prompt:  8000, want: 0,
			notes: []string{"no endpoint is predicted to meet the objectives (ttft 1ms)"},
		},
		{
			name:    "objectiveOnStreams: an endpoint with no stream decoding breaks nobody's TPOT",
			params:  `{"objectiveOnStreams":true}`,
			before:  append([]sent{{endpoint: 0, prompt: 4000, uncached: 4000}}, decoding(1, 2, 100)...),
			headers: map[string]string{predictedlatency.HeaderSLOTPOT: "1"},
			prompt:  1000, want: 0,
			notes: []string{"b predicted ttft"},
		},
		{
			// b has a short prefill queued (a later TTFT) and a is decoding
			// 40 long streams (every step of the answer slower there).
			name:   "TTFT alone: the endpoint that starts first",
			before: append([]sent{{endpoint: 1, prompt: 1500, uncached: 1500}}, decoding(0, 40, 8000)...),
			prompt: 1000, want: 0,
		},
		{
			name:   "with the decode term: the endpoint that finishes first",
			params: `{"decodeWeight":1}`,
			before: append([]sent{{endpoint: 1, prompt: 1500, uncached: 1500}}, decoding(0, 40, 8000)...),
			prompt: 1000, want: 1,
		},
		{
			name:    "no endpoint meets the objective: said so",
			headers: map[string]string{predictedlatency.HeaderSLOTTFT: "1"},
			prompt:  8000, want: 0,
			notes: []string{"no endpoint is predicted to meet the objectives (ttft 1ms)", "predicted ttft"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := plugintest.NewHandle()
			pl, err := predictedlatency.Factory("pl", json.RawMessage(tt.params), h)
			if err != nil {
				t.Fatal(err)
			}
			s := pl.(*predictedlatency.Scorer)
			eps := []*plugintest.Endpoint{plugintest.NewEndpoint("a"), plugintest.NewEndpoint("b")}
			for i, m := range tt.metrics {
				eps[i].SetMetrics(m)
			}
			ctx := context.Background()
			for i, b := range tt.before {
				req := &framework.Request{ID: fmt.Sprint("before-", i), PromptTokens: b.prompt, MaxTokens: 100}
				st := framework.NewCycleState()
				m := make([]int, len(eps))
				m[b.endpoint] = b.prompt - b.uncached
				st.Write(prefixcache.MatchedKey, prefixcache.Matched{Tokens: m})
				s.Score(ctx, st, req, plugintest.Endpoints(eps...), make([]float64, len(eps)))
				s.PreRequest(ctx, st, req, eps[b.endpoint])
				if b.first {
					s.FirstToken(ctx, req, eps[b.endpoint])
				}
			}
			req := &framework.Request{ID: "new", PromptTokens: tt.prompt, MaxTokens: 100, Headers: tt.headers}
			st := framework.NewCycleState()
			framework.SetExplaining(st)
			if tt.matched != nil {
				st.Write(prefixcache.MatchedKey, prefixcache.Matched{Tokens: tt.matched})
			}
			scores := make([]float64, len(eps))
			s.Score(ctx, st, req, plugintest.Endpoints(eps...), scores)
			if scores[tt.want] != 1 {
				t.Errorf("scores %v: endpoint %d should score 1\nnotes:\n%s", scores, tt.want, strings.Join(framework.Notes(st), "\n"))
			}
			notes := strings.Join(framework.Notes(st), "\n")
			for _, n := range tt.notes {
				if !strings.Contains(notes, n) {
					t.Errorf("explanation lacks %q:\n%s", n, notes)
				}
			}
			for _, n := range tt.absent {
				if strings.Contains(notes, n) {
					t.Errorf("explanation holds %q:\n%s", n, notes)
				}
			}
			if _, ok := framework.ReadAs[framework.Unmeetable](st, framework.UnmeetableKey); ok != strings.Contains(notes, "no endpoint is predicted to meet") {
				t.Errorf("unmeetable recorded: %v, but the explanation says otherwise:\n%s", ok, notes)
			}
		})
	}
}

// ObjectiveHeaders writes what Objectives reads back.
func TestObjectiveHeaders(t *testing.T) {
	s, err := predictedlatency.New("pl", predictedlatency.DefaultParams(), plugintest.NewHandle())
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ttft, tpot         time.Duration
		wantTTFT, wantTPOT float64
		headers            int
	}{
		{time.Second, 15 * time.Millisecond, 1000, 15, 2},
		{0, 1500 * time.Microsecond, 0, 1.5, 1},
		{2 * time.Second, 0, 2000, 0, 1},
		{0, 0, 0, 0, 0},
	} {
		h := predictedlatency.ObjectiveHeaders(tt.ttft, tt.tpot)
		if len(h) != tt.headers {
			t.Errorf("ObjectiveHeaders(%v, %v) = %v, want %d headers", tt.ttft, tt.tpot, h, tt.headers)
		}
		ttft, tpot := s.Objectives(&framework.Request{Headers: h})
		if ttft != tt.wantTTFT || tpot != tt.wantTPOT {
			t.Errorf("ObjectiveHeaders(%v, %v) = %v read back as ttft %v tpot %v, want %v %v", tt.ttft, tt.tpot, h, ttft, tpot, tt.wantTTFT, tt.wantTPOT)
		}
	}
}

// The hooks keep the estimate: sent, first token, done; a streamed request
// feeds the fit.
func TestHooksKeepTheEstimate(t *testing.T) {
	h := plugintest.NewHandle()
	s, err := predictedlatency.New("pl", predictedlatency.DefaultParams(), h)
	if err != nil {
		t.Fatal(err)
	}
	ep := plugintest.NewEndpoint("a")
	ctx := context.Background()
	req := &framework.Request{ID: "r", PromptTokens: 1000, MaxTokens: 10}
	s.PreRequest(ctx, nil, req, ep)
	type counts struct{ Waiting, Decoding int }
	get := func() counts { w, d := s.Engine("a").InFlight(); return counts{w, d} }
	if diff := cmp.Diff(counts{1, 0}, get()); diff != "" {
		t.Fatalf("after sending (-want +got):\n%s", diff)
	}
	h.Clock.Advance(30 * time.Millisecond)
	s.FirstToken(ctx, req, ep)
	if diff := cmp.Diff(counts{0, 1}, get()); diff != "" {
		t.Fatalf("after the first token (-want +got):\n%s", diff)
	}
	h.Clock.Advance(90 * time.Millisecond)
	s.ResponseComplete(ctx, req, ep, framework.Outcome{CompletionTokens: 10})
	if diff := cmp.Diff(counts{0, 0}, get()); diff != "" {
		t.Fatalf("after the end (-want +got):\n%s", diff)
	}
	if got := s.Engine("a").Coefficients(); got.BaseMs == predictedlatency.DefaultPriorBaseMs() {
		t.Errorf("the fit did not move from its prior after a 10 ms/token stream: %+v", got)
	}
}

func TestFactoryRejects(t *testing.T) {
	for _, tt := range []struct{ params, want string }{
		{`{"maxBatchedTokens":0}`, "params.maxBatchedTokens"},
		{`{"forgetting":1.5}`, "params.forgetting"},
		{`{"prior":{"baseMs":-1}}`, "params.prior.baseMs"},
		{`{"ttftObjectiveMs":-3}`, "params.ttftObjectiveMs"},
		{`{"decodeWeight":-1}`, "params.decodeWeight"},
		{`{"objectiveWeight":-1}`, "params.objectiveWeight"},
		{`{"slackMs":-1}`, "params.slackMs"},
		{`{"slackShare":-0.5}`, "params.slackShare"},
		{`{"slackMaxMs":-2}`, "params.slackMaxMs"},
		{`{"bogus":1}`, "bogus"},
	} {
		_, err := predictedlatency.Factory("pl", json.RawMessage(tt.params), plugintest.NewHandle())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("params %s: error %v, want one naming %s", tt.params, err, tt.want)
		}
	}
}

func BenchmarkScore(b *testing.B) {
	s, err := predictedlatency.New("pl", predictedlatency.DefaultParams(), plugintest.NewHandle())
	if err != nil {
		b.Fatal(err)
	}
	eps := make([]*plugintest.Endpoint, 100)
	for i := range eps {
		eps[i] = plugintest.NewEndpoint(string(rune('A'+i%26)) + string(rune('a'+i/26)))
	}
	all := plugintest.Endpoints(eps...)
	ctx := context.Background()
	for i := range 500 {
		req := &framework.Request{ID: fmt.Sprint("w", i), PromptTokens: 4000, MaxTokens: 200}
		s.PreRequest(ctx, nil, req, eps[i%len(eps)])
	}
	req := &framework.Request{ID: "new", PromptTokens: 8000, MaxTokens: 200}
	scores := make([]float64, len(eps))
	b.ReportAllocs()
	for b.Loop() {
		s.Score(ctx, framework.NewCycleState(), req, all, scores)
	}
}

// decodePrefillRate charges the decode term the predicted TPOT, which
// counts the prefill an engine has been mixing into its steps: of two
// endpoints with the same decode batch, the one whose last stream decoded
// through an 8,000-token prefill costs more; without it they tie.
func TestDecodePrefillRate(t *testing.T) {
	for _, tt := range []struct {
		params string
		wantA  bool // a still scores 1
	}{
		{`{"decodeWeight":1}`, true},
		{`{"decodeWeight":1,"decodePrefillRate":true}`, false},
	} {
		t.Run(tt.params, func(t *testing.T) {
			h := plugintest.NewHandle()
			pl, err := predictedlatency.Factory("pl", json.RawMessage(tt.params), h)
			if err != nil {
				t.Fatal(err)
			}
			s := pl.(*predictedlatency.Scorer)
			a, b := plugintest.NewEndpoint("a"), plugintest.NewEndpoint("b")
			ctx := context.Background()
			send := func(id string, prompt int, ep *plugintest.Endpoint) *framework.Request {
				req := &framework.Request{ID: id, PromptTokens: prompt, MaxTokens: 50}
				s.PreRequest(ctx, nil, req, ep)
				return req
			}
			// On a, x decodes while y's 8,000-token prefill runs, then ends.
			x := send("x", 1000, a)
			s.FirstToken(ctx, x, a)
			y := send("y", 8000, a)
			h.Clock.Advance(150 * time.Millisecond)
			s.FirstToken(ctx, y, a)
			h.Clock.Advance(time.Second)
			s.ResponseComplete(ctx, x, a, framework.Outcome{CompletionTokens: 50})
			// On b, z alone: the same batch as a now holds (one stream of
			// 8,000 tokens).
			z := send("z", 8000, b)
			s.FirstToken(ctx, z, b)
			scores := make([]float64, 2)
			s.Score(ctx, framework.NewCycleState(), &framework.Request{ID: "new", PromptTokens: 1000, MaxTokens: 100}, plugintest.Endpoints(a, b), scores)
			if scores[1] != 1 {
				t.Errorf("scores %v: b should score 1", scores)
			}
			if got := scores[0] == 1; got != tt.wantA {
				t.Errorf("scores %v: a scores 1 = %v, want %v", scores, got, tt.wantA)
			}
		})
	}
}

// decodeWhole charges the whole decode time: the same endpoint wins, and
// the other's score moves towards 1, since the TTFT gap is weighed against
// the request's whole predicted latency.
func TestDecodeWhole(t *testing.T) {
	score := func(params string) []float64 {
		h := plugintest.NewHandle()
		pl, err := predictedlatency.Factory("pl", json.RawMessage(params), h)
		if err != nil {
			t.Fatal(err)
		}
		s := pl.(*predictedlatency.Scorer)
		a, b := plugintest.NewEndpoint("a"), plugintest.NewEndpoint("b")
		ctx := context.Background()
		s.PreRequest(ctx, nil, &framework.Request{ID: "queued", PromptTokens: 4000, MaxTokens: 50}, b)
		scores := make([]float64, 2)
		s.Score(ctx, framework.NewCycleState(), &framework.Request{ID: "new", PromptTokens: 1000, MaxTokens: 500}, plugintest.Endpoints(a, b), scores)
		return scores
	}
	part, whole := score(`{"decodeWeight":1}`), score(`{"decodeWeight":1,"decodeWhole":true}`)
	if part[0] != 1 || whole[0] != 1 {
		t.Fatalf("a, with no prefill queued, should win both ways: %v and %v", part, whole)
	}
	if !(whole[1] > part[1] && whole[1] < 1) {
		t.Errorf("b's score with the whole decode time %v, want between %v and 1", whole[1], part[1])
	}
}

// TestConcurrentCyclesAddEndpoints runs scoring cycles from several
// goroutines, each over shared endpoints and endpoints seen for the first
// time (so the engines' map grows while other cycles read it under its read
// lock), then checks that every request sent is counted once.
func TestConcurrentCyclesAddEndpoints(t *testing.T) {
	s, err := predictedlatency.New("pl", predictedlatency.DefaultParams(), plugintest.NewHandle())
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, cycles = 4, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for c := range cycles {
				eps := []*plugintest.Endpoint{
					plugintest.NewEndpoint(fmt.Sprintf("shared-%d", c%3)),
					plugintest.NewEndpoint(fmt.Sprintf("new-%d-%d", g, c)),
				}
				all := plugintest.Endpoints(eps...)
				req := &framework.Request{ID: fmt.Sprintf("r-%d-%d", g, c), PromptTokens: 100 + c}
				state := framework.NewCycleState()
				scores := make([]float64, len(all))
				s.Score(ctx, state, req, all, scores)
				s.PreRequest(ctx, state, req, all[c%2])
			}
		}()
	}
	wg.Wait()
	waiting := 0
	for _, name := range []string{"shared-0", "shared-1", "shared-2"} {
		w, _ := s.Engine(name).InFlight()
		waiting += w
	}
	for g := range goroutines {
		for c := range cycles {
			w, _ := s.Engine(fmt.Sprintf("new-%d-%d", g, c)).InFlight()
			waiting += w
		}
	}
	if want := goroutines * cycles; waiting != want {
		t.Errorf("%d requests counted waiting across the engines, want %d", waiting, want)
	}
}
