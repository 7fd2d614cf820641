package enginestats

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

const page = `# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="llama"} 1000.0
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="llama"} 250.0
vllm:request_success_total{finished_reason="length",model_name="llama"} 7
vllm:request_success_total{finished_reason="stop",model_name="a \"quoted} name"} 3 1700000000000
vllm:prompt_tokens_total 1.5e3
vllm:num_requests_running{model_name="llama"} 4
garbage line here
vllm:prompt_tokens_total{broken="x} 99
`

func TestParse(t *testing.T) {
	got, err := Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	want := Counters{PrefixCacheQueries: 1000, PrefixCacheHits: 250, RequestSuccess: 10, PromptTokens: 1500}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse mismatch (-want +got):\n%s", diff)
	}
}

func TestDelta(t *testing.T) {
	urls := []string{"a", "b", "c"}
	before := []Counters{
		{PrefixCacheQueries: 100, PrefixCacheHits: 50, RequestSuccess: 10, PromptTokens: 100},
		{PrefixCacheQueries: 0, PrefixCacheHits: 0, RequestSuccess: 0, PromptTokens: 0},
		{RequestSuccess: 50}, // restarted during the run: counts from zero
	}
	after := []Counters{
		{PrefixCacheQueries: 1100, PrefixCacheHits: 650, RequestSuccess: 40, PromptTokens: 1100},
		{PrefixCacheQueries: 1000, PrefixCacheHits: 200, RequestSuccess: 10, PromptTokens: 1000},
		{RequestSuccess: 10},
	}
	got := Delta(urls, before, after)
	want := Result{
		Engines: []Engine{
			{URL: "a", Requests: 30, PromptTokens: 1000, PrefixCacheQueries: 1000, PrefixCacheHits: 600},
			{URL: "b", Requests: 10, PromptTokens: 1000, PrefixCacheQueries: 1000, PrefixCacheHits: 200},
			{URL: "c", Requests: 10},
		},
		PrefixCacheHitRate:   0.4,
		RequestImbalance:     30 / (50.0 / 3),
		PromptTokenImbalance: 1000 / (2000.0 / 3),
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("Delta mismatch (-want +got):\n%s", diff)
	}
}

// TestDeltaUnknownEngines: an engine whose scrape failed before or after
// the run is unknown, not an engine that served nothing, and the imbalance
// is computed over the engines read.
func TestDeltaUnknownEngines(t *testing.T) {
	urls := []string{"a", "b", "c", "d"}
	before := []Counters{{RequestSuccess: 0}, {RequestSuccess: 0}, nil, {RequestSuccess: 5}}
	after := []Counters{{RequestSuccess: 10, PrefixCacheQueries: 10, PrefixCacheHits: 5}, {RequestSuccess: 10}, {RequestSuccess: 50}, nil}
	got := Delta(urls, before, after)
	want := Result{
		Engines: []Engine{
			{URL: "a", Requests: 10, PrefixCacheQueries: 10, PrefixCacheHits: 5},
			{URL: "b", Requests: 10},
			{URL: "c", Unknown: true},
			{URL: "d", Unknown: true},
		},
		PrefixCacheHitRate: 0.5,
		RequestImbalance:   1,
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("Delta mismatch (-want +got):\n%s", diff)
	}
	if all := Delta(urls, nil, nil); all.RequestImbalance != 0 || !all.Engines[0].Unknown {
		t.Errorf("no scrape at all: %+v, want every engine unknown and no imbalance", all)
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(page))
	}))
	defer srv.Close()
	got, err := ScrapeAll(context.Background(), srv.Client(), []string{srv.URL + "/metrics", srv.URL + "/nope"})
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("error = %v, want the 404 of the second url", err)
	}
	if got[0][RequestSuccess] != 10 || got[1] != nil {
		t.Errorf("got %v", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(page)
	f.Add("x{a=\"\\\"}\"} 1\n")
	for _, metric := range wanted {
		for _, l := range fuzzseed.PrometheusText(metric) {
			f.Add(string(l))
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(strings.NewReader(s))
		if err != nil {
			return
		}
		for k := range c {
			found := false
			for _, w := range wanted {
				found = found || k == w
			}
			if !found {
				t.Fatalf("unexpected counter %q", k)
			}
		}
	})
}
