package router

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// twoPools has engines in pools a and b, and one route to a.
const twoPools = `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {health: {failureThreshold: 1, successThreshold: 1}}
endpoints:
  - {name: a0, url: "{{a0}}", model: llama, pool: a}
  - {name: b0, url: "{{b0}}", model: llama, pool: b}
routes:
  - {model: llama, targets: [{pool: a}]}
`

func twoPoolEngines() map[string]string { return map[string]string{"a0": "llama", "b0": "llama"} }

func route(model string, pools ...string) config.RouteSpec {
	rs := config.RouteSpec{Model: model}
	for _, p := range pools {
		rs.Targets = append(rs.Targets, config.TargetSpec{Pool: p})
	}
	return rs
}

func (h *harness) models() []string {
	h.t.Helper()
	resp, b := h.get("/v1/models")
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("/v1/models: %d %s", resp.StatusCode, b)
	}
	var list modelList
	if err := json.Unmarshal(b, &list); err != nil {
		h.t.Fatal(err)
	}
	out := []string{}
	for _, m := range list.Data {
		out = append(out, m.ID)
	}
	return out
}

func chatFor(model string) string {
	return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`
}

func TestSetRoutesFollowsModelsAndTargets(t *testing.T) {
	h := newHarness(t, twoPools, twoPoolEngines())
	if diff := cmp.Diff([]string{"llama"}, h.models()); diff != "" {
		t.Fatalf("models before (-want +got):\n%s", diff)
	}
	if err := h.r.SetRoutes([]config.RouteSpec{route("llama", "b"), route("mistral", "a")}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"llama", "mistral"}, h.models()); diff != "" {
		t.Errorf("models after (-want +got):\n%s", diff)
	}
	for range 4 {
		if resp, b := h.post("/v1/chat/completions", chatFor("llama")); resp.StatusCode != http.StatusOK {
			t.Fatalf("llama: %d %s", resp.StatusCode, b)
		}
	}
	if got := h.engines["b0"].requests.Load(); got != 4 {
		t.Errorf("pool b served %d of 4 llama requests after the switch", got)
	}
	if resp, b := h.post("/v1/chat/completions", chatFor("mistral")); resp.StatusCode != http.StatusOK {
		t.Fatalf("mistral: %d %s", resp.StatusCode, b)
	}
	if got := h.engines["a0"].requests.Load(); got != 1 {
		t.Errorf("pool a served %d requests, want the one mistral request", got)
	}
	if got := testutil.ToFloat64(h.r.rm.routes); got != 2 {
		t.Errorf("halyard_router_routes = %v, want 2", got)
	}

	// Removing a model: 404 in OpenAI's shape, and /ready follows.
	if err := h.r.SetRoutes([]config.RouteSpec{route("mistral", "a")}); err != nil {
		t.Fatal(err)
	}
	resp, b := h.post("/v1/chat/completions", chatFor("llama"))
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("removed model: %d %s", resp.StatusCode, b)
	}
	if e := decodeError(t, b); e.Error.Code == nil || *e.Error.Code != "model_not_found" {
		t.Errorf("removed model error %+v", e.Error)
	}
	if ok, missing := h.r.Ready(); !ok || len(missing) != 0 {
		t.Errorf("Ready() = %v, %v with mistral on a healthy pool", ok, missing)
	}
	if err := h.r.SetRoutes([]config.RouteSpec{route("mistral", "nowhere")}); err != nil {
		t.Fatal(err)
	}
	if ok, missing := h.r.Ready(); ok || !cmp.Equal(missing, []string{"mistral"}) {
		t.Errorf("Ready() = %v, %v with mistral on an empty pool", ok, missing)
	}
	if got := testutil.ToFloat64(h.r.rm.updates.WithLabelValues(updateApplied)); got != 3 {
		t.Errorf("applied updates = %v, want 3", got)
	}
}

func TestSetRoutesRejectedKeepsTable(t *testing.T) {
	bad := func(f func(*config.RouteSpec)) []config.RouteSpec {
		rs := route("mistral", "a")
		f(&rs)
		return []config.RouteSpec{route("llama", "b"), rs}
	}
	zero := int32(0)
	for _, tt := range []struct {
		name   string
		routes []config.RouteSpec
		want   string
	}{
		{"unknown profile", bad(func(rs *config.RouteSpec) { rs.Profile = "fancy" }), `route "mistral" uses profile "fancy", which is neither in router.profiles nor a preset`},
		{"no targets", bad(func(rs *config.RouteSpec) { rs.Targets = nil }), "routes[1].targets: no targets"},
		{"zero weights", bad(func(rs *config.RouteSpec) { rs.Targets[0].Weight = &zero }), "routes[1].targets: weights are all zero"},
		{"duplicate model", []config.RouteSpec{route("llama", "a"), route("llama", "b")}, `routes[1].model: duplicate "llama"`},
		{"bad expression", bad(func(rs *config.RouteSpec) {
			rs.Rules = []config.RouteRule{{Headers: []config.HeaderMatch{{Name: "x", Value: "(", Type: config.MatchRegularExpression}}, Targets: rs.Targets}}
		}), "routes[1].rules[0].headers[0].value"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, twoPools, twoPoolEngines())
			err := h.r.SetRoutes(tt.routes)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SetRoutes error %v, want one containing %q", err, tt.want)
			}
			if diff := cmp.Diff([]string{"llama"}, h.models()); diff != "" {
				t.Errorf("models after a rejected update (-want +got):\n%s", diff)
			}
			if resp, b := h.post("/v1/chat/completions", chatFor("llama")); resp.StatusCode != http.StatusOK || h.engines["a0"].requests.Load() != 1 {
				t.Errorf("llama after a rejected update: %d %s, a0 served %d", resp.StatusCode, b, h.engines["a0"].requests.Load())
			}
			if got := testutil.ToFloat64(h.r.rm.updates.WithLabelValues(updateRejected)); got != 1 {
				t.Errorf("rejected updates = %v, want 1", got)
			}
		})
	}
}

// A preset profile that no route named at start is built when a route
// names it.
func TestSetRoutesBuildsPresetProfiles(t *testing.T) {
	cfg, err := config.Parse([]byte(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints: [{name: e0, url: "http://127.0.0.1:1", model: llama}]
routes: [{model: llama, targets: [{pool: llama}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	presets := map[string]config.ProfileSpec{"least": testDefaultProfile}
	r, err := New(Options{Config: cfg, Registry: testRegistry(t), DefaultProfile: &testDefaultProfile, PresetProfiles: presets, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"default"}, r.ProfileNames()); diff != "" {
		t.Fatalf("profiles at start (-want +got):\n%s", diff)
	}
	withProfile := route("fast", "llama")
	withProfile.Profile = "least"
	if err := r.SetRoutes([]config.RouteSpec{route("llama", "llama"), withProfile}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"default", "least"}, r.ProfileNames()); diff != "" {
		t.Errorf("profiles after the update (-want +got):\n%s", diff)
	}
	rt, _ := r.routes().table.Lookup("fast")
	if p := r.routes().profiles[rt.Profile]; p == nil || p.Name() != "least" {
		t.Errorf("route fast has profile %v", p)
	}
}

// A request in flight when its model's route goes away finishes; requests
// racing with swaps each see one whole table (under -race).
func TestSetRoutesKeepsRequestsInFlight(t *testing.T) {
	h := newHarness(t, twoPools, twoPoolEngines())
	h.engines["a0"].gate = make(chan struct{})
	resp, err := http.Post(h.srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	// The first chunk arrived: the request is routed and in flight.
	buf := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	if err := h.r.SetRoutes([]config.RouteSpec{route("other", "b")}); err != nil {
		t.Fatal(err)
	}
	if r2, b := h.post("/v1/chat/completions", chatFor("llama")); r2.StatusCode != http.StatusNotFound {
		t.Fatalf("after removal: %d %s", r2.StatusCode, b)
	}
	close(h.engines["a0"].gate)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the in-flight stream broke: %v", err)
	}
	if !strings.Contains(string(rest), "data: [DONE]") {
		t.Errorf("the in-flight stream did not finish: %q", rest)
	}

	// Swaps under concurrent requests: every request is answered by the
	// pool of one table or the other, never an error.
	tables := [][]config.RouteSpec{{route("llama", "a")}, {route("llama", "b")}}
	// llama is routed again before any worker starts: the table above
	// has only "other".
	if err := h.r.SetRoutes(tables[0]); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := h.r.SetRoutes(tables[i%2]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	errs := make(chan string, 64)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				resp, err := http.Post(h.srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(chatFor("llama")))
				if err != nil {
					errs <- err.Error()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- "worker " + string(rune('0'+w)) + ": status " + resp.Status
					return
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		// Wait for the workers (everything but the swapper) by polling
		// the engines' counters with a deadline, then stop swapping.
		deadline := time.Now().Add(time.Minute)
		for h.engines["a0"].requests.Load()+h.engines["b0"].requests.Load() < 1+100 && time.Now().Before(deadline) {
			select {
			case e := <-errs:
				errs <- e
				close(stop)
				close(done)
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
		close(stop)
		close(done)
	}()
	<-done
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := h.engines["a0"].requests.Load() + h.engines["b0"].requests.Load(); n != 101 {
		t.Errorf("engines served %d requests, want 101", n)
	}
}

// A route source's report merges with the config's routes: the config
// wins a shared model, a route with an unknown profile is left out, the
// others apply, and the routes' endpoints join the endpoint set.
func TestRouteSourceMerge(t *testing.T) {
	h := newHarness(t, twoPools, twoPoolEngines())
	extra := newFakeEngineTB(t, "x0", "qwen")
	// What the endpoint source reported (the harness synced the store
	// directly).
	h.r.syncEndpoints(fromSource, []datastore.EndpointSpec{
		{Pool: "a", Metadata: framework.EndpointMetadata{Name: "a0", Address: h.engines["a0"].srv.URL, Model: "llama", Role: framework.RoleBoth}},
		{Pool: "b", Metadata: framework.EndpointMetadata{Name: "b0", Address: h.engines["b0"].srv.URL, Model: "llama", Role: framework.RoleBoth}},
	})
	unknown := route("broken", "a")
	unknown.Profile = "nope"
	h.r.applyRouteSet(discovery.RouteSet{
		Routes: []discovery.Route{
			{Spec: route("llama", "b"), Origin: "ModelRoute ns/llama"},
			{Spec: unknown, Origin: "ModelRoute ns/broken"},
			{Spec: route("qwen", "ns/x"), Origin: "ModelRoute ns/qwen"},
		},
		Endpoints: []datastore.EndpointSpec{{Pool: "ns/x", Metadata: framework.EndpointMetadata{Name: "ns/qwen/x0", Address: extra.srv.URL, Model: "qwen"}}},
		Skipped:   []discovery.SkippedRoute{{Origin: "ModelRoute ns/late", Model: "qwen", Reason: discovery.SkipConflict}},
	})
	if diff := cmp.Diff([]string{"llama", "qwen"}, h.models()); diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
	for _, reason := range []string{discovery.SkipConflict, discovery.SkipInvalid} {
		want := map[string]float64{discovery.SkipConflict: 2, discovery.SkipInvalid: 1}[reason]
		if got := testutil.ToFloat64(h.r.rm.skipped.WithLabelValues(reason)); got != want {
			t.Errorf("skipped{reason=%s} = %v, want %v", reason, got, want)
		}
	}
	h.r.collector.ScrapeOnce(context.Background())
	if resp, b := h.post("/v1/chat/completions", chatFor("qwen")); resp.StatusCode != http.StatusOK || extra.requests.Load() != 1 {
		t.Fatalf("qwen: %d %s; the route's endpoint served %d", resp.StatusCode, b, extra.requests.Load())
	}
	if resp, b := h.post("/v1/chat/completions", chatFor("llama")); resp.StatusCode != http.StatusOK || h.engines["a0"].requests.Load() != 1 {
		t.Fatalf("llama (the config's route to a): %d %s; a0 served %d", resp.StatusCode, b, h.engines["a0"].requests.Load())
	}
	// The route goes: its model and its endpoint with it.
	h.r.applyRouteSet(discovery.RouteSet{})
	if diff := cmp.Diff([]string{"llama"}, h.models()); diff != "" {
		t.Errorf("models after the source emptied (-want +got):\n%s", diff)
	}
	if eps := h.r.store.Pool("ns/x"); len(eps) != 0 {
		t.Errorf("pool ns/x still has %d endpoints", len(eps))
	}
}
