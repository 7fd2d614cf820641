package bench

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/bench/arrival"
	"github.com/halyard-dev/halyard/internal/bench/benchtest"
	"github.com/halyard-dev/halyard/internal/bench/client"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/bench/workload"
)

func TestMain(m *testing.M) {
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

func sharedPrefix(groups, users, turns int) func(int) (workload.Workload, error) {
	return func(step int) (workload.Workload, error) {
		return workload.NewSharedPrefix(workload.SharedPrefix{
			Groups: groups, UsersPerGroup: users, SystemTokens: 64, QuestionTokens: 16,
			OutputTokens: 4, Turns: turns, Seed: uint64(step),
		})
	}
}

func TestRunPoissonCountsAndEngineCounters(t *testing.T) {
	eng := (&benchtest.Engine{Name: "e0", TokenDelay: time.Millisecond}).Start(t)
	runs, err := Run(context.Background(), Options{
		Client:        &client.Client{BaseURL: eng.URL(), Model: "m", IgnoreEOS: true},
		NewWorkload:   sharedPrefix(3, 4, 1),
		Arrivals:      Rates([]float64{200, math.Inf(1)}, 1),
		SLO:           stats.SLO{TTFT: time.Minute},
		EngineMetrics: []string{eng.URL() + "/metrics"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 {
		t.Fatalf("%d runs, want 2", len(runs))
	}
	for i, r := range runs {
		if r.Completed != 12 || r.Failed != 0 {
			t.Errorf("run %d: completed %d failed %d, want 12 and 0", i, r.Completed, r.Failed)
		}
		if r.TotalInputTokens != 12*80 || r.TotalOutputTokens != 12*4 {
			t.Errorf("run %d: tokens in %d out %d, want %d and %d", i, r.TotalInputTokens, r.TotalOutputTokens, 12*80, 12*4)
		}
		if r.RequestGoodput != r.RequestThroughput {
			t.Errorf("run %d: goodput %v != throughput %v under a one-minute SLO", i, r.RequestGoodput, r.RequestThroughput)
		}
		em := r.EngineMetrics
		if em == nil || len(em.Engines) != 1 || em.Engines[0].Requests != 12 || em.Engines[0].PromptTokens != 12*80 {
			t.Fatalf("run %d: engine metrics %+v, want 12 requests of 80 tokens", i, em)
		}
		// 3 groups × 4 users share a 64-token system prompt: the first
		// request of a group misses, the other three hit 64 tokens (4
		// blocks of 16) of their 80.
		if r.PrefixCacheHitRate == nil || math.Abs(*r.PrefixCacheHitRate-9*64.0/(12*80)) > 1e-9 {
			t.Errorf("run %d: hit rate %v, want %v", i, r.PrefixCacheHitRate, 9*64.0/(12*80))
		}
		if r.TotalCachedTokens != 9*64 {
			t.Errorf("run %d: cached tokens from usage %d, want %d", i, r.TotalCachedTokens, 9*64)
		}
		if r.RequestsPerEndpoint["e0"] != 12 {
			t.Errorf("run %d: per endpoint %v", i, r.RequestsPerEndpoint)
		}
	}
	if runs[0].RequestRate == nil || *runs[0].RequestRate != 200 || runs[1].RequestRate != nil {
		t.Errorf("request rates %v, %v; want 200 and none (all at once)", runs[0].RequestRate, runs[1].RequestRate)
	}
}

func TestRunConcurrencyBound(t *testing.T) {
	eng := (&benchtest.Engine{Name: "e0", TokenDelay: 2 * time.Millisecond}).Start(t)
	runs, err := Run(context.Background(), Options{
		Client:      &client.Client{BaseURL: eng.URL(), Model: "m", API: client.Completions},
		NewWorkload: sharedPrefix(10, 2, 1),
		Arrivals:    []arrival.Spec{{Kind: arrival.Concurrency, Concurrency: 3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := eng.MaxInFlight(); got > 3 || got < 1 {
		t.Errorf("engine saw %d requests at once, want 1..3", got)
	}
	r := runs[0]
	if r.Completed != 20 || r.MaxConcurrency != 3 || r.MaxConcurrentRequests > 3 {
		t.Errorf("completed %d, max concurrency %d, measured %d", r.Completed, r.MaxConcurrency, r.MaxConcurrentRequests)
	}
}

func TestRunMultiTurnWaitsForPreviousTurn(t *testing.T) {
	eng := (&benchtest.Engine{Name: "e0", TokenDelay: time.Millisecond}).Start(t)
	runs, err := Run(context.Background(), Options{
		Client:      &client.Client{BaseURL: eng.URL(), Model: "m"},
		NewWorkload: sharedPrefix(2, 2, 3),
		Arrivals:    Rates([]float64{math.Inf(1)}, 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	if runs[0].Completed != 12 {
		t.Fatalf("completed %d, want 12", runs[0].Completed)
	}
	finished := map[string]time.Time{}
	for _, s := range eng.Log() {
		finished[s.ID] = s.Finished
	}
	for _, s := range eng.Log() {
		i := strings.LastIndex(s.ID, "-t")
		turn, err := strconv.Atoi(s.ID[i+2:])
		if err != nil || turn == 0 {
			continue
		}
		prevID := s.ID[:i] + "-t" + strconv.Itoa(turn-1)
		pf, ok := finished[prevID]
		if !ok || s.Received.Before(pf) {
			t.Errorf("%s arrived at %v, before %s finished at %v", s.ID, s.Received, prevID, pf)
		}
	}
}

func TestRunCountsFailures(t *testing.T) {
	eng := (&benchtest.Engine{Name: "e0", Fail: func(seq int) int {
		if seq%4 == 1 {
			return http.StatusServiceUnavailable
		}
		return 0
	}}).Start(t)
	runs, err := Run(context.Background(), Options{
		Client:      &client.Client{BaseURL: eng.URL(), Model: "m"},
		NewWorkload: sharedPrefix(8, 1, 1),
		Arrivals:    []arrival.Spec{{Kind: arrival.Concurrency, Concurrency: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := runs[0]
	if r.Completed != 6 || r.Failed != 2 {
		t.Errorf("completed %d failed %d, want 6 and 2", r.Completed, r.Failed)
	}
	if r.Errors["HTTP 503: injected failure 1"] != 1 || r.Errors["HTTP 503: injected failure 5"] != 1 {
		t.Errorf("errors %v", r.Errors)
	}
}

func TestRunDurationStopsSending(t *testing.T) {
	eng := (&benchtest.Engine{Name: "e0"}).Start(t)
	runs, err := Run(context.Background(), Options{
		Client:      &client.Client{BaseURL: eng.URL(), Model: "m"},
		NewWorkload: sharedPrefix(50, 1, 1),
		// 50 requests at 10/s take about 5 s; a 300 ms limit sends a few.
		Arrivals: Rates([]float64{10}, 3),
		Duration: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := runs[0].Completed + runs[0].Failed; n == 0 || n >= 50 {
		t.Errorf("sent %d requests within the duration, want some but not all 50", n)
	}
}

func TestRunMaxRequestsAndValidation(t *testing.T) {
	eng := (&benchtest.Engine{Name: "e0"}).Start(t)
	o := Options{
		Client:      &client.Client{BaseURL: eng.URL(), Model: "m"},
		NewWorkload: sharedPrefix(5, 2, 1),
		Arrivals:    Rates([]float64{0}, 0),
		MaxRequests: 3,
	}
	runs, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if runs[0].Completed != 3 {
		t.Errorf("completed %d, want 3", runs[0].Completed)
	}
	bad := []struct {
		name  string
		mod   func(*Options)
		field string
	}{
		{"no model", func(o *Options) { o.Client = &client.Client{BaseURL: "http://x"} }, "model"},
		{"no target", func(o *Options) { o.Client = &client.Client{Model: "m"} }, "target"},
		{"no arrivals", func(o *Options) { o.Arrivals = nil }, "arrivals"},
		{"bad arrival", func(o *Options) { o.Arrivals = []arrival.Spec{{Kind: arrival.Poisson}} }, "arrivals[0]: rate"},
		{"negative max", func(o *Options) { o.MaxRequests = -1 }, "max requests"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			o2 := o
			tt.mod(&o2)
			_, err := Run(context.Background(), o2)
			if err == nil || !strings.HasPrefix(err.Error(), tt.field) {
				t.Errorf("error = %v, want one starting %q", err, tt.field)
			}
		})
	}
}

// TestRunSplitsRequestsAmongTenants: each request goes with its tenant's
// client, and the report has each tenant's part; Only sends one tenant's.
func TestRunSplitsRequestsAmongTenants(t *testing.T) {
	eng := (&benchtest.Engine{Name: "e0", TokenDelay: time.Millisecond}).Start(t)
	cl := func(key string) *client.Client {
		return &client.Client{BaseURL: eng.URL(), Model: "m", IgnoreEOS: true, APIKey: key}
	}
	opts := Options{
		Client:      cl(""),
		NewWorkload: sharedPrefix(5, 4, 1),
		Arrivals:    Rates([]float64{math.Inf(1)}, 1),
		Tenants:     []Tenant{{Name: "heavy", Share: 3, Client: cl("h")}, {Name: "light", Share: 1, Client: cl("l")}},
		Seed:        3,
	}
	runs, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := runs[0].Tenants
	if len(ts) != 2 || ts[0].Sent+ts[1].Sent != 20 || ts[0].Completed != ts[0].Sent || ts[0].Sent <= ts[1].Sent {
		t.Fatalf("tenants %+v; want 20 requests split about 3:1, all completed", ts)
	}
	opts.Only = "light"
	alone, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if a := alone[0]; a.Admission != "alone:light" || len(a.Tenants) != 1 || a.Tenants[0].Sent != ts[1].Sent || a.Completed != ts[1].Sent {
		t.Errorf("alone run: admission %q, tenants %+v; want light's %d requests only", a.Admission, a.Tenants, ts[1].Sent)
	}
}

func TestCommandTenantFlags(t *testing.T) {
	for _, tc := range []struct {
		tenants, alone []string
		err            string
	}{
		{[]string{"a:1:key", "b:2"}, []string{"b"}, ""},
		{[]string{"a"}, nil, "want NAME:SHARE"},
		{[]string{"a:0"}, nil, "share must be a positive number"},
		{[]string{"a:1", "a:2"}, nil, "given twice"},
		{[]string{"a:1"}, []string{"c"}, `"c" is not a --tenant`},
	} {
		c := &Command{Tenants: tc.tenants, Alone: tc.alone}
		_, err := c.tenants()
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v %v: error %v, want %q", tc.tenants, tc.alone, err, tc.err)
		}
		if err != nil && strings.Contains(err.Error(), "key") && tc.tenants[0] == "a:1:key" {
			t.Errorf("the key appears in %v", err)
		}
	}
}

// --slo-headers makes every live request declare the SLO's objectives in
// the x-halyard-slo-* headers the router hands to the scheduler; without it
// none is sent.
func TestCommandSLOHeaders(t *testing.T) {
	for _, declare := range []bool{false, true} {
		eng := (&benchtest.Engine{Name: "e0"}).Start(t)
		c := &Command{
			Targets: []string{eng.URL()}, Model: "m", IgnoreEOS: true,
			Workload:  workload.Spec{Kind: "shared-prefix", Groups: 2, UsersPerGroup: 2, SystemTokens: 32, QuestionTokens: 8, OutputTokens: 2},
			TimeScale: 1, SLO: "ttft=1s,tpot=15ms,e2el=10s", SLOHeaders: declare,
			Log: slog.New(slog.DiscardHandler),
		}
		if _, err := c.Run(context.Background(), io.Discard); err != nil {
			t.Fatal(err)
		}
		served := eng.Log()
		if len(served) != 4 {
			t.Fatalf("slo headers %v: %d requests served, want 4", declare, len(served))
		}
		for _, s := range served {
			ttft, tpot := s.Headers.Get("X-Halyard-Slo-Ttft-Ms"), s.Headers.Get("X-Halyard-Slo-Tpot-Ms")
			want := [2]string{}
			if declare {
				want = [2]string{"1000", "15"}
			}
			if [2]string{ttft, tpot} != want {
				t.Errorf("slo headers %v: request %s sent ttft %q tpot %q, want %q", declare, s.ID, ttft, tpot, want)
			}
		}
	}
}
