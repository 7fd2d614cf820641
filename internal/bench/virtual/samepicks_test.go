package virtual

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/decision"
	live "github.com/halyard-dev/halyard/internal/router"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// scriptedScraper hands the router the endpoint state the test sets, as
// the engines' /metrics would.
type scriptedScraper struct {
	mu    sync.Mutex
	byURL map[string]*framework.Metrics
	// served counts the scrapes of each URL since the metrics last changed.
	served map[string]int
}

func (s *scriptedScraper) Scrape(_ context.Context, baseURL string) (*framework.Metrics, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.served != nil {
		s.served[baseURL]++
	}
	if m := s.byURL[baseURL]; m != nil {
		return m, nil
	}
	return &framework.Metrics{UpdateTime: time.Now()}, nil
}

// sameState is one endpoint state: the scraped metrics of each endpoint,
// drawn from rng.
func sameState(rng *rand.Rand, n int) []framework.Metrics {
	out := make([]framework.Metrics, n)
	for i := range out {
		out[i] = framework.Metrics{
			UpdateTime:      time.Now(),
			RunningRequests: rng.IntN(6),
			WaitingRequests: rng.IntN(3) * rng.IntN(2),
			KVCacheUsage:    float64(rng.IntN(80)) / 100,
			BlockSize:       16,
			NumBlocks:       27_000,
		}
	}
	return out
}

// samePrompts are prompts of three groups sharing a long system prompt, in
// an order that revisits each group.
func samePrompts(n int) []string { return groupPrompts(n, 40) }

// groupPrompts are n prompts of three groups whose system prompt repeats
// a 26-byte phrase repeat times, in an order that revisits each group.
func groupPrompts(n, repeat int) []string {
	out := make([]string, n)
	for i := range out {
		g := (i * 7 / 3) % 3
		out[i] = strings.Repeat(fmt.Sprintf("system prompt of group %d; ", g), repeat) + fmt.Sprintf("question %d of user %d?", i, i%5)
	}
	return out
}

// liveRouter starts the engines and a real router over HTTP on loopback,
// with the endpoint state coming from scraper.
func liveRouter(t *testing.T, doc string, engines []vllmapi.Spec, profiles map[string]config.ProfileSpec, scraper *scriptedScraper) (*live.Router, string, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	urls := make([]string, len(engines))
	for i, sp := range engines {
		sp.Listen = "127.0.0.1:0"
		inst, err := vllmapi.Start(ctx, sp, nil)
		if err != nil {
			t.Fatal(err)
		}
		urls[i] = inst.URL
		doc = strings.ReplaceAll(doc, fmt.Sprintf("{{url%d}}", i), inst.URL)
	}
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Router.Profiles == nil {
		cfg.Router.Profiles = map[string]config.ProfileSpec{}
	}
	for name, p := range profiles {
		cfg.Router.Profiles[name] = p
	}
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	r, err := live.New(live.Options{Config: cfg, Registry: reg, PresetProfiles: presets.Specs(), Scraper: scraper, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, ln, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("router not ready: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	return r, base, urls
}

// setState gives both paths the same state: the router's store at once
// (and its scraper, so a scrape in between changes nothing) and the
// virtual endpoints.
func setState(t *testing.T, r *live.Router, scraper *scriptedScraper, urls []string, names []string, eps []*endpoint, st []framework.Metrics) {
	scraper.mu.Lock()
	for i, u := range urls {
		m := st[i]
		scraper.byURL[u] = &m
	}
	scraper.served = map[string]int{}
	scraper.mu.Unlock()
	for i, name := range names {
		m := st[i]
		r.Store().Get(name).SetMetrics(&m)
		v := st[i]
		eps[i].metrics.Store(&v)
	}
	// A scrape that read the old metrics before the change may store them
	// after it. The router scrapes each endpoint one scrape at a time, so
	// once an endpoint has been scraped twice since the change, the first
	// of those (new metrics) has been stored and no older one is pending.
	waitUntil(t, "the router scraped every endpoint twice since the change", func() bool {
		scraper.mu.Lock()
		defer scraper.mu.Unlock()
		for _, u := range urls {
			if scraper.served[u] < 2 {
				return false
			}
		}
		return true
	})
}

// waitIdle waits, up to a deadline, until the router has ended every
// request on names: it runs a request's done hooks (the profile's load
// accounting) after the client has read the end of the answer, and the
// virtual side's next decision sees the previous request done.
func waitIdle(t *testing.T, r *live.Router, names []string) {
	t.Helper()
	waitUntil(t, "the router ended every request", func() bool {
		for _, n := range names {
			if in, _ := r.Store().Get(n).InFlight(); in != 0 {
				return false
			}
		}
		return true
	})
}

// waitUntil polls cond until it holds, failing the test after 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

// post sends a streamed completion through the router and returns the
// response headers once the stream has ended.
func post(t *testing.T, base, prompt string, maxTokens int) http.Header {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "m", "prompt": prompt, "max_tokens": maxTokens, "stream": true})
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/completions", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(live.HeaderExplain, "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	return resp.Header
}

func virtualEndpoints(names []string, roles []framework.Role, labels []map[string]string) []*endpoint {
	eps := make([]*endpoint, len(names))
	for i, n := range names {
		m := &atomic.Pointer[framework.Metrics]{}
		m.Store(&framework.Metrics{})
		eps[i] = &endpoint{md: framework.EndpointMetadata{Name: n, Address: "virtual://" + n, Model: "m", Role: roles[i], Labels: labels[i]}, idx: i, metrics: m}
	}
	return eps
}

const samePicksSeed = 7

// TestRouterAndVirtualFleetPickAlike feeds one request sequence and one
// endpoint state per request (scraped metrics drawn at random; the prefix
// indexes and in-flight counts as each path's own requests leave them) to
// the live router (real router over HTTP, simulated engines on loopback)
// and to the virtual fleet's decision path, and asserts identical picks:
// four endpoints under the default profile (and default-v1), and a disaggregated pool of two
// prefill and two decode endpoints (pair and decode-first choices). The
// pickers are seeded alike on both sides, as bench --simulate seeds them.
func TestRouterAndVirtualFleetPickAlike(t *testing.T) {
	const requests = 40
	prompts := samePrompts(requests)
	ctx := context.Background()

	// The default profile holds predicted-latency: its fit is frozen at the
	// prior, as below, since only the fit may differ between the sides.
	t.Run("default profile, fit frozen, four endpoints", func(t *testing.T) {
		spec, err := policySpec(PolicyDefault, samePicksSeed)
		if err != nil {
			t.Fatal(err)
		}
		samePicksFour(t, frozenFit(t, spec), prompts)
	})

	t.Run("default-v1 profile, four endpoints", func(t *testing.T) {
		spec, err := policySpec(PolicyDefaultV1, samePicksSeed)
		if err != nil {
			t.Fatal(err)
		}
		samePicksFour(t, spec, prompts)
	})

	// predicted-latency with its step-time fit frozen at the prior: the
	// live side learns from wall-clock timings, the virtual side from none,
	// and only the fit may differ. Its in-flight accounting (sent, first
	// token, done) and prefix predictions still run on both sides.
	t.Run("predicted-latency, fit frozen, four endpoints", func(t *testing.T) {
		spec, err := policySpec(PolicyPredicted, samePicksSeed)
		if err != nil {
			t.Fatal(err)
		}
		samePicksFour(t, frozenFit(t, spec), prompts)
	})

	// The same with a 1 ms TTFT objective, which no endpoint meets: with
	// unmeetable "triage" each request goes to the endpoint furthest
	// behind (one whose scrape shows a queue), not the least-cost one,
	// and the router and the virtual fleet triage alike.
	t.Run("predicted-latency with triage, fit frozen, four endpoints", func(t *testing.T) {
		spec, err := policySpec(PolicyPredicted, samePicksSeed)
		if err != nil {
			t.Fatal(err)
		}
		leastCost := samePicksFour(t, withObjective(t, frozenFit(t, spec), predictedlatency.UnmeetableLeastCost), prompts)
		triaged := samePicksFour(t, withObjective(t, frozenFit(t, spec), predictedlatency.UnmeetableTriage), prompts)
		if slices.Equal(leastCost, triaged) {
			t.Errorf("triage picked as least-cost does (%v): the state does not exercise it", triaged)
		}
	})

	t.Run("disaggregated pool", func(t *testing.T) {
		names := []string{"p0", "p1", "d2", "d3"}
		roles := []framework.Role{framework.RolePrefill, framework.RolePrefill, framework.RoleDecode, framework.RoleDecode}
		labels := make([]map[string]string, len(names))
		var doc strings.Builder
		doc.WriteString("apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter:\n  scrapeInterval: 20ms\n  debug: {explain: true, endpointHeader: true}\nendpoints:\n")
		specs := make([]vllmapi.Spec, len(names))
		for i, n := range names {
			labels[i] = map[string]string{"zone": string(rune('a' + i%2))}
			fmt.Fprintf(&doc, "  - {name: %s, url: \"{{url%d}}\", model: m, role: %s, labels: {zone: %s}}\n", n, i, roles[i], labels[i]["zone"])
			specs[i] = vllmapi.Spec{Model: "m", Role: string(roles[i]), Seed: uint64(i)}
		}
		doc.WriteString("routes:\n  - {model: m, targets: [{pool: m}]}\npools:\n  - name: m\n    pd: {mode: nixl, topologyKey: zone, decodeFirst: {minHeldShare: 0.5}}\n")
		// Both presets hold predicted-latency: its fit is frozen at the
		// prior, as above.
		profiles := map[string]config.ProfileSpec{}
		for _, n := range []string{presets.Prefill, presets.Decode} {
			profiles[n] = seeded(frozenFit(t, presets.Specs()[n]), samePicksSeed)
		}
		scraper := &scriptedScraper{byURL: map[string]*framework.Metrics{}}
		r, base, urls := liveRouter(t, doc.String(), specs, profiles, scraper)

		cfg, err := config.Parse([]byte(strings.NewReplacer("{{url0}}", urls[0], "{{url1}}", urls[1], "{{url2}}", urls[2], "{{url3}}", urls[3]).Replace(doc.String())))
		if err != nil {
			t.Fatal(err)
		}
		pdb := cfg.Pools[0].PD
		sc := &Scenario{Seed: samePicksSeed, PD: &PDScenario{PrefillProfile: pdb.PrefillProfile, DecodeProfile: pdb.DecodeProfile,
			DecodeFirst: pdb.DecodeFirst, MinPrefillTokens: pdb.MinPrefillTokens, TopologyKey: pdb.TopologyKey}}
		eps := virtualEndpoints(names, roles, labels)
		fleet, err := newPDFleet(sc, eps, nil, time.Now)
		if err != nil {
			t.Fatal(err)
		}

		rng := rand.New(rand.NewPCG(samePicksSeed, 2))
		var got, virt []string
		for i, p := range prompts {
			setState(t, r, scraper, urls, names, eps, sameState(rng, len(names)))
			route := post(t, base, p, 4).Get(live.HeaderRoute)
			waitIdle(t, r, names)
			got = append(got, pdPickOf(t, route))

			ids := tokenizer.Pseudo{}.Encode(p)
			req := schedulingRequest(fmt.Sprintf("r%d", i), "m", []byte(p), ids, 4, false)
			call, ch, plan, err := fleet.plan(ctx, &router{}, req, false)
			if err != nil {
				t.Fatal(err)
			}
			pick := plan.Decode.Metadata().Name
			if plan.Skip == "" {
				fleet.director.PrefillSent(ctx, call, ch.Pool, plan)
				fleet.director.PrefillDone(ctx, call, ch.Pool, plan.Prefill, framework.Outcome{PromptTokens: len(ids), CompletionTokens: 1})
				pick = plan.Prefill.Metadata().Name + ">" + pick
			}
			d := fleet.director.Decode(ch, plan)
			fleet.director.Sent(ctx, call, &d)
			fleet.director.Done(ctx, call, &d, framework.Outcome{PromptTokens: len(ids), CompletionTokens: 4})
			virt = append(virt, pick)
		}
		if diff := cmp.Diff(got, virt); diff != "" {
			t.Errorf("picks differ (-router +virtual):\n%s", diff)
		}
		if distinct(got) < 3 {
			t.Errorf("picks %v: the state does not exercise the choice", got)
		}
	})
}

// samePicksFour drives four endpoints under spec through the live router
// and the virtual fleet's decision, asserts identical picks and returns
// them.
func samePicksFour(t *testing.T, spec config.ProfileSpec, prompts []string) []string {
	t.Helper()
	ctx := context.Background()
	names := []string{"e0", "e1", "e2", "e3"}
	var doc strings.Builder
	doc.WriteString("apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter:\n  scrapeInterval: 20ms\n  debug: {explain: true, endpointHeader: true}\nendpoints:\n")
	specs := make([]vllmapi.Spec, len(names))
	for i, n := range names {
		fmt.Fprintf(&doc, "  - {name: %s, url: \"{{url%d}}\", model: m}\n", n, i)
		specs[i] = vllmapi.Spec{Model: "m", Seed: uint64(i)}
	}
	doc.WriteString("routes:\n  - {model: m, targets: [{pool: m}]}\n")
	scraper := &scriptedScraper{byURL: map[string]*framework.Metrics{}}
	r, base, urls := liveRouter(t, doc.String(), specs, map[string]config.ProfileSpec{config.DefaultProfile: spec}, scraper)

	eps := virtualEndpoints(names, []framework.Role{framework.RoleBoth, framework.RoleBoth, framework.RoleBoth, framework.RoleBoth}, make([]map[string]string, 4))
	rt := &router{}
	for _, e := range eps {
		rt.cands = append(rt.cands, e)
	}
	cands := rt.cands
	var err error
	rt.director, err = newDirector(nil, nil, 16, time.Now, decision.PoolsFunc(func(string) []framework.Endpoint { return slices.Clone(cands) }),
		map[string]config.ProfileSpec{PolicyDefault: spec}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rt.profile, err = rt.director.Profiles().Get(PolicyDefault); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(samePicksSeed, 1))
	var got, virt []string
	for i, p := range prompts {
		setState(t, r, scraper, urls, names, eps, sameState(rng, len(names)))
		got = append(got, post(t, base, p, 4).Get(live.HeaderEndpoint))
		waitIdle(t, r, names)

		ids := tokenizer.Pseudo{}.Encode(p)
		req := schedulingRequest(fmt.Sprintf("r%d", i), "m", []byte(p), ids, 4, false)
		ep, call, d, err := rt.decide(ctx, req, false)
		if err != nil {
			t.Fatal(err)
		}
		rt.director.Sent(ctx, call, &d)
		rt.director.Done(ctx, call, &d, framework.Outcome{PromptTokens: len(ids), CompletionTokens: 4})
		virt = append(virt, ep.md.Name)
	}
	if diff := cmp.Diff(got, virt); diff != "" {
		t.Errorf("picks differ (-router +virtual):\n%s", diff)
	}
	if distinct(got) < 2 {
		t.Errorf("every request went to %v: the state does not exercise the choice", got)
	}
	return got
}

// frozenFit returns spec with its predicted-latency scorers' fit frozen.
func frozenFit(t *testing.T, spec config.ProfileSpec) config.ProfileSpec {
	t.Helper()
	return editPredicted(t, spec, func(p *predictedlatency.Params) { p.FrozenFit = true })
}

// withObjective returns spec with its predicted-latency scorers' TTFT
// objective at 1 ms and unmeetable set.
func withObjective(t *testing.T, spec config.ProfileSpec, unmeetable string) config.ProfileSpec {
	t.Helper()
	return editPredicted(t, spec, func(p *predictedlatency.Params) { p.TTFTObjectiveMs, p.Unmeetable = 1, unmeetable })
}

// editPredicted returns spec with edit applied to the params of each of
// its predicted-latency scorers (their defaults where it sets none); it
// fails the test when the profile has none.
func editPredicted(t *testing.T, spec config.ProfileSpec, edit func(*predictedlatency.Params)) config.ProfileSpec {
	t.Helper()
	scorers := slices.Clone(spec.Scorers)
	n := 0
	for i, sc := range scorers {
		if sc.Type != predictedlatency.Type {
			continue
		}
		p := predictedlatency.DefaultParams()
		if len(sc.Params) > 0 {
			if err := json.Unmarshal(sc.Params, &p); err != nil {
				t.Fatal(err)
			}
		}
		edit(&p)
		scorers[i].Params, _ = json.Marshal(p)
		n++
	}
	if n == 0 {
		t.Fatal("the profile has no predicted-latency scorer")
	}
	spec.Scorers = scorers
	return spec
}

// pdPickOf reads "prefill>decode" (or "decode" when the prefill was
// skipped) from the router's explanation header.
func pdPickOf(t *testing.T, route string) string {
	t.Helper()
	var prefill, decode string
	for _, part := range strings.Split(route, "; ") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "prefill":
			prefill = v
		case "picked":
			decode = v
		}
	}
	if decode == "" {
		t.Fatalf("no picked endpoint in %q", route)
	}
	if prefill == "" || prefill == "none" {
		return decode
	}
	return prefill + ">" + decode
}

func distinct(s []string) int {
	m := map[string]bool{}
	for _, v := range s {
		m[v] = true
	}
	return len(m)
}
