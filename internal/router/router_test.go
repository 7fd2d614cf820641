package router

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const oneModel = `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {maxBodyBytes: 4096, maxAttempts: 3, health: {failureThreshold: 1, successThreshold: 1}}
endpoints:
  - {name: e0, url: "{{e0}}", model: llama}
  - {name: e1, url: "{{e1}}", model: llama}
routes:
  - {model: llama, targets: [{pool: llama}]}
`

func twoEngines() map[string]string { return map[string]string{"e0": "llama", "e1": "llama"} }

const chatBody = `{"model":"llama","messages":[{"role":"user","content":"hi"}],"max_tokens":3}`

func TestNonStreamingPassesBytesThrough(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	for _, tt := range []struct{ path, body string }{
		{"/v1/chat/completions", chatBody},
		{"/v1/completions", `{"model":"llama",  "prompt":"once upon a time", "max_tokens":3}`},
	} {
		t.Run(tt.path, func(t *testing.T) {
			resp, got := h.post(tt.path, tt.body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			var served *fakeEngine
			for _, e := range h.engines {
				if bodies, _ := e.received(); len(bodies) > 0 && string(bodies[len(bodies)-1]) == tt.body {
					served = e
				}
			}
			if served == nil {
				t.Fatal("no engine received the body byte for byte")
			}
			want := served.answer(strings.Contains(tt.path, "chat"), "llama")
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("response differs from the engine's (-engine +client):\n%s", diff)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("content type %q", resp.Header.Get("Content-Type"))
			}
			_, hdrs := served.received()
			if id := hdrs[len(hdrs)-1].Get("X-Request-Id"); id == "" {
				t.Error("engine got no X-Request-Id")
			}
		})
	}
}

// TestStreamFlushesEachChunk proves immediate flushing: the engine does not
// produce its second chunk until the client has read the first through the
// router.
func TestStreamFlushesEachChunkAndKeepsUsage(t *testing.T) {
	h := newHarness(t, oneModel, map[string]string{"e0": "llama", "e1": "llama"})
	for _, e := range h.engines {
		e.gate = make(chan struct{})
	}
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	var got strings.Builder
	readEvent := func() string {
		var ev strings.Builder
		for {
			line, err := rd.ReadString('\n')
			ev.WriteString(line)
			if err != nil || line == "\n" {
				got.WriteString(ev.String())
				return ev.String()
			}
		}
	}
	first := readEvent()
	if !strings.Contains(first, `"w0 "`) {
		t.Fatalf("first event %q", first)
	}
	for i := 1; i < 3; i++ {
		for _, e := range h.engines {
			select {
			case e.gate <- struct{}{}:
			default:
			}
		}
		// Exactly one engine waits on its gate; release it by a blocking
		// send to whichever serves this stream.
		ev := readEventAfterGate(t, h, readEvent)
		if !strings.Contains(ev, fmt.Sprintf(`"w%d "`, i)) {
			t.Fatalf("event %d = %q", i, ev)
		}
	}
	rest, _ := io.ReadAll(rd)
	got.Write(rest)
	if !strings.Contains(got.String(), `"usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3}`) || !strings.HasSuffix(got.String(), "data: [DONE]\n\n") {
		t.Errorf("stream lost the usage chunk or [DONE]:\n%s", got.String())
	}
	if !waitFor(func() bool {
		return metricValue(t, h, `halyard_router_tokens_total{kind="completion",model="llama"}`) == 3
	}) {
		t.Error("usage from the stream was not accounted in halyard_router_tokens_total")
	}
}

// readEventAfterGate reads the next event, opening the engines' gates
// until it comes. One deadline covers the whole wait, so a stalled stream
// fails the test after 10 s instead of hanging until the test binary's
// timeout.
func readEventAfterGate(t *testing.T, h *harness, read func() string) string {
	t.Helper()
	done := make(chan string, 1)
	go func() { done <- read() }()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case ev := <-done:
			return ev
		case <-tick.C:
			for _, e := range h.engines {
				select {
				case e.gate <- struct{}{}:
				default:
				}
			}
		case <-deadline.C:
			t.Fatal("no event within 10s")
		}
	}
}

func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

func metricValue(t *testing.T, h *harness, series string) float64 {
	t.Helper()
	_, b := h.get("/metrics")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, series+" ") {
			var v float64
			if _, err := fmt.Sscan(strings.TrimPrefix(line, series+" "), &v); err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return v
		}
	}
	return -1
}

func TestClientCancellationReachesEngine(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	for _, e := range h.engines {
		e.gate = make(chan struct{}) // never released: the stream stalls after one chunk
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	if !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q", line)
	}
	cancel()
	resp.Body.Close()
	select {
	case <-h.engines["e0"].canceled:
	case <-h.engines["e1"].canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the engine's request was not canceled within 10s of the client leaving")
	}
}

func TestErrorsAreOpenAIShaped(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	tests := []struct {
		name   string
		path   string
		body   string
		status int
		code   string
	}{
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}`, 404, "model_not_found"},
		{"malformed json", "/v1/chat/completions", `{"model":"llama",`, 400, "invalid_json"},
		{"wrong type", "/v1/completions", `{"model":"llama","prompt":{"a":1}}`, 400, "invalid_type"},
		{"missing messages", "/v1/chat/completions", `{"model":"llama"}`, 400, "missing_required_parameter"},
		{"huge body", "/v1/completions", `{"model":"llama","prompt":"` + strings.Repeat("x", 5000) + `"}`, 413, "request_too_large"},
		{"unknown path", "/v1/embeddings", `{}`, 404, "unknown_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, b := h.post(tt.path, tt.body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, b)
			}
			e := decodeError(t, b)
			if e.Error.Code == nil || *e.Error.Code != tt.code {
				t.Errorf("code = %v, want %q (%s)", e.Error.Code, tt.code, b)
			}
		})
	}
	resp, b := h.get("/v1/chat/completions")
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" || *decodeError(t, b).Error.Code != "method_not_allowed" {
		t.Errorf("GET /v1/chat/completions = %d %s", resp.StatusCode, b)
	}
	for _, e := range h.engines {
		if n := e.requests.Load(); n != 0 {
			t.Errorf("engine %s received %d requests for bad input", e.name, n)
		}
	}
}

func TestNoHealthyEndpointIs503(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	for _, e := range h.engines {
		e.metricsFail.Store(true)
	}
	h.r.collector.ScrapeOnce(context.Background())
	resp, b := h.post("/v1/chat/completions", chatBody)
	if resp.StatusCode != 503 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if e := decodeError(t, b); *e.Error.Code != "no_endpoint_available" {
		t.Errorf("code %q", *e.Error.Code)
	}
	if r, _ := h.get("/ready"); r.StatusCode != 503 {
		t.Errorf("/ready = %d with no healthy endpoint", r.StatusCode)
	}
}

func TestRetriesOnAnotherEndpoint(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(e *fakeEngine)
	}{
		{"5xx", func(e *fakeEngine) { e.status.Store(503) }},
		{"connection refused", func(e *fakeEngine) { e.srv.Close() }},
		{"dies before the first chunk", func(e *fakeEngine) { e.dieAfterChunks.Store(-1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, oneModel, twoEngines())
			tt.breakIt(h.engines["e0"])
			for i := range 6 {
				body := chatBody
				if tt.name == "dies before the first chunk" {
					body = `{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}`
				}
				resp, b := h.post("/v1/chat/completions", body)
				if resp.StatusCode != 200 {
					t.Fatalf("request %d: status %d: %s", i, resp.StatusCode, b)
				}
				if !strings.Contains(string(b), "e1") {
					t.Fatalf("request %d answered by the wrong engine: %s", i, b)
				}
			}
			// A refused dial takes the endpoint out (failureThreshold 1);
			// an engine answering 5xx or breaking a stream stays in.
			wantHealthy := tt.name != "connection refused"
			if got := h.r.store.Get("e0").Healthy(); got != wantHealthy {
				t.Errorf("e0 healthy = %v, want %v", got, wantHealthy)
			}
		})
	}
}

func TestAllEndpointsFailingGivesTheEnginesError(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	for _, e := range h.engines {
		e.status.Store(500)
	}
	resp, b := h.post("/v1/chat/completions", chatBody)
	if resp.StatusCode != 500 || !strings.Contains(string(b), "failed") {
		t.Fatalf("status %d body %s", resp.StatusCode, b)
	}
	// maxAttempts is 3 with two endpoints: e0, e1, then the other again —
	// never the same twice in a row.
	total := h.engines["e0"].requests.Load() + h.engines["e1"].requests.Load()
	if total != 3 {
		t.Errorf("engines saw %d attempts, want 3", total)
	}
	if d := h.engines["e0"].requests.Load() - h.engines["e1"].requests.Load(); d > 1 || d < -1 {
		t.Errorf("attempts not alternated: e0=%d e1=%d", h.engines["e0"].requests.Load(), h.engines["e1"].requests.Load())
	}
}

func TestEngineDyingMidStreamGetsAnErrorEvent(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	for _, e := range h.engines {
		e.dieAfterChunks.Store(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+"/v1/completions",
		strings.NewReader(`{"model":"llama","prompt":"x","stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("stream did not end cleanly: %v", err)
	}
	events := strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n\n")
	if len(events) != 3 {
		t.Fatalf("want 2 chunks and an error event, got %d events:\n%s", len(events), b)
	}
	last := strings.TrimPrefix(events[2], "data: ")
	var e apiError
	if err := json.Unmarshal([]byte(last), &e); err != nil || e.Error.Message == "" {
		t.Fatalf("last event is not an error: %q", events[2])
	}
	if total := h.engines["e0"].requests.Load() + h.engines["e1"].requests.Load(); total != 1 {
		t.Errorf("a stream that had started was retried: %d attempts", total)
	}
}

func TestModelsHealthReadyMetrics(t *testing.T) {
	h := newHarness(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints:
  - {name: e0, url: "{{e0}}", model: llama, adapters: [sql-lora]}
routes:
  - {model: llama, targets: [{pool: llama}]}
  - {model: sql, adapter: sql-lora, targets: [{pool: llama}]}
`, map[string]string{"e0": "llama"})
	_, b := h.get("/v1/models")
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	if list.Object != "list" || len(list.Data) != 2 || list.Data[0].ID != "llama" || list.Data[1].ID != "sql" {
		t.Errorf("models = %s", b)
	}
	if r, b := h.get("/health"); r.StatusCode != 200 {
		t.Errorf("/health = %d %s", r.StatusCode, b)
	}
	if r, b := h.get("/ready"); r.StatusCode != 200 {
		t.Errorf("/ready = %d %s", r.StatusCode, b)
	}
	h.post("/v1/chat/completions", chatBody)
	_, m := h.get("/metrics")
	for _, name := range []string{
		`halyard_router_requests_total{code="200",endpoint="e0",model="llama"} 1`,
		`halyard_router_endpoint_healthy{endpoint="e0",pool="llama"} 1`,
		"halyard_router_ttft_seconds_bucket", "halyard_router_e2e_seconds_bucket",
		`halyard_router_added_latency_seconds_bucket{stage="request"`, "halyard_router_scheduling_seconds_bucket",
		`halyard_router_picks_total{endpoint="e0",profile="default"} 1`,
		`halyard_router_tokens_total{kind="cached",model="llama"} 2`,
	} {
		if !strings.Contains(string(m), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func TestTimeouts(t *testing.T) {
	// Each case makes short only the timeout that its engines can never
	// meet (they stall until the test ends), so a slow machine can only
	// make a case slower, never fire a timeout on a healthy engine.
	doc := strings.Replace(oneModel, "router: {maxBodyBytes: 4096, maxAttempts: 3,", "router: {maxBodyBytes: 4096, maxAttempts: 2, timeouts: {streamIdle: 300ms, responseHeader: 300ms, firstByte: 300ms},", 1)
	retrying := strings.Replace(doc, "maxAttempts: 2,", "maxAttempts: 2, retryOnTimeout: true,", 1)
	// The first chunk is sent at once and the stream stalls after it: only
	// streamIdle is short.
	idle := strings.Replace(doc, "responseHeader: 300ms, firstByte: 300ms", "responseHeader: 10m, firstByte: 10m", 1)
	t.Run("stream idle", func(t *testing.T) {
		h := newHarness(t, idle, twoEngines())
		for _, e := range h.engines {
			e.gate = make(chan struct{}) // never released: silence after the first chunk
		}
		resp, b := h.post("/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}`)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		events := strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n\n")
		if len(events) != 2 || !strings.Contains(events[1], `"code":"upstream_timeout"`) || !strings.Contains(events[1], "sent nothing for 300ms") {
			t.Errorf("want one chunk and an idle error event, got:\n%s", b)
		}
	})
	for _, tt := range []struct {
		name, doc, body string
		attempts        int64
	}{
		// A stream's headers come at once: a hung engine, retried.
		{"stream headers", doc, `{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}`, 2},
		// A non-streamed answer may be a long generation the engine
		// admitted: not retried by default.
		{"first byte", doc, chatBody, 1},
		{"first byte with retryOnTimeout", retrying, chatBody, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.doc, twoEngines())
			release := make(chan struct{})
			defer close(release)
			for _, e := range h.engines {
				e.stall = release
			}
			resp, b := h.post("/v1/chat/completions", tt.body)
			if resp.StatusCode != 504 || decodeError(t, b).Error.Code == nil || *decodeError(t, b).Error.Code != "upstream_timeout" {
				t.Errorf("status %d: %s", resp.StatusCode, b)
			}
			if n := h.engines["e0"].requests.Load() + h.engines["e1"].requests.Load(); n != tt.attempts {
				t.Errorf("%d attempts, want %d", n, tt.attempts)
			}
		})
	}
}

func TestChunkedBodyOverLimitIs413(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write([]byte(`{"model":"llama","prompt":"`))
		_, _ = pw.Write([]byte(strings.Repeat("x", 5000)))
		_, _ = pw.Write([]byte(`"}`))
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/v1/completions", pr)
	req.ContentLength = -1 // chunked: the limit is found while reading
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || !strings.Contains(string(b), "request_too_large") {
		t.Errorf("status %d: %s", resp.StatusCode, b)
	}
}

// TestServeStopsWithinGrace starts Serve on a real listener with a stream
// that never ends, cancels, and expects Serve to return (cutting the stream)
// soon after the grace period.
func TestServeStopsWithinGrace(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	for _, e := range h.engines {
		e.gate = make(chan struct{}) // streams stall after one chunk
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.r.Serve(ctx, ln, 200*time.Millisecond) }()
	resp, err := http.Post("http://"+ln.Addr().String()+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q", line)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of cancel with a 200ms grace")
	}
	// The cut stream ends with an error event saying why.
	if rest, _ := io.ReadAll(br); !strings.Contains(string(rest), `"code":"shutting_down"`) {
		t.Errorf("the cut stream ended without a shutting_down error event: %q", rest)
	}
}
