package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestDeclaredBodyLengthIsNotAllocated sends many requests that declare a
// body of almost 16 MiB and send one byte of it. The router must allocate
// with the bytes that arrive, not the declared length, and give up on the
// body after timeouts.requestBody with a 408.
func TestDeclaredBodyLengthIsNotAllocated(t *testing.T) {
	const conns, declared = 24, 16777000
	doc := strings.Replace(oneModel, "router: {maxBodyBytes: 4096,", "router: {maxBodyBytes: 16777216, timeouts: {requestBody: 500ms},", 1)
	h := newHarness(t, doc, twoEngines())
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	results := make(chan string, conns)
	for range conns {
		go func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				results <- err.Error()
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", declared)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	for range conns {
		if got := <-results; !strings.HasPrefix(got, "408 ") || !strings.Contains(got, `"code":"request_timeout"`) {
			t.Errorf("answer %q, want a 408 request_timeout", got)
		}
	}
	runtime.ReadMemStats(&after)
	// Allocating the declared length would be conns*16 MiB = 384 MiB.
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 64<<20 {
		t.Errorf("the router allocated %d MiB for %d one-byte bodies", grown>>20, conns)
	}
}

func TestReadGrowing(t *testing.T) {
	body := strings.Repeat("x", 100<<10)
	for _, tt := range []struct {
		name     string
		sent     string
		declared int64
		want     int
		err      bool
	}{
		{"declared", body, int64(len(body)), len(body), false},
		{"unknown length", body, -1, len(body), false},
		{"shorter than declared", body, int64(len(body)) + 1, 0, true},
		{"empty", "", 0, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readGrowing(strings.NewReader(tt.sent), tt.declared, 1<<20, nil, nil)
			if (err != nil) != tt.err {
				t.Fatalf("err %v", err)
			}
			if len(got) != tt.want {
				t.Errorf("read %d bytes, want %d", len(got), tt.want)
			}
		})
	}
}

// TestNonStreamedBodyStallIs504: an engine that sends part of a
// non-streamed answer and stalls makes a 504 after timeouts.streamIdle.
func TestNonStreamedBodyStallIs504(t *testing.T) {
	doc := strings.Replace(oneModel, "router: {maxBodyBytes: 4096, maxAttempts: 3,", "router: {maxBodyBytes: 4096, maxAttempts: 1, timeouts: {streamIdle: 300ms},", 1)
	h := newHarness(t, doc, twoEngines())
	for _, e := range h.engines {
		e.partialBody.Store(true)
	}
	done := make(chan struct{})
	var resp *http.Response
	var b []byte
	go func() {
		defer close(done)
		resp, b = h.post("/v1/chat/completions", chatBody)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("no answer within 20s with a 300ms streamIdle")
	}
	if resp.StatusCode != 504 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if e := decodeError(t, b); e.Error.Code == nil || *e.Error.Code != "upstream_timeout" {
		t.Errorf("error %s", b)
	}
}

// TestStreamClosedAfterDoneIsComplete: a client that closes its connection
// right after "data: [DONE]" had a complete answer: counted as a 200 with
// its usage, not as a cancellation.
func TestStreamClosedAfterDoneIsComplete(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	for _, e := range h.engines {
		e.holdAfterDone.Store(true) // the router sees no end of stream before the client leaves
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != "data: [DONE]" {
	}
	c.Close()
	ok := waitFor(func() bool {
		return max(0, metricValue(t, h, `halyard_router_requests_total{code="200",endpoint="e0",model="llama"}`))+
			max(0, metricValue(t, h, `halyard_router_requests_total{code="200",endpoint="e1",model="llama"}`)) == 1
	})
	if !ok {
		_, m := h.get("/metrics")
		t.Fatalf("the stream was not counted as a 200:\n%s", grepLines(string(m), "halyard_router_requests_total"))
	}
	if v := metricValue(t, h, `halyard_router_tokens_total{kind="completion",model="llama"}`); v != 3 {
		t.Errorf("completion tokens counted %v, want 3", v)
	}
	if v := metricValue(t, h, `halyard_router_request_errors_total{cause="client_canceled",model="llama"}`); v > 0 {
		t.Errorf("counted as a cancellation")
	}
}

func TestEndpointHeader(t *testing.T) {
	stream := `{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}`
	t.Run("on by default", func(t *testing.T) {
		h := newHarness(t, oneModel, twoEngines())
		for _, body := range []string{chatBody, stream} {
			resp, b := h.post("/v1/chat/completions", body)
			if got := resp.Header.Get(HeaderEndpoint); got != "e0" && got != "e1" {
				t.Errorf("%s: X-Halyard-Endpoint %q (status %d %s)", body, got, resp.StatusCode, b)
			}
		}
	})
	t.Run("off", func(t *testing.T) {
		doc := strings.Replace(oneModel, "router: {", "router: {debug: {endpointHeader: false, explain: false}, ", 1)
		h := newHarness(t, doc, twoEngines())
		resp, _ := h.post("/v1/chat/completions", chatBody, HeaderExplain, "1")
		if resp.Header.Get(HeaderEndpoint) != "" || resp.Header.Get(HeaderRoute) != "" {
			t.Errorf("headers set while off: %v", resp.Header)
		}
		if resp, b := h.get("/debug/route?model=llama&prompt=hi"); resp.StatusCode != 200 {
			t.Errorf("/debug/route on the admin listener with explain off: %d %s", resp.StatusCode, b)
		}
	})
}

// TestHealthProbe: an engine whose /health is not 200 (vLLM while loading,
// the simulator's --ready-delay or unhealthy fault) starts out of rotation,
// leaves it when it turns unhealthy and comes back when it recovers.
func TestHealthProbe(t *testing.T) {
	h := newHarnessWith(t, oneModel, twoEngines(), func(es map[string]*fakeEngine) {
		es["e0"].healthStatus.Store(http.StatusServiceUnavailable) // still loading
	})
	ctx := context.Background()
	served := func() (e0, e1 int64) {
		t.Helper()
		for range 4 {
			if resp, b := h.post("/v1/chat/completions", chatBody); resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
		}
		return h.engines["e0"].requests.Swap(0), h.engines["e1"].requests.Swap(0)
	}
	// On ties the test picker takes e0, so e0 serving nothing shows it is
	// out of rotation.
	if e0, _ := served(); e0 != 0 {
		t.Errorf("a new endpoint whose /health is 503 got %d requests", e0)
	}
	h.engines["e0"].healthStatus.Store(0)
	h.r.collector.ScrapeOnce(ctx)
	if e0, _ := served(); e0 == 0 {
		t.Error("the endpoint did not enter rotation once /health was 200")
	}
	for _, e := range h.engines {
		e.healthStatus.Store(http.StatusServiceUnavailable)
	}
	h.r.collector.ScrapeOnce(ctx)
	if resp, b := h.get("/ready"); resp.StatusCode != 503 {
		t.Errorf("/ready = %d %s with every /health 503", resp.StatusCode, b)
	}
	if resp, b := h.post("/v1/chat/completions", chatBody); resp.StatusCode != 503 {
		t.Errorf("request with every endpoint unhealthy: %d %s", resp.StatusCode, b)
	}
	h.engines["e0"].healthStatus.Store(0)
	h.r.collector.ScrapeOnce(ctx)
	if resp, b := h.get("/ready"); resp.StatusCode != 200 {
		t.Errorf("/ready = %d %s after e0 recovered", resp.StatusCode, b)
	}

	t.Run("path none", func(t *testing.T) {
		doc := strings.Replace(oneModel, "health: {", "health: {path: none, ", 1)
		h := newHarnessWith(t, doc, twoEngines(), func(es map[string]*fakeEngine) {
			for _, e := range es {
				e.healthStatus.Store(http.StatusServiceUnavailable)
			}
		})
		if resp, b := h.get("/ready"); resp.StatusCode != 200 {
			t.Errorf("/ready = %d %s with probing off", resp.StatusCode, b)
		}
	})
}

// TestReadyUsesTheCandidateFilter: /ready is false when endpoints are
// healthy but none can serve a route (wrong role, adapter not listed), and
// true once one can.
func TestReadyUsesTheCandidateFilter(t *testing.T) {
	for _, tt := range []struct {
		name, endpoints, routes string
		ready                   bool
	}{
		{"prefill role only", `  - {name: e0, url: "{{e0}}", model: llama, role: prefill}`, `  - {model: llama, targets: [{pool: llama}]}`, false},
		{"adapter not listed", `  - {name: e0, url: "{{e0}}", model: llama}`, `  - {model: sql, adapter: sql-lora, targets: [{pool: llama}]}`, false},
		{"adapter listed", `  - {name: e0, url: "{{e0}}", model: llama, adapters: [sql-lora]}`, `  - {model: sql, adapter: sql-lora, targets: [{pool: llama}]}`, true},
		{"fallback can serve", `  - {name: e0, url: "{{e0}}", model: llama, role: prefill}
  - {name: e1, url: "{{e1}}", model: llama, pool: spare}`, `  - {model: llama, targets: [{pool: llama}], fallback: [{pool: spare}]}`, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			doc := "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter: {health: {failureThreshold: 1, successThreshold: 1}}\nendpoints:\n" +
				tt.endpoints + "\nroutes:\n" + tt.routes + "\n"
			h := newHarness(t, doc, twoEngines())
			resp, b := h.get("/ready")
			if got := resp.StatusCode == 200; got != tt.ready {
				t.Errorf("/ready = %d %s, want ready=%v", resp.StatusCode, b, tt.ready)
			}
			model := "llama"
			if strings.Contains(tt.routes, "sql") {
				model = "sql"
			}
			// The request path agrees.
			resp, b = h.post("/v1/chat/completions", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
			if got := resp.StatusCode == 200; got != tt.ready {
				t.Errorf("request = %d %s, want served=%v", resp.StatusCode, b, tt.ready)
			}
		})
	}
}

func TestMethodsPathsAndDebugKind(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	do := func(method, path, body string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
		resp, err := http.DefaultTransport.RoundTrip(req) // no redirect following
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	for _, tt := range []struct {
		method, path, body string
		status             int
		code               string
	}{
		// Admin paths are not on the public listener.
		{http.MethodPost, "/debug/route", `{"model":"llama","prompt":"hi"}`, 404, "unknown_url"},
		{http.MethodGet, "/metrics", "", 404, "unknown_url"},
		{http.MethodGet, "/debug/pprof/", "", 404, "unknown_url"},
		{http.MethodPost, "/ready", "", 405, "method_not_allowed"},
		{http.MethodDelete, "/health", "", 405, "method_not_allowed"},
		{http.MethodPost, "//v1/chat/completions", chatBody, 200, ""},
		{http.MethodGet, "/nope", "", 404, "unknown_url"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, b := do(tt.method, tt.path, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			if tt.code != "" {
				if e := decodeError(t, b); e.Error.Code == nil || *e.Error.Code != tt.code {
					t.Errorf("error %s, want code %s", b, tt.code)
				}
			}
			if tt.status == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

// BenchmarkReadGrowing reads a 4 MiB body of declared length, as a
// 1M-token text prompt arrives.
func BenchmarkReadGrowing(b *testing.B) {
	body := []byte(strings.Repeat("x", 4<<20))
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := readGrowing(bytes.NewReader(body), int64(len(body)), 16<<20, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}
