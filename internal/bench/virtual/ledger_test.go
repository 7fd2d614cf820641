package virtual

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	live "github.com/halyard-dev/halyard/internal/router"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// usageOf sends a completion through the router and returns the endpoint
// that served it and the usage the engine reported.
func usageOf(t *testing.T, base, prompt string) (endpoint string, promptTokens, cached int) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "m", "prompt": prompt, "max_tokens": 4})
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/completions", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var out struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
			Details      *struct {
				CachedTokens int `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	if out.Usage.Details != nil {
		cached = out.Usage.Details.CachedTokens
	}
	return resp.Header.Get(live.HeaderEndpoint), out.Usage.PromptTokens, cached
}

// routerLedger reads the router's hit ledger: GET /autoscale/endpoints on
// its admin listener.
func routerLedger(t *testing.T, admin string) map[string]map[uint64]float64 {
	t.Helper()
	resp, err := http.Get(admin + "/autoscale/endpoints?pool=m")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Endpoints []autoscale.EndpointLoad `json:"endpoints"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[uint64]float64{}
	for _, e := range got.Endpoints {
		out[e.Name] = e.Hot
	}
	return out
}

func sortedKeys(m map[uint64]float64) []uint64 {
	out := make([]uint64, 0, len(m))
	for h := range m {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// TestRouterAndFleetScalerCreditAlike feeds one request sequence to the
// live router (real router over HTTP, simulated engines on loopback) and
// the same requests with the outcomes the engines reported to the bench's
// fleet scaler, and asserts that their hit ledgers hold the same blocks
// with the same hits on every endpoint (the router's decayed over the
// test's wall time, the virtual one's read at the instant of its
// credits): the router and the bench credit one hash space, the router's
// prefix hashing, so their victim choices (autoscale.ChooseVictims, ties
// broken by block hash) read the same ledger.
//
// The prompts share system prompts of about 50 blocks (text chunks or
// token ids), so that a cached share spans several sampled blocks; the
// prompts are hashed as text, or as token ids when the router has the
// engines' tokenizer.
func TestRouterAndFleetScalerCreditAlike(t *testing.T) {
	t.Run("text", func(t *testing.T) { creditAlike(t, "", false) })
	// The router tokenises with the engines' tokenizer (models[]), as a
	// precise policy of the bench routes on token ids.
	t.Run("token ids", func(t *testing.T) { creditAlike(t, "models:\n  - {name: m, tokenizer: pseudo}\n", true) })
}

// creditAlike runs TestRouterAndFleetScalerCreditAlike with models added
// to the router's configuration, the bench's requests carrying token ids
// when tokenIDs is set.
func creditAlike(t *testing.T, models string, tokenIDs bool) {
	const requests = 30
	names := []string{"e0", "e1", "e2"}
	var doc strings.Builder
	doc.WriteString("apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter:\n  scrapeInterval: 20ms\n  debug: {endpointHeader: true}\nendpoints:\n")
	specs := make([]vllmapi.Spec, len(names))
	for i, n := range names {
		fmt.Fprintf(&doc, "  - {name: %s, url: \"{{url%d}}\", model: m, labels: {group: \"%d\"}}\n", n, i, i)
		specs[i] = vllmapi.Spec{Model: "m", Seed: uint64(i)}
	}
	doc.WriteString("routes:\n  - {model: m, targets: [{pool: m}]}\n")
	doc.WriteString(models)
	scraper := &scriptedScraper{byURL: map[string]*framework.Metrics{}}
	// default-v1 (the old default) with its picker seeded, as bench
	// --simulate seeds it: the picks, and so which endpoints hold credits,
	// do not vary between runs. Today's default holds predicted-latency,
	// whose live picks depend on wall-clock timings (its fit, a buffered
	// answer's expected first token): in one CI run every group landed on
	// one endpoint and the sequence no longer exercised the ledger.
	spec, err := policySpec(PolicyDefaultV1, samePicksSeed)
	if err != nil {
		t.Fatal(err)
	}
	r, base, _ := liveRouter(t, doc.String(), specs, map[string]config.ProfileSpec{config.DefaultProfile: spec}, scraper)
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminDone := make(chan error, 1)
	go func() { adminDone <- r.ServeAdmin(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-adminDone; err != nil {
			t.Errorf("admin: %v", err)
		}
	})
	admin := "http://" + ln.Addr().String()

	// The bench's side: a fleet scaler as run builds it, over the routers'
	// prefix hashing (the live router's router.prefixIndex is absent: its
	// default block size), on a virtual clock that does not move.
	sc := &AutoscalingScenario{Policies: []string{FleetDrainCacheAware}, PeakEngines: len(names)}
	sc.defaults()
	sc.HitHalfLife.Duration = 5 * time.Minute // the router's ledger's
	f := &fleetRun{clock: simclock.NewVirtual(time.Unix(1_000_000, 0))}
	s, _, err := newFleetScaler(f, FleetDrainCacheAware, sc, stats.SLO{}, 1, prefixindex.Hasher{BlockTokens: config.DefaultBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	eps := map[string]*endpoint{}
	for _, e := range virtualEndpoints(names, []framework.Role{framework.RoleBoth, framework.RoleBoth, framework.RoleBoth}, make([]map[string]string, len(names))) {
		eps[e.md.Name] = e
	}

	start := time.Now()
	credited := 0
	for i, p := range groupPrompts(requests, 120) {
		name, promptTokens, cached := usageOf(t, base, p)
		ep := eps[name]
		if ep == nil {
			t.Fatalf("request %d served by %q, not one of %v", i, name, names)
		}
		ids := tokenizer.Pseudo{}.Encode(p)
		req := schedulingRequest(fmt.Sprintf("r%d", i), "m", []byte(p), ids, 4, tokenIDs)
		s.hit(ep, req, framework.Outcome{PromptTokens: promptTokens, CachedTokens: cached, CompletionTokens: 4})
		if cached > 0 {
			credited++
		}
	}
	now := f.clock.Now()
	virt := map[string]map[uint64]float64{}
	for _, n := range names {
		virt[n] = s.ledger.Hottest(n, now, autoscale.HotBlocksReported)
	}
	if credited < requests/2 {
		t.Fatalf("%d of %d requests had cached tokens: the sequence does not exercise the ledger", credited, requests)
	}

	// The router credits an attempt when it ends, which may follow the
	// response the client read: wait, up to a deadline, for its ledger to
	// hold the virtual one's blocks.
	var got map[string]map[uint64]float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		got = routerLedger(t, admin)
		same := true
		for _, n := range names {
			same = same && slices.Equal(sortedKeys(got[n]), sortedKeys(virt[n]))
		}
		if same || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	elapsed := time.Since(start)
	// A hit credited at t is worth 2^-(now-t)/halfLife when read at now.
	floor := math.Exp2(-elapsed.Seconds() / sc.HitHalfLife.Seconds())
	held, multi := 0, 0
	for _, n := range names {
		if len(virt[n]) > 0 {
			held++
		}
		if g, v := sortedKeys(got[n]), sortedKeys(virt[n]); !slices.Equal(g, v) {
			t.Errorf("%s: the router credited blocks %x, the bench %x", n, g, v)
			continue
		}
		for h, want := range virt[n] {
			if g := got[n][h]; g > want*(1+1e-9) || g < want*floor*(1-1e-9) {
				t.Errorf("%s: block %x has %.4f hits on the router, the bench %.4f (decay floor %.4f)", n, h, g, want, floor)
			}
			if want >= 2 {
				multi++
			}
		}
	}
	if held < 2 || multi == 0 {
		t.Errorf("blocks credited on %d endpoints, %d blocks hit more than once: the sequence does not exercise the ledger", held, multi)
	}
	t.Logf("blocks credited on %d endpoints, %d hit more than once, after %s", held, multi, elapsed)
}
