package datastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/enginemetrics"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

func spec(name, pool, addr string) EndpointSpec {
	return EndpointSpec{Pool: pool, Metadata: framework.EndpointMetadata{Name: name, Address: addr, Model: pool, Role: framework.RoleBoth}}
}

func names(es []*Endpoint) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Metadata().Name)
	}
	return out
}

func TestStoreSyncKeepsStateOfUnchangedEndpoints(t *testing.T) {
	var s Store
	added, removed := s.Sync([]EndpointSpec{spec("b", "p", "http://b"), spec("a", "p", "http://a"), spec("c", "q", "http://c")})
	if len(added) != 3 || len(removed) != 0 {
		t.Fatalf("added %d removed %d", len(added), len(removed))
	}
	if diff := cmp.Diff([]string{"a", "b"}, names(s.Pool("p"))); diff != "" {
		t.Errorf("pool p (-want +got):\n%s", diff)
	}
	a := s.Get("a")
	a.Begin(10)
	added, removed = s.Sync([]EndpointSpec{spec("a", "p", "http://a"), spec("c", "q", "http://c2")})
	if diff := cmp.Diff([]string{"c"}, names(added)); diff != "" {
		t.Errorf("added (-want +got):\n%s", diff)
	}
	if len(removed) != 2 {
		t.Errorf("removed %v, want b and the old c", names(removed))
	}
	if s.Get("a") != a {
		t.Fatal("unchanged endpoint a was replaced")
	}
	if r, tok := s.Get("a").InFlight(); r != 1 || tok != 10 {
		t.Errorf("in-flight = %d,%d after sync, want 1,10", r, tok)
	}
	if diff := cmp.Diff([]string{"q"}, s.Pools()[1:]); diff != "" {
		t.Errorf("pools (-want +got):\n%s", diff)
	}
}

func TestEndpointHealthTransitions(t *testing.T) {
	p := HealthPolicy{FailureThreshold: 3, SuccessThreshold: 2}
	e := NewEndpoint(spec("a", "p", "http://a"))
	boom := errors.New("boom")
	steps := []struct {
		ok          bool
		wantHealthy bool
		wantChange  bool
	}{
		{true, true, true},    // first success: healthy at once
		{false, true, false},  // 1 failure
		{false, true, false},  // 2
		{true, true, false},   // success resets the count
		{false, true, false},  // 1
		{false, true, false},  // 2
		{false, false, true},  // 3: out
		{false, false, false}, // stays out
		{true, false, false},  // 1 success of 2
		{false, false, false}, // reset
		{true, false, false},  // 1
		{true, true, true},    // 2: back
	}
	for i, s := range steps {
		var changed bool
		if s.ok {
			changed = e.ObserveSuccess(p)
		} else {
			changed = e.ObserveFailure(p, boom)
		}
		if e.Healthy() != s.wantHealthy || changed != s.wantChange {
			t.Fatalf("step %d: healthy=%v changed=%v, want %v %v", i, e.Healthy(), changed, s.wantHealthy, s.wantChange)
		}
	}
}

// TestCollectorScrapesRealEngines runs the collector against HTTP engines
// that serve vLLM metrics, one of which fails, then recovers.
func TestCollectorScrapesRealEngines(t *testing.T) {
	var failing atomic.Bool
	engine := func(waiting int, fail *atomic.Bool) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if fail != nil && fail.Load() {
				http.Error(w, "down", http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "vllm:num_requests_waiting %d\nvllm:kv_cache_usage_perc 0.5\n", waiting)
		}))
	}
	good := engine(4, nil)
	defer good.Close()
	flaky := engine(9, &failing)
	defer flaky.Close()

	var s Store
	s.Sync([]EndpointSpec{spec("good", "p", good.URL), spec("flaky", "p", flaky.URL)})
	var (
		mu      sync.Mutex
		changes []string
	)
	c := &Collector{
		Store: &s, Scraper: &enginemetrics.Scraper{}, Health: HealthPolicy{FailureThreshold: 2, SuccessThreshold: 2},
		Log: slog.New(slog.DiscardHandler),
		OnHealthChange: func(e *Endpoint, h bool) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, fmt.Sprintf("%s=%v", e.Metadata().Name, h))
		},
	}
	ctx := context.Background()
	c.ScrapeOnce(ctx)
	if !s.Get("good").Healthy() || !s.Get("flaky").Healthy() {
		t.Fatal("endpoints not healthy after a successful scrape")
	}
	if got := s.Get("flaky").Metrics().WaitingRequests; got != 9 {
		t.Errorf("flaky waiting = %d, want 9", got)
	}
	if s.Get("good").Metrics().UpdateTime.IsZero() {
		t.Error("snapshot has no update time")
	}
	failing.Store(true)
	c.ScrapeOnce(ctx)
	c.ScrapeOnce(ctx)
	if s.Get("flaky").Healthy() {
		t.Fatal("flaky still healthy after two failed scrapes")
	}
	if got := s.Get("flaky").LastError(); got == "" {
		t.Error("no last error recorded")
	}
	failing.Store(false)
	c.ScrapeOnce(ctx)
	if s.Get("flaky").Healthy() {
		t.Fatal("flaky healthy after one success; want two")
	}
	c.ScrapeOnce(ctx)
	if !s.Get("flaky").Healthy() {
		t.Fatal("flaky not back after two successes")
	}
	// The first two changes race with each other; the rest are ordered.
	want := []string{"flaky=false", "flaky=true"}
	if len(changes) != 4 || !cmp.Equal(want, changes[2:]) {
		t.Errorf("health changes %v, want two endpoints coming up, then %v", changes, want)
	}
}

// BenchmarkScrape measures one scrape of a vLLM-like page over HTTP.
func BenchmarkScrape(b *testing.B) {
	page := []byte("vllm:num_requests_running 3\nvllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.5\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(page) }))
	defer srv.Close()
	var s Store
	s.Sync([]EndpointSpec{spec("a", "p", srv.URL)})
	c := &Collector{Store: &s, Scraper: &enginemetrics.Scraper{}, Health: HealthPolicy{FailureThreshold: 1, SuccessThreshold: 1}, Log: slog.New(slog.DiscardHandler)}
	b.ReportAllocs()
	for b.Loop() {
		c.ScrapeOnce(context.Background())
	}
}

// Draining changes on a known endpoint keep its state: the requests in
// flight on it are what a drain waits for.
func TestSyncDrainingKeepsTheEndpoint(t *testing.T) {
	var s Store
	spec := EndpointSpec{Pool: "p", Metadata: framework.EndpointMetadata{Name: "e", Address: "http://127.0.0.1:1"}}
	s.Sync([]EndpointSpec{spec})
	e := s.Get("e")
	e.Begin(10)
	spec.Draining = true
	added, removed := s.Sync([]EndpointSpec{spec})
	if len(added) != 0 || len(removed) != 0 || s.Get("e") != e {
		t.Fatalf("draining replaced the endpoint (added %d, removed %d)", len(added), len(removed))
	}
	if n, _ := e.InFlight(); n != 1 || !e.Draining() {
		t.Fatalf("in flight %d draining %v, want 1 and true", n, e.Draining())
	}
	spec.Draining = false
	s.Sync([]EndpointSpec{spec})
	if e.Draining() {
		t.Error("still draining after the drain was cancelled")
	}
}
