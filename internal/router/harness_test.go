package router

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

// Test-local plugins, standing in for the real ones.

type leastInFlight struct{ tn framework.TypedName }

func (p *leastInFlight) TypedName() framework.TypedName { return p.tn }
func (p *leastInFlight) Score(_ context.Context, _ *framework.CycleState, _ *framework.Request, eps []framework.Endpoint, out []float64) {
	for i, e := range eps {
		n, _ := e.InFlight()
		out[i] = 1 / float64(1+n+int64(e.Metrics().WaitingRequests))
	}
}

// fixedScorer scores endpoints from a table by name (as a prefix scorer
// would).
type fixedScorer struct {
	tn     framework.TypedName
	scores map[string]float64
}

func (p *fixedScorer) TypedName() framework.TypedName { return p.tn }
func (p *fixedScorer) Score(_ context.Context, _ *framework.CycleState, _ *framework.Request, eps []framework.Endpoint, out []float64) {
	for i, e := range eps {
		out[i] = p.scores[e.Metadata().Name]
	}
}

type dropFilter struct {
	tn   framework.TypedName
	drop map[string]bool
}

func (p *dropFilter) TypedName() framework.TypedName { return p.tn }
func (p *dropFilter) Filter(_ context.Context, _ *framework.CycleState, _ *framework.Request, eps []framework.Endpoint) []framework.Endpoint {
	out := eps[:0]
	for _, e := range eps {
		if !p.drop[e.Metadata().Name] {
			out = append(out, e)
		}
	}
	return out
}

type maxScore struct{ tn framework.TypedName }

func (p *maxScore) TypedName() framework.TypedName { return p.tn }
func (p *maxScore) Pick(_ context.Context, _ *framework.CycleState, _ *framework.Request, scored []framework.ScoredEndpoint) []framework.Endpoint {
	best := -1
	for i, s := range scored {
		if best < 0 || s.Score > scored[best].Score {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	return []framework.Endpoint{scored[best].Endpoint}
}

func testRegistry(t testing.TB) *framework.Registry {
	reg := &framework.Registry{}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(reg.Register("least-in-flight", func(name string, _ json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
		return &leastInFlight{tn: framework.TypedName{Type: "least-in-flight", Name: name}}, nil
	}))
	must(reg.Register("prefix-cache", func(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
		p := &fixedScorer{tn: framework.TypedName{Type: "prefix-cache", Name: name}}
		return p, framework.DecodeParams(params, &p.scores)
	}))
	must(reg.Register("drop", func(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
		var names []string
		p := &dropFilter{tn: framework.TypedName{Type: "drop", Name: name}, drop: map[string]bool{}}
		err := framework.DecodeParams(params, &names)
		for _, n := range names {
			p.drop[n] = true
		}
		return p, err
	}))
	must(reg.Register("max-score", func(name string, _ json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
		return &maxScore{tn: framework.TypedName{Type: "max-score", Name: name}}, nil
	}))
	return reg
}

var testDefaultProfile = config.ProfileSpec{
	Scorers: []config.PluginSpec{{Type: "least-in-flight"}},
	Picker:  &config.PluginSpec{Type: "max-score"},
}

// harness is a router with fake engines, serving on a real socket.
type harness struct {
	t       testing.TB
	r       *Router
	srv     *httptest.Server
	admin   *httptest.Server // the admin listener
	engines map[string]*fakeEngine
}

// newHarness loads the YAML config doc, in which each "{{name}}" is replaced
// by the URL of a fake engine of that name (created on demand, serving the
// model given by the endpoint's model), and scrapes once so that the
// engines are healthy.
func newHarness(t testing.TB, doc string, engineModels map[string]string) *harness {
	t.Helper()
	return newHarnessWith(t, doc, engineModels, nil)
}

// newHarnessWith is newHarness with a hook that sets the engines up before
// the first scrape.
func newHarnessWith(t testing.TB, doc string, engineModels map[string]string, before func(map[string]*fakeEngine)) *harness {
	t.Helper()
	return newHarnessFor(t, doc, engineModels, before, testRegistry(t), testDefaultProfile)
}

// newHarnessShipped is newHarness with the built-in plugins and the
// shipped default profile in place of the test ones.
func newHarnessShipped(t testing.TB, doc string, engineModels map[string]string) *harness {
	t.Helper()
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	return newHarnessFor(t, doc, engineModels, nil, reg, presets.DefaultSpec())
}

// newHarnessFor is newHarnessWith with the plugin registry and the default
// profile given.
func newHarnessFor(t testing.TB, doc string, engineModels map[string]string, before func(map[string]*fakeEngine), reg *framework.Registry, def config.ProfileSpec) *harness {
	t.Helper()
	h := &harness{t: t, engines: map[string]*fakeEngine{}}
	for name, model := range engineModels {
		e := newFakeEngineTB(t, name, model)
		h.engines[name] = e
		doc = strings.ReplaceAll(doc, "{{"+name+"}}", e.srv.URL)
	}
	if before != nil {
		before(h.engines)
	}
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	decisionHeadersOn(cfg)
	r, err := New(Options{Config: cfg, Registry: reg, DefaultProfile: &def, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	r.store.Sync(discovery.Specs(cfg.Endpoints))
	r.collector.ScrapeOnce(context.Background())
	h.srv = httptest.NewServer(r.Handler())
	t.Cleanup(h.srv.Close)
	h.admin = httptest.NewServer(r.AdminHandler())
	t.Cleanup(h.admin.Close)
	return h
}

// url is where path is served: the admin listener for /metrics and
// /debug/, else the public one.
func (h *harness) url(path string) string {
	if h.admin != nil && (strings.HasPrefix(path, "/metrics") || strings.HasPrefix(path, "/debug/")) {
		return h.admin.URL + path
	}
	return h.srv.URL + path
}

func newFakeEngineTB(t testing.TB, name, model string) *fakeEngine {
	e := &fakeEngine{name: name, model: model, chunks: 3, canceled: make(chan struct{})}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (h *harness) post(path string, body string, headers ...string) (*http.Response, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url(path), strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp, b
}

func (h *harness) get(path string) (*http.Response, []byte) {
	h.t.Helper()
	resp, err := http.Get(h.url(path))
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func decodeError(t testing.TB, b []byte) apiError {
	t.Helper()
	var e apiError
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an OpenAI error body: %s (%v)", b, err)
	}
	return e
}
