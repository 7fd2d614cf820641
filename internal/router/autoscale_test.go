package router

import (
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// TestAutoscaleSignals sends requests through the router to two fake
// engines over real sockets and reads the signals from the admin
// listener, as JSON and as Prometheus metrics.
func TestAutoscaleSignals(t *testing.T) {
	h := newHarness(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  autoscaling: {ttft: 10s, tpot: 10s, window: 1m}
endpoints:
  - {name: e0, url: "{{e0}}", model: llama}
  - {name: e1, url: "{{e1}}", model: llama}
routes:
  - {model: llama, targets: [{pool: llama}]}
`, map[string]string{"e0": "llama", "e1": "llama"})
	for i := range 4 {
		body := `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`
		if i%2 == 1 {
			body = `{"model":"llama","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
		}
		if resp, b := h.post("/v1/chat/completions", body); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	pools := adminSignals(t, h, "")
	s, ok := pools["llama"]
	if !ok {
		t.Fatalf("no pool llama in %+v", pools)
	}
	if s.Engines != 2 || s.KVUsage < 0.19 || s.KVUsage > 0.21 {
		t.Errorf("engines %d, kv %v; want 2 engines and their scraped 0.1 each summed", s.Engines, s.KVUsage)
	}
	if s.TTFTAttainment != 1 || s.TPOTAttainment != 1 {
		t.Errorf("attainment ttft %v tpot %v, want 1 (generous objectives)", s.TTFTAttainment, s.TPOTAttainment)
	}
	if s.TokensPerSecond <= 0 || s.PrefillTokens != 0 {
		t.Errorf("tokens/s %v (want > 0), outstanding prefill %v (want 0 after every request ended)", s.TokensPerSecond, s.PrefillTokens)
	}
	if resp, _ := h.get("/autoscale/signals"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("public listener answers /autoscale/signals with %d, want 404", resp.StatusCode)
	}
	if resp, err := http.Get(h.admin.URL + "/autoscale/signals?pool=nope"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown pool: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}
	_, metrics := h.get("/metrics")
	for _, want := range []string{
		`halyard_router_autoscale_engines{pool="llama"} 2`,
		`halyard_router_autoscale_ttft_attainment{pool="llama"} 1`,
		`halyard_router_autoscale_waiting_requests_per_engine{pool="llama"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestSignalBookWindow checks the two-bucket window and the objectives.
func TestSignalBookWindow(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := &signalBook{ttft: time.Second, tpot: 50 * time.Millisecond, window: 10 * time.Second, now: func() time.Time { return now }, pools: map[string]*poolBook{}}
	b.sent("p", 100)
	if s := b.signals("p", nil, nil); s.PrefillTokens != 100 || s.TTFTAttainment != autoscale.Unknown {
		t.Fatalf("after send: %+v", s)
	}
	b.firstToken("p", 100)
	b.finished("p", 500*time.Millisecond, 20*time.Millisecond, 50) // meets both
	b.finished("p", 2*time.Second, 20*time.Millisecond, 50)        // misses TTFT
	b.finished("p", 0, 0, 0)                                       // failed
	now = now.Add(5 * time.Second)
	s := b.signals("p", nil, nil)
	if s.PrefillTokens != 0 || s.TTFTAttainment != 1.0/3 || s.TPOTAttainment != 2.0/3 || s.TokensPerSecond != 20 || s.RequestsPerSecond != 0.2 {
		t.Errorf("in the window: %+v, want prefill 0, ttft 1/3, tpot 2/3, 100 tokens and 1 request / 5 s", s)
	}
	now = now.Add(10 * time.Second) // the first bucket is now the previous one
	if s := b.signals("p", nil, nil); s.TTFTAttainment != 1.0/3 {
		t.Errorf("one window later: ttft %v, want the previous bucket's 1/3", s.TTFTAttainment)
	}
	now = now.Add(25 * time.Second) // both buckets expired
	if s := b.signals("p", nil, nil); s.TTFTAttainment != autoscale.Unknown || s.TokensPerSecond != 0 {
		t.Errorf("after two windows: %+v, want unknown attainment and no tokens", s)
	}
}

// TestWaitingRoomIsAdmissionsQueue checks that, with admission's fair queue
// on, the autoscaling signal of a pool counts the requests queued for it:
// one engine with room for one request, that request held by the engine,
// a second request waits in the queue and the pool's waitingRoom says 1.
func TestWaitingRoomIsAdmissionsQueue(t *testing.T) {
	doc := strings.Replace(withAdmission, "router: {", "router: {admission: {queue: {endpointConcurrency: 1, maxPerModel: 8, maxWait: 30s}}, ", 1)
	h := newHarnessWith(t, doc, twoEngines(), func(es map[string]*fakeEngine) {
		for _, e := range es {
			e.stall = make(chan struct{})
		}
	})
	var once sync.Once
	release := func() {
		once.Do(func() {
			for _, e := range h.engines {
				close(e.stall)
			}
		})
	}
	t.Cleanup(release)
	done := make(chan int, 3)
	send := func() {
		resp, _ := h.post("/v1/chat/completions", chatBody, "Authorization", "Bearer key-a")
		done <- resp.StatusCode
	}
	room := func() float64 { return adminSignals(t, h, "?pool=llama")["llama"].WaitingRoom }
	// Two requests fill both engines' single slot; then a third waits.
	go send()
	go send()
	deadline := time.Now().Add(10 * time.Second)
	for h.engines["e0"].requests.Load()+h.engines["e1"].requests.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the first two requests did not reach the engines in 10 s")
		}
		runtime.Gosched()
	}
	go send()
	for room() != 1 {
		select {
		case code := <-done:
			t.Fatalf("a request ended with %d while the engines held two: the third did not wait", code)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waitingRoom %v after 10 s, want 1", room())
		}
		runtime.Gosched()
	}
	release()
	for range 3 {
		if code := <-done; code != http.StatusOK {
			t.Errorf("a request ended with %d, want 200", code)
		}
	}
	if r := room(); r != 0 {
		t.Errorf("waitingRoom %v after every request ended, want 0", r)
	}
}

// adminSignals reads GET /autoscale/signals (query, e.g. "?pool=p") from
// the admin listener.
func adminSignals(t *testing.T, h *harness, query string) map[string]autoscale.Signals {
	t.Helper()
	resp, err := http.Get(h.admin.URL + "/autoscale/signals" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Pools map[string]autoscale.Signals `json:"pools"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	return got.Pools
}

// TestSignalHitCreditsWithTheBooksHasher: the book credits the blocks
// the engine reported cached as its hasher (the router's prefix hashing)
// cuts them, sampled: a block size of 32 credits other blocks than 16.
func TestSignalHitCreditsWithTheBooksHasher(t *testing.T) {
	now := time.Unix(1000, 0)
	ids := make([]uint32, 32*24)
	for i := range ids {
		ids[i] = uint32(i)
	}
	req := &framework.Request{TargetModel: "m", Prompt: framework.Prompt{TokenIDs: ids}, PromptTokens: len(ids)}
	out := framework.Outcome{PromptTokens: len(ids), CachedTokens: len(ids) / 2}
	for _, bt := range []int{16, 32} {
		h := prefixindex.Hasher{BlockTokens: bt}
		b := newSignalBook(config.AutoscalingSignalsConfig{}, h, func() time.Time { return now })
		b.hit("e0", req, out)
		want := map[uint64]float64{}
		for _, bh := range autoscale.SampleChain(autoscale.CachedBlocks(h, req, out)) {
			want[bh] = 1
		}
		if blocks := len(ids) / 2 / bt; len(want) != (blocks+autoscale.ChainStride-1)/autoscale.ChainStride {
			t.Fatalf("block size %d: %d blocks to credit, the test is wrong", bt, len(want))
		}
		if d := cmp.Diff(want, b.hot("e0")); d != "" {
			t.Errorf("block size %d: ledger (-want +got):\n%s", bt, d)
		}
	}
	if d := cmp.Diff(autoscale.CachedBlocks(prefixindex.Hasher{BlockTokens: 16}, req, out)[:1], autoscale.CachedBlocks(prefixindex.Hasher{BlockTokens: 32}, req, out)[:1]); d == "" {
		t.Error("block sizes 16 and 32 credit the same first block")
	}
}
