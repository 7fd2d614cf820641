package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func keySHA(k string) string {
	h := sha256.Sum256([]byte(k))
	return hex.EncodeToString(h[:])
}

// withAdmission is oneModel with authentication, a tenant with budgets and
// the fair queue.
var withAdmission = oneModel + `auth: {}
tenants:
  - name: team-a
    apiKeys: [{sha256: "` + keySHA("key-a") + `"}]
    limits: {requestsPerMinute: 100000000, tokensPerMinute: 100000000000, concurrency: 100000}
    modelLimits: {llama: {tokensPerMinute: 100000000000}}
`

func TestAdmissionKeepsTheCredentialFromEngines(t *testing.T) {
	h := newHarness(t, withAdmission, twoEngines())
	resp, body := h.post("/v1/chat/completions", chatBody, "Authorization", "Bearer key-a")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for name, e := range h.engines {
		_, hs := e.received()
		for _, hd := range hs {
			if got := hd.Get("Authorization"); got != "" {
				t.Errorf("engine %s received Authorization %q", name, got)
			}
		}
	}
	if resp.Header.Get("X-Ratelimit-Limit-Tokens") == "" {
		t.Error("no x-ratelimit-limit-tokens on an admitted answer")
	}
	resp, _ = h.post("/v1/chat/completions", chatBody, "Authorization", "Bearer key-b")
	if resp.StatusCode != 401 {
		t.Errorf("wrong key: %d, want 401", resp.StatusCode)
	}
}

// TestAdmittedRequestGoesWhereThereIsRoom: with the fair queue on, an
// endpoint with a prefill of this router outstanding (queue.prefillTokens,
// 1 by default with endpointConcurrency) has no room, and the pick goes to
// one that has, though the profile (least in flight) prefers the other;
// once the prefill is done the profile's choice stands again. Non-streamed
// answers end their prefill with them.
func TestAdmittedRequestGoesWhereThereIsRoom(t *testing.T) {
	doc := strings.Replace(withAdmission, "router: {", "router: {admission: {queue: {endpointConcurrency: 8}}, ", 1)
	h := newHarness(t, doc, twoEngines())
	e0, e1 := h.r.store.Get("e0"), h.r.store.Get("e1")
	e0.Begin(10) // one request, still prefilling
	e0.PrefillBegin(100)
	e1.Begin(10) // two, past their first token
	e1.Begin(10)
	post := func(want string) {
		t.Helper()
		before := h.engines[want].requests.Load()
		resp, body := h.post("/v1/chat/completions", chatBody, "Authorization", "Bearer key-a")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if h.engines[want].requests.Load() != before+1 {
			t.Errorf("the request did not go to %s", want)
		}
	}
	post("e1")
	e0.PrefillEnd(100)
	post("e0")
	for _, e := range []string{"e0", "e1"} {
		if n, tok := h.r.store.Get(e).Prefilling(); n != 0 || tok != 0 {
			t.Errorf("%s still counts %d prefills (%d tokens) after the answers ended", e, n, tok)
		}
	}
}

// BenchmarkAdmission measures the whole handler with admission off and on
// (API key, tenant and model budgets, fair queue) side by side; the
// difference is admission's cost per request.
func BenchmarkAdmission(b *testing.B) {
	body := `{"model":"llama","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello."}],"max_tokens":3}`
	for _, bc := range []struct{ name, doc string }{
		{"off", oneModel},
		{"local-budgets", withAdmission},
		{"local-budgets+queue", strings.Replace(withAdmission, "router: {", "router: {admission: {queue: {maxPerModel: 1024}}, ", 1)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			h := newHarness(b, bc.doc, twoEngines())
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer key-a")
				w := httptest.NewRecorder()
				h.r.Handler().ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			// Router and fake engines share the process: cpu-ns/op is
			// both, the same engines in every case.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the CPU time (user + system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestAdmissionSpan: a traced request gets a halyard.admission span, child
// of the request's, with the tenant, the decision, the reason of a refusal
// and the time queued; the remaining budget gauge follows.
func TestAdmissionSpan(t *testing.T) {
	doc := strings.Replace(withAdmission, "requestsPerMinute: 100000000", "requestsPerMinute: 1", 1)
	h := newHarness(t, doc, twoEngines())
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	h.r.tracer = tp.Tracer(TracerName)
	for i, want := range []int{200, 429} {
		resp, body := h.post("/v1/chat/completions", chatBody, "Authorization", "Bearer key-a")
		if resp.StatusCode != want {
			t.Fatalf("request %d: %d %s, want %d", i, resp.StatusCode, body, want)
		}
	}
	var got []map[string]string
	for _, s := range rec.Ended() {
		if s.Name() != "halyard.admission" {
			continue
		}
		a := map[string]string{"parent": s.Parent().SpanID().String()}
		for _, kv := range s.Attributes() {
			a[string(kv.Key)] = kv.Value.String()
		}
		got = append(got, a)
	}
	if len(got) != 2 {
		t.Fatalf("%d admission spans, want 2: %v", len(got), got)
	}
	if a := got[0]; a["halyard.tenant"] != "team-a" || a["halyard.admission.decision"] != "admitted" || a["halyard.admission.queue_wait_ms"] == "" || a["parent"] == "0000000000000000" {
		t.Errorf("admitted span attributes %v", a)
	}
	if a := got[1]; a["halyard.admission.decision"] != "refused" || a["halyard.admission.reason"] != "over_budget" {
		t.Errorf("refused span attributes %v", a)
	}
	if v := testutil.ToFloat64(h.r.budgetRemaining.WithLabelValues("team-a", "requests")); v != 0 {
		t.Errorf("requests budget remaining %v after the only allowed request, want 0", v)
	}
}

// TestAdmissionShedsARequestNoEndpointCanServeInTime: with
// router.admission.unmeetable: shed, a request whose declared TTFT
// objective no endpoint is predicted to meet (the default profile's
// predicted-latency scorer) is refused with a 429 before it reaches an
// engine, counted as shed for slo_unmeetable, and its concurrency slot is
// given back (the tenant's limit is 1: a leaked slot would refuse the next
// request); a request that can be on time is served. With the default
// (serve) the same request is served, late.
func TestAdmissionShedsARequestNoEndpointCanServeInTime(t *testing.T) {
	oneSlot := strings.Replace(withAdmission, "concurrency: 100000", "concurrency: 1", 1)
	sent := func(h *harness) int64 { return h.engines["e0"].requests.Load() + h.engines["e1"].requests.Load() }
	h := newHarnessShipped(t, strings.Replace(oneSlot, "router: {", "router: {admission: {unmeetable: shed}, ", 1), twoEngines())
	for i := range 2 {
		resp, body := h.post("/v1/chat/completions", chatBody, "Authorization", "Bearer key-a", "X-Halyard-Slo-Ttft-Ms", "0.001")
		wantUnmeetable(t, fmt.Sprintf("request %d", i), resp, body, "")
	}
	if n := sent(h); n != 0 {
		t.Errorf("engines received %d shed requests", n)
	}
	if v := metricValue(t, h, `halyard_admission_shed_total{priority="standard",reason="slo_unmeetable",tenant="team-a"}`); v != 2 {
		t.Errorf("halyard_admission_shed_total{reason=slo_unmeetable} = %v, want 2", v)
	}
	resp, body := h.post("/v1/chat/completions", chatBody, "Authorization", "Bearer key-a", "X-Halyard-Slo-Ttft-Ms", "60000")
	if resp.StatusCode != 200 {
		t.Fatalf("a request that can be on time after two shed ones: status %d: %s", resp.StatusCode, body)
	}
	if n := sent(h); n != 1 {
		t.Errorf("engines received %d requests, want 1", n)
	}

	serve := newHarnessShipped(t, oneSlot, twoEngines())
	resp, body = serve.post("/v1/chat/completions", chatBody, "Authorization", "Bearer key-a", "X-Halyard-Slo-Ttft-Ms", "0.001")
	if resp.StatusCode != 200 {
		t.Fatalf("unmeetable: serve (the default): status %d, want 200: %s", resp.StatusCode, body)
	}
}

// wantUnmeetable checks the answer to a request what, with an objective no
// endpoint is predicted to meet, refused by the unmeetable shed: 429
// model_overloaded, Retry-After 1, a message saying why whose objectives
// part begins with said.
func wantUnmeetable(t *testing.T, what string, resp *http.Response, body []byte, said string) {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("%s with an unmeetable objective: status %d, want 429: %s", what, resp.StatusCode, body)
	}
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("%s: Retry-After %q, want 1", what, ra)
	}
	if !strings.Contains(string(body), "no endpoint is predicted to meet the request's objectives ("+said) || !strings.Contains(string(body), `"code":"model_overloaded"`) {
		t.Errorf("%s: body does not say why (%q): %s", what, said, body)
	}
}

// TestAdmissionShedsAPDRequestNoPairCanServeInTime: with
// router.admission.unmeetable: shed, a disaggregated pool's request is
// refused when the planner's prefill cycle predicts no prefill endpoint
// meets its TTFT objective, or its decode cycle no decode endpoint meets
// its TPOT objective (the shipped prefill and decode presets): 429
// model_overloaded, Retry-After, counted as slo_unmeetable, and neither a
// prefill nor a decode request sent. A request whose objectives the pair
// meets is served, and under serve (the default) an unmeetable one is too.
func TestAdmissionShedsAPDRequestNoPairCanServeInTime(t *testing.T) {
	const (
		pdBlock = "{mode: nixl, prefillProfile: prefill, decodeProfile: decode}"
		tenants = "auth: {}\ntenants:\n  - name: team-a\n    apiKeys: [{sha256: \"%s\"}]\n"
		body    = `{"model":"m","prompt":"hello there","max_tokens":4}`
	)
	top := fmt.Sprintf(tenants, keySHA("key-a"))
	h := newPDHarnessWith(t, "  admission: {unmeetable: shed}\n", top, pdBlock, "p0", "d0")
	sent := func() int { return h.fakes["p0"].count() + h.fakes["d0"].count() }
	ctx := context.Background()
	for _, tc := range []struct{ side, ttft, tpot, said string }{
		// The prefill side checks the TTFT objective alone.
		{"prefill (TTFT)", "0.001", "60000", "ttft 0.001ms; least predicted ttft"},
		{"decode (TPOT)", "60000", "0.001", "ttft 60000ms, tpot 0.001ms; least predicted ttft"},
	} {
		resp, b := h.post(ctx, "/v1/completions", body, "Authorization", "Bearer key-a", "X-Halyard-Slo-Ttft-Ms", tc.ttft, "X-Halyard-Slo-Tpot-Ms", tc.tpot)
		wantUnmeetable(t, tc.side, resp, b, tc.said)
	}
	if n := sent(); n != 0 {
		t.Errorf("engines received %d requests of shed pairs", n)
	}
	if v := h.counter("halyard_admission_shed_total", "reason", "slo_unmeetable"); v != 2 {
		t.Errorf("halyard_admission_shed_total{reason=slo_unmeetable} = %v, want 2", v)
	}
	resp, b := h.post(ctx, "/v1/completions", body, "Authorization", "Bearer key-a", "X-Halyard-Slo-Ttft-Ms", "60000", "X-Halyard-Slo-Tpot-Ms", "60000")
	if resp.StatusCode != 200 {
		t.Fatalf("objectives the pair meets: status %d: %s", resp.StatusCode, b)
	}
	if p, d := h.fakes["p0"].count(), h.fakes["d0"].count(); p != 1 || d != 1 {
		t.Errorf("prefill %d and decode %d requests, want 1 and 1", p, d)
	}

	serve := newPDHarnessWith(t, "", top, pdBlock, "p0", "d0")
	resp, b = serve.post(ctx, "/v1/completions", body, "Authorization", "Bearer key-a", "X-Halyard-Slo-Ttft-Ms", "0.001")
	if resp.StatusCode != 200 {
		t.Fatalf("unmeetable: serve (the default): status %d, want 200: %s", resp.StatusCode, b)
	}
}
