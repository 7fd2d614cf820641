package e2e

import (
	"context"
	"encoding/json"

	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var kvLogRE = regexp.MustCompile(`kv-event publisher started.* endpoint=(tcp://\S+) replay=(tcp://\S+)`)

// startKVSim runs `halyard sim` publishing KV events on free ports and
// returns it with its event and replay addresses.
func startKVSim(t *testing.T, name string, extra ...string) (p *process, events, replay string) {
	t.Helper()
	args := append([]string{"--kv-events", "tcp://127.0.0.1:0", "--name", name}, extra...)
	p = startSim(t, name, "llama", "zero", args...)
	m := kvLogRE.FindStringSubmatch(p.Logs())
	if m == nil {
		t.Fatalf("sim %s logged no KV-event addresses:\n%s", name, p.Logs())
	}
	return p, m[1], m[2]
}

// route is the part of /debug/route these tests read.
type route struct {
	Explanation struct {
		Endpoints []struct {
			Name   string             `json:"name"`
			Scores map[string]float64 `json:"scores"`
		} `json:"endpoints"`
	} `json:"explanation"`
	PrefixIndex  map[string]string `json:"prefixIndex"`
	Picked       string            `json:"picked"`
	PromptTokens int               `json:"promptTokens"`
}

func (r route) prefixScore(endpoint string) float64 {
	for _, e := range r.Explanation.Endpoints {
		if e.Name == endpoint {
			return e.Scores["prefix-cache"]
		}
	}
	return -1
}

func chatJSON(model, system, question string) string {
	b, _ := json.Marshal(map[string]any{"model": model, "max_tokens": 4, "messages": []map[string]string{
		{"role": "system", "content": system}, {"role": "user", "content": question},
	}})
	return string(b)
}

func debugRoute(t *testing.T, r *process, body string) route {
	t.Helper()
	resp, err := http.Post(adminURL(t, r)+"/debug/route", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out route
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// eventually polls cond every 20 ms for up to 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPreciseRoutingFromKVEvents: two simulated engines publish KV events;
// the router follows them. A system prompt cached on e0 by a request the
// router never saw draws every conversation that shares it to e0; once
// e0's cache is reset the router stops scoring e0 for it, while an
// approximate index (a second pool over the same engine, no events) still
// believes e0 holds it.
func TestPreciseRoutingFromKVEvents(t *testing.T) {
	e0, ev0, rp0 := startKVSim(t, "e0")
	e1, ev1, rp1 := startKVSim(t, "e1")
	doc := strings.NewReplacer("{{ev0}}", ev0, "{{rp0}}", rp0, "{{ev1}}", ev1, "{{rp1}}", rp1).Replace(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {scrapeInterval: 50ms, timeouts: {scrape: 3s}}
endpoints:
  - {name: p0, url: "{{e0}}", model: llama, pool: precise, kvEvents: {endpoint: "{{ev0}}", replayEndpoint: "{{rp0}}"}}
  - {name: p1, url: "{{e1}}", model: llama, pool: precise, kvEvents: {endpoint: "{{ev1}}", replayEndpoint: "{{rp1}}"}}
  - {name: a0, url: "{{e0}}", model: llama, pool: approx}
models:
  - {name: llama, tokenizer: pseudo, chatTemplate: halyard-sim}
routes:
  - {model: llama, targets: [{pool: precise}]}
  - {model: llama-approx, targets: [{pool: approx}]}
`)
	r := startRouter(t, doc, map[string]*process{"e0": e0, "e1": e1})
	system := words(7, 3000)
	eventually(t, "both endpoints precise", func() bool {
		m := debugRoute(t, r, chatJSON("llama", system, "q")).PrefixIndex
		return m["p0"] == "precise" && m["p1"] == "precise"
	})

	// A request straight to e0, which the router never sees.
	direct := openai.NewClient(option.WithBaseURL(e0.URL()+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	if _, err := direct.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:     "llama",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system), openai.UserMessage("warm up")},
		MaxTokens: openai.Int(4),
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "e0's events", func() bool {
		return debugRoute(t, r, chatJSON("llama", system, "first question")).prefixScore("p0") > 0.9
	})
	if s := debugRoute(t, r, chatJSON("llama-approx", system, "first question")).prefixScore("a0"); s != 0 {
		t.Errorf("the approximate index scores a0 %v for a prompt it never routed, want 0", s)
	}

	// Conversations sharing the system prompt land on e0.
	c := client(r)
	for i := range 6 {
		var resp *http.Response
		_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:     "llama",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system), openai.UserMessage(words(100+i, 20))},
			MaxTokens: openai.Int(4),
		}, option.WithHeader("x-halyard-explain", "1"), option.WithResponseInto(&resp))
		if err != nil {
			t.Fatal(err)
		}
		if got := pickedEndpoint(resp); got != "p0" {
			t.Errorf("conversation %d went to %s, want p0 (%s)", i, got, resp.Header.Get("x-halyard-route"))
		}
		if h := resp.Header.Get("x-halyard-route"); !strings.Contains(h, "prefix index: p0 precise, p1 precise") {
			t.Errorf("explanation lacks the index modes: %s", h)
		}
	}
	// The approximate pool learns by routing: two requests through it.
	for i := range 2 {
		if _, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
			Model:     "llama-approx",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system), openai.UserMessage(words(200+i, 20))},
			MaxTokens: openai.Int(4),
		}); err != nil {
			t.Fatal(err)
		}
	}
	if m := engineMetrics(t, e0); m.PrefixCacheHits < 8*2900 {
		t.Errorf("e0 reports %v prefix-hit tokens for 8 requests sharing a 3,000-token prompt", m.PrefixCacheHits)
	}

	// Reset e0's cache.
	resp, err := http.Post(e0.URL()+"/reset_prefix_cache", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, "p0 no longer scored for the prompt", func() bool {
		return debugRoute(t, r, chatJSON("llama", system, "after the reset")).prefixScore("p0") == 0
	})
	if s := debugRoute(t, r, chatJSON("llama-approx", system, "after the reset")).prefixScore("a0"); s < 0.9 {
		t.Errorf("the approximate index scores a0 %v after the reset; it cannot know of it and should still say about 1", s)
	}
	// The next conversations follow wherever the prompt is cached now.
	first := ask(t, c, system, words(300, 20), 4)
	for i := range 3 {
		if got := ask(t, c, system, words(301+i, 20), 4); got != first {
			t.Errorf("after the reset, conversation %d went to %s, the prompt's new home is %s", i, got, first)
		}
	}
}

// scrapeFamilies reads a /metrics page with the Prometheus text parser.
func scrapeFamilies(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// byEndpoint returns the values of a family's series by their endpoint
// label.
func byEndpoint(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "endpoint" {
				out[l.GetValue()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestDriftAlarm: with the router tokenising as the engines do, the
// predicted and the engine-reported prefix hits agree (drift ratio near 1);
// with a router that tokenises with cl100k in front of engines that use the
// pseudo-tokenizer, every precise prediction misses while the engines hit,
// and the ratio collapses.
func TestDriftAlarm(t *testing.T) {
	cl100k, err := filepath.Abs("../../internal/tokenizer/testdata/cl100k_base.tiktoken")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, tokenizer string
		agree           bool
	}{{"tokenizers agree", "pseudo", true}, {"router cl100k, engines pseudo", cl100k, false}} {
		t.Run(tc.name, func(t *testing.T) {
			e0, ev0, rp0 := startKVSim(t, "e0")
			e1, ev1, rp1 := startKVSim(t, "e1")
			doc := strings.NewReplacer("{{ev0}}", ev0, "{{rp0}}", rp0, "{{ev1}}", ev1, "{{rp1}}", rp1, "{{tok}}", tc.tokenizer).Replace(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {scrapeInterval: 50ms, timeouts: {scrape: 3s}, prefixIndex: {driftWindow: 5m, driftMinTokens: 1000}}
endpoints:
  - {name: e0, url: "{{e0}}", model: llama, kvEvents: {endpoint: "{{ev0}}", replayEndpoint: "{{rp0}}"}}
  - {name: e1, url: "{{e1}}", model: llama, kvEvents: {endpoint: "{{ev1}}", replayEndpoint: "{{rp1}}"}}
models:
  - {name: llama, tokenizer: "{{tok}}"}
routes:
  - {model: llama, targets: [{pool: llama}]}
`)
			r := startRouter(t, doc, map[string]*process{"e0": e0, "e1": e1})
			eventually(t, "both endpoints precise", func() bool {
				m := debugRoute(t, r, chatJSON("llama", "s", "q")).PrefixIndex
				return m["e0"] == "precise" && m["e1"] == "precise"
			})
			c := client(r)
			for i := range 5 {
				for g := range 3 {
					ask(t, c, words(10+g, 2000), words(1000+10*i+g, 20), 4)
				}
			}
			// Wait until the router's scrapes have seen every hit the
			// engines counted.
			var fams map[string]*dto.MetricFamily
			eventually(t, "the router's view of the engines' hits", func() bool {
				var engine float64
				for _, s := range []*process{e0, e1} {
					engine += engineMetrics(t, s).PrefixCacheHits
				}
				fams = scrapeFamilies(t, adminURL(t, r)+"/metrics")
				var seen float64
				for _, v := range byEndpoint(fams["halyard_router_prefix_engine_hit_tokens_total"]) {
					seen += v
				}
				return engine > 0 && seen == engine
			})
			ratios := byEndpoint(fams["halyard_router_prefix_hit_drift_ratio"])
			predicted := byEndpoint(fams["halyard_router_prefix_predicted_hit_tokens_total"])
			reported := byEndpoint(fams["halyard_router_prefix_engine_hit_tokens_total"])
			t.Logf("drift ratio %v, predicted %v, reported %v", ratios, predicted, reported)
			if len(ratios) == 0 {
				t.Fatal("no drift ratio exported")
			}
			for ep, ratio := range ratios {
				switch {
				case tc.agree && ratio < 0.8:
					t.Errorf("%s: drift ratio %.3f with agreeing tokenizers, want near 1", ep, ratio)
				case !tc.agree && ratio > 0.2:
					t.Errorf("%s: drift ratio %.3f with disagreeing tokenizers, want near 0", ep, ratio)
				}
			}
			if !tc.agree {
				for ep, p := range predicted {
					if p > 0.1*reported[ep] {
						t.Errorf("%s: %v predicted hit tokens against %v reported: the precise index should predict almost nothing", ep, p, reported[ep])
					}
				}
			}
		})
	}
}
