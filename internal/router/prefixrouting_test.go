package router

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/kvevents"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// preciseRig is a router with the built-in plugins in front of two fake
// engines, e0 publishing KV events (a kvevents.Publisher the test drives),
// e1 not.
type preciseRig struct {
	t   *testing.T
	r   *Router
	srv *httptest.Server
	pub *kvevents.Publisher
}

func newPreciseRig(t *testing.T, seed int) *preciseRig {
	t.Helper()
	pub, err := kvevents.NewPublisher(kvevents.PublisherConfig{Endpoint: "tcp://127.0.0.1:0", ReplayEndpoint: "tcp://127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(time.Second) })
	e0, e1 := newFakeEngineTB(t, "e0", "llama"), newFakeEngineTB(t, "e1", "llama")
	doc := `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {profiles: {p: {scorers: [{type: prefix-cache}], picker: {type: max-score, params: {seed: ` + strconv.Itoa(seed) + `}}}}}
endpoints:
  - {name: e0, url: "` + e0.srv.URL + `", model: llama, kvEvents: {endpoint: "` + pub.Endpoint() + `", replayEndpoint: "` + pub.ReplayEndpoint() + `"}}
  - {name: e1, url: "` + e1.srv.URL + `", model: llama}
models:
  - {name: llama, tokenizer: pseudo}
routes:
  - {model: llama, profile: p, targets: [{pool: llama}]}
`
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	decisionHeadersOn(cfg)
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{Config: cfg, Registry: reg, PresetProfiles: scheduling.PresetProfileSpecs(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.prefix.start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.prefix.stop)
	specs := discovery.Specs(cfg.Endpoints)
	r.store.Sync(specs)
	r.prefix.sync(specs, nil)
	r.collector.ScrapeOnce(context.Background())
	srv := httptest.NewServer(publicAndAdmin(r))
	t.Cleanup(srv.Close)
	waitUntil(t, "e0 precise", func() bool {
		r.prefix.tracker.Evaluate(time.Now())
		return r.prefix.tracker.IsPrecise("e0")
	})
	return &preciseRig{t: t, r: r, srv: srv, pub: pub}
}

func (p *preciseRig) debugRoute(body string) RouteExplanation {
	p.t.Helper()
	h := &harness{t: p.t, srv: p.srv}
	_, b := h.post("/debug/route", body)
	var out RouteExplanation
	if err := json.Unmarshal(b, &out); err != nil {
		p.t.Fatalf("%v: %s", err, b)
	}
	return out
}

func scoreOf(ex RouteExplanation, endpoint string) float64 {
	for _, e := range ex.Explanation.Endpoints {
		if e.Name == endpoint {
			return e.Scores["prefix-cache"]
		}
	}
	return -1
}

// TestPreciseRoutingInTheRouter: the router tokenises a chat request with
// the model's tokenizer and template, scores e0 by the blocks its engine
// reports (not by what was routed there), says which index each endpoint
// is scored by, and exports the modes.
func TestPreciseRoutingInTheRouter(t *testing.T) {
	p := newPreciseRig(t, 1)
	system := strings.Repeat("Keep the log in ink and note every change of sail. ", 40)
	body := `{"model":"llama","messages":[{"role":"system","content":` + jsonString(system) + `},{"role":"user","content":"hello"}]}`
	ids := tokenizer.Pseudo{}.Encode("<|system|>\n" + system + "\n<|user|>\nhello\n<|assistant|>\n")
	blocks := len(ids) / 16

	waitUntil(t, "e0 precise", func() bool {
		p.r.prefix.tracker.Evaluate(time.Now())
		return p.r.prefix.tracker.IsPrecise("e0")
	})
	ex := p.debugRoute(body)
	if ex.PromptTokens != len(ids) {
		t.Errorf("promptTokens %d, want the pseudo tokenizer's %d for the rendered chat", ex.PromptTokens, len(ids))
	}
	if want := map[string]string{"e0": "precise", "e1": "approximate (no-events)"}; !equalMaps(ex.PrefixIndex, want) {
		t.Errorf("prefixIndex %v, want %v", ex.PrefixIndex, want)
	}
	if notes := strings.Join(ex.Explanation.Notes, "; "); !strings.Contains(notes, "prefix index: e0 precise, e1 approximate (no-events)") {
		t.Errorf("notes %q", notes)
	}

	// The engine reports the system prompt's blocks (not the question's):
	// publish until the subscription has them.
	var hashes []uint64
	for i := range blocks - 1 {
		hashes = append(hashes, uint64(1000+i))
	}
	waitUntil(t, "e0's blocks", func() bool {
		p.pub.Publish(kvevents.NewBlockStored(hashes, nil, ids[:16*len(hashes)], 16))
		time.Sleep(5 * time.Millisecond)
		return p.r.prefix.tracker.Precise().EndpointBlocks("e0") == len(hashes)
	})
	ex = p.debugRoute(body)
	if got, want := scoreOf(ex, "e0"), float64(blocks-1)/float64(blocks); got < want-1e-9 || got > want+1e-9 {
		t.Errorf("e0 prefix score %v, want %d/%d", got, blocks-1, blocks)
	}
	if ex.Picked != "e0" {
		t.Errorf("picked %q, want e0", ex.Picked)
	}

	// The engine clears its cache: e0 no longer scores, though the router
	// sent it nothing new.
	p.pub.Publish(&kvevents.AllBlocksCleared{})
	waitUntil(t, "e0 cleared", func() bool { return p.r.prefix.tracker.Precise().EndpointBlocks("e0") == 0 })
	if got := scoreOf(p.debugRoute(body), "e0"); got != 0 {
		t.Errorf("e0 prefix score %v after the clear, want 0", got)
	}

	h := &harness{t: t, srv: p.srv}
	_, metrics := h.get("/metrics")
	for _, want := range []string{
		`halyard_router_prefix_index_mode{endpoint="e0",mode="precise"} 1`,
		`halyard_router_prefix_index_mode{endpoint="e1",mode="approximate"} 1`,
		`halyard_kvevents_events_total{endpoint="e0",type="AllBlocksCleared"} 1`,
		`halyard_router_prefix_index_precise_blocks{endpoint="e0"} 0`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestPreciseRoutingRecordsPredictions: each request sent records, for
// the drift comparison, the hit the confirmed knowledge predicts: the
// approximate index on e1; on e0, the blocks its engine reported, not the
// pending claim of the request just before (the router's own guess).
func TestPreciseRoutingRecordsPredictions(t *testing.T) {
	seen := map[string]bool{}
	for seed := 1; seed <= 8 && len(seen) < 2; seed++ {
		p := newPreciseRig(t, seed)
		body := `{"model":"llama","prompt":` + jsonString(strings.Repeat("abc ", 64)) + `,"max_tokens":1}`
		h := &harness{t: t, srv: p.srv}
		var picked []string
		for range 2 {
			resp, b := h.post("/v1/completions", body, HeaderExplain, "1")
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, b)
			}
			_, rest, _ := strings.Cut(resp.Header.Get(HeaderRoute), "picked=")
			ep, _, _ := strings.Cut(rest, ";")
			if ep != "e0" && ep != "e1" {
				t.Fatalf("route header %q", resp.Header.Get(HeaderRoute))
			}
			picked = append(picked, ep)
		}
		if picked[0] != picked[1] {
			t.Fatalf("seed %d: the repeat went to %s, the first to %s: affinity (approximate or pending) lost", seed, picked[1], picked[0])
		}
		seen[picked[0]] = true
		want := map[string]float64{"e0": 0, "e1": 64}[picked[0]]
		if got := p.r.prefix.drift.Status(picked[0]).PredictedTotal; got != want {
			t.Errorf("seed %d: predicted hit tokens on %s: %v, want %v", seed, picked[0], got, want)
		}
	}
	if len(seen) < 2 {
		t.Errorf("eight seeds picked only %v first: both cases untested", seen)
	}
}

func TestPreciseRoutingChecksTheBlockSize(t *testing.T) {
	pub, err := kvevents.NewPublisher(kvevents.PublisherConfig{Endpoint: "tcp://127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close(time.Second)
	cfg, err := config.Parse([]byte(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {profiles: {default: {scorers: [{type: prefix-cache, params: {blockSize: 32}}]}}}
endpoints:
  - {name: e0, url: "http://127.0.0.1:1", model: llama, kvEvents: {endpoint: "` + pub.Endpoint() + `"}}
models: [{name: llama, tokenizer: /no/such/file.json}]
routes: [{model: llama, targets: [{pool: llama}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	_, err = New(Options{Config: cfg, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "models[0].tokenizer") {
		t.Errorf("missing tokenizer file: error = %v", err)
	}
	cfg.Models[0].Tokenizer = "pseudo"
	_, err = New(Options{Config: cfg, Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "params.blockSize: 32 differs from router.prefixIndex.blockSize 16") {
		t.Errorf("block size mismatch: error = %v", err)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// waitUntil polls cond until it holds; after 20 s it fails the test.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
