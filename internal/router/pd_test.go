package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

// pdFake is an engine for PD tests: a prefill answers with
// kv_transfer_params (or whatever answer says), a decode answers like an
// engine and records what it was sent.
type pdFake struct {
	name string
	srv  *httptest.Server

	mu      sync.Mutex
	bodies  []map[string]json.RawMessage
	raw     [][]byte
	headers []http.Header

	// answer, when set, writes the response; the default answers a
	// prefill with defaultKV and anything else with a completion.
	answer func(w http.ResponseWriter, r *http.Request, body map[string]json.RawMessage)
	// stall holds requests until closed or canceled.
	stall    chan struct{}
	canceled atomic.Int32
}

const defaultKV = `{"do_remote_prefill": true,"do_remote_decode":false,"remote_block_ids":[3, 4],"remote_engine_id":"eng-%s","remote_request_id":"cmpl-9","remote_host":"10.0.0.9","remote_port":5600,"tp_size":1,"x_future":{"a":[1,2.50]}}`

func newPDFake(t testing.TB, name string) *pdFake {
	f := &pdFake{name: name}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *pdFake) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" {
		return
	}
	if r.URL.Path == "/metrics" {
		fmt.Fprint(w, "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\nvllm:kv_cache_usage_perc 0.1\n")
		return
	}
	raw, _ := io.ReadAll(r.Body)
	var body map[string]json.RawMessage
	_ = json.Unmarshal(raw, &body)
	f.mu.Lock()
	f.bodies = append(f.bodies, body)
	f.raw = append(f.raw, raw)
	f.headers = append(f.headers, r.Header.Clone())
	f.mu.Unlock()
	if f.stall != nil {
		select {
		case <-f.stall:
		case <-r.Context().Done():
			f.canceled.Add(1)
			return
		}
	}
	if f.answer != nil {
		f.answer(w, r, body)
		return
	}
	if kv, ok := body["kv_transfer_params"]; ok && bytes.Contains(kv, []byte(`"do_remote_decode":true`)) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"cmpl-p","object":"text_completion","choices":[{"index":0,"text":"x","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6},"kv_transfer_params":`+defaultKV+`}`, f.name)
		return
	}
	completion(w, f.name, string(body["stream"]) == "true")
}

// completion writes a 3-token completion, streamed with usage or not.
func completion(w http.ResponseWriter, name string, stream bool) {
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"cmpl-%s","object":"text_completion","choices":[{"index":0,"text":"from %s","finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`, name, name)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for i := range 3 {
		fmt.Fprintf(w, `data: {"id":"cmpl-%s","object":"text_completion","choices":[{"index":0,"text":"w%d ","finish_reason":null}]}`+"\n\n", name, i)
		w.(http.Flusher).Flush()
	}
	fmt.Fprint(w, `data: {"id":"x","object":"text_completion","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`+"\n\ndata: [DONE]\n\n")
}

func (f *pdFake) requests() []map[string]json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]json.RawMessage(nil), f.bodies...)
}

func (f *pdFake) count() int { return len(f.requests()) }

// pdHarness is a router with one PD pool of fake engines, on a real socket.
type pdHarness struct {
	t     testing.TB
	r     *Router
	srv   *httptest.Server
	fakes map[string]*pdFake
}

// newPDHarness builds a pool "m" of the named fakes (names starting with p
// are prefill, d decode) with the given pd block (YAML flow mapping).
func newPDHarness(t testing.TB, pdBlock string, names ...string) *pdHarness {
	t.Helper()
	return newPDHarnessWith(t, "", "", pdBlock, names...)
}

// newPDHarnessWith is newPDHarness with lines added under router: (each
// indented two spaces) and top-level YAML appended (auth, tenants).
func newPDHarnessWith(t testing.TB, routerLines, top, pdBlock string, names ...string) *pdHarness {
	t.Helper()
	if !strings.Contains(pdBlock, "Profile") {
		// These tests steer the pair with the endpoints' in-flight counts,
		// which the v1 presets read (queue depth, running requests); the
		// shipped presets pick by predicted latency.
		pdBlock = strings.Replace(pdBlock, "{", "{prefillProfile: prefill-v1, decodeProfile: decode-v1, ", 1)
	}
	h := &pdHarness{t: t, fakes: map[string]*pdFake{}}
	var eps strings.Builder
	for _, n := range names {
		f := newPDFake(t, n)
		h.fakes[n] = f
		role := "decode"
		if n[0] == 'p' {
			role = "prefill"
		}
		u, _ := url.Parse(f.srv.URL)
		fmt.Fprintf(&eps, "  - {name: %s, url: %q, model: m, role: %s, labels: {zone: z%c, halyard.dev/bootstrap-port: %q}}\n", n, f.srv.URL, role, n[len(n)-1], u.Port())
	}
	doc := "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter:\n" + routerLines + "  profiles:\n" +
		"    dec: {scorers: [{type: prefix-cache, weight: 2}, {type: kv-utilization}], picker: {type: max-score, params: {seed: 1}}}\n" +
		"endpoints:\n" + eps.String() +
		"routes:\n  - {model: m, targets: [{pool: m}]}\npools:\n  - name: m\n    pd: " + pdBlock + "\n" + top
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	decisionHeadersOn(cfg)
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{Config: cfg, Registry: reg, PresetProfiles: presets.Specs(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h.r = r
	r.store.Sync(discovery.Specs(cfg.Endpoints))
	r.collector.ScrapeOnce(context.Background())
	h.srv = httptest.NewServer(publicAndAdmin(r))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *pdHarness) post(ctx context.Context, path, body string, headers ...string) (*http.Response, []byte) {
	h.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// counter returns the value of the counter name whose labels include the
// given name/value pairs, 0 when there is none.
func (h *pdHarness) counter(name string, pairs ...string) float64 {
	h.t.Helper()
	fams, err := h.r.Metrics().Registry.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(pairs); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == pairs[i] && l.GetValue() == pairs[i+1])
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestPDNixlExchange(t *testing.T) {
	h := newPDHarness(t, "{mode: nixl, decodeProfile: dec}", "p0", "d0")
	const body = `{"model":"m","messages":[{"role":"user","content":"hello there"}],"stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":50,"temperature":0.5}`
	resp, b := h.post(context.Background(), "/v1/chat/completions", body, "X-Request-Id", "rid-1", HeaderExplain, "1")
	if resp == nil || resp.StatusCode != 200 || !strings.Contains(string(b), "w2") || !strings.Contains(string(b), "[DONE]") {
		t.Fatalf("answer: %v %s", resp, b)
	}
	// The prefill request: the client's with stream false, one token, no
	// stream_options and the NixlConnector's opening params.
	pre := h.fakes["p0"].requests()
	if len(pre) != 1 {
		t.Fatalf("prefill requests: %d", len(pre))
	}
	want := map[string]string{
		"model": `"m"`, "stream": `false`, "max_tokens": `1`, "max_completion_tokens": `1`, "temperature": `0.5`,
		"messages":           `[{"role":"user","content":"hello there"}]`,
		"kv_transfer_params": `{"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}`,
	}
	got := map[string]string{}
	for k, v := range pre[0] {
		got[k] = string(v)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("prefill body (-want +got):\n%s", diff)
	}
	// The router's own id, not the client's, goes to both engines.
	rid := h.fakes["p0"].headers[0].Get("X-Request-Id")
	if rid == "" || rid == "rid-1" {
		t.Errorf("prefill X-Request-Id %q, want the router's own", rid)
	}
	// The decode request: the client's body with the prefill's params,
	// byte for byte.
	dec := h.fakes["d0"]
	if dec.count() != 1 {
		t.Fatalf("decode requests: %d", dec.count())
	}
	kv, ok, err := openai.TopLevel(dec.raw[0], "kv_transfer_params")
	if err != nil || !ok || string(kv) != fmt.Sprintf(defaultKV, "p0") {
		t.Errorf("decode kv_transfer_params = %s, want the prefill's unchanged", kv)
	}
	patched, _ := openai.Patch{Set: []openai.Member{{Key: "kv_transfer_params", Value: kv}}}.Apply([]byte(body))
	if !bytes.Equal(dec.raw[0], patched) {
		t.Errorf("decode body\n%s\nwant the client's with the params\n%s", dec.raw[0], patched)
	}
	if id := dec.headers[0].Get("X-Request-Id"); id != rid {
		t.Errorf("decode X-Request-Id %q, want the prefill's %q", id, rid)
	}
	route := resp.Header.Get(HeaderRoute)
	for _, part := range []string{"pd=nixl", "prefill=p0", "picked=d0", "decode-first=no(held=0.00<0.80)", "profiles=prefill/dec"} {
		if !strings.Contains(route, part) {
			t.Errorf("explanation %q lacks %q", route, part)
		}
	}
	if n := h.counter("halyard_router_pd_pairs_total", "mode", "nixl", "topology", "none"); n != 1 {
		t.Errorf("pairs{none} = %v", n)
	}
	if n := h.counter("halyard_router_tokens_total", "kind", "completion"); n != 3 {
		t.Errorf("completion tokens counted %v, want the decode's 3", n)
	}
}

func TestPDDecodeFirst(t *testing.T) {
	h := newPDHarness(t, "{mode: nixl, decodeProfile: dec}", "p0", "d0", "d1")
	body := `{"model":"m","prompt":"` + strings.Repeat("a long shared prompt ", 40) + `","max_tokens":5}`
	for i := range 2 {
		resp, b := h.post(context.Background(), "/v1/completions", body, HeaderExplain, "1")
		if resp == nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: %v %s", i, resp, b)
		}
		route := resp.Header.Get(HeaderRoute)
		if i == 1 && (!strings.Contains(route, "decode-first=skip(prefix_held held=1.00)") || !strings.Contains(route, "prefill=none")) {
			t.Errorf("second request's explanation %q", route)
		}
	}
	if n := h.fakes["p0"].count(); n != 1 {
		t.Errorf("prefill requests %d, want 1 (the repeat skips it)", n)
	}
	d0, d1 := h.fakes["d0"].requests(), h.fakes["d1"].requests()
	all := append(d0, d1...)
	if len(all) != 2 || len(d0)*len(d1) != 0 {
		t.Fatalf("decode requests d0=%d d1=%d, want both on one", len(d0), len(d1))
	}
	if _, ok := all[1]["kv_transfer_params"]; ok {
		t.Error("the decode-first request carries kv_transfer_params")
	}
	if n := h.counter("halyard_router_pd_decode_first_total", "reason", "prefix_held"); n != 1 {
		t.Errorf("decode_first{prefix_held} = %v", n)
	}
}

// badPrefill answers a prefill with body.
func badPrefill(status int, body string) func(http.ResponseWriter, *http.Request, map[string]json.RawMessage) {
	return func(w http.ResponseWriter, _ *http.Request, _ map[string]json.RawMessage) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}

func TestPDPrefillFailures(t *testing.T) {
	noParams := `{"id":"x","object":"text_completion","choices":[{"text":"x"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`
	tests := []struct {
		name      string
		pd        string
		p0, p1    func(http.ResponseWriter, *http.Request, map[string]json.RawMessage)
		status    int
		code      string
		msg       string
		decodeKV  bool // the decode request carries kv_transfer_params
		retries   string
		fallbacks float64
	}{
		{name: "p0 500, p1 serves", pd: "{mode: nixl}", p0: badPrefill(500, `{"error":"boom"}`), status: 200, decodeKV: true, retries: "status"},
		{name: "p0 without params, p1 serves", pd: "{mode: nixl}", p0: badPrefill(200, noParams), status: 200, decodeKV: true, retries: "bad_response"},
		{name: "both without params", pd: "{mode: nixl}", p0: badPrefill(200, noParams), p1: badPrefill(200, noParams), status: 502, code: "prefill_failed",
			msg: "has no kv_transfer_params", retries: "bad_response"},
		{name: "mismatched params", pd: "{mode: nixl, maxPrefillAttempts: 1}", p0: badPrefill(200, `{"kv_transfer_params":{"do_remote_prefill":false}}`),
			p1: badPrefill(200, `{"kv_transfer_params":{"do_remote_prefill":false}}`), status: 502, code: "prefill_failed", msg: "do not ask the decode side for a remote prefill"},
		{name: "not a producer", pd: "{mode: nixl}", p0: badPrefill(400, `{"error":{"message":"role is decode","param":"kv_transfer_params"}}`),
			p1: badPrefill(400, `{"error":{"message":"role is decode","param":"kv_transfer_params"}}`), status: 502, code: "prefill_failed", msg: "rejected", retries: "rejected"},
		{name: "the client's own 400 passes through", pd: "{mode: nixl}", p0: badPrefill(400, `{"error":{"message":"too long","param":null}}`),
			p1: badPrefill(400, `{"error":{"message":"too long","param":null}}`), status: 400, msg: "too long"},
		{name: "all fail, local fallback", pd: "{mode: nixl, fallbackToLocalPrefill: true}", p0: badPrefill(500, `{}`), p1: badPrefill(503, `{}`),
			status: 200, decodeKV: false, retries: "status", fallbacks: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newPDHarness(t, tt.pd, "p0", "p1", "d0")
			// p0 is picked first: p1 gets a queue.
			h.fakes["p0"].answer, h.fakes["p1"].answer = tt.p0, tt.p1
			h.r.store.Get("p1").Begin(1)
			defer h.r.store.Get("p1").End(1)
			resp, b := h.post(context.Background(), "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3}`)
			if resp == nil || resp.StatusCode != tt.status {
				t.Fatalf("status: %v %s", resp, b)
			}
			if tt.code != "" {
				e := decodeError(t, b)
				if e.Error.Code == nil || *e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.msg) {
					t.Errorf("error %+v, want code %s with %q", e.Error, tt.code, tt.msg)
				}
			} else if !strings.Contains(string(b), tt.msg) {
				t.Errorf("body %s lacks %q", b, tt.msg)
			}
			dec := h.fakes["d0"].requests()
			if tt.status == 200 {
				if len(dec) != 1 {
					t.Fatalf("decode requests %d", len(dec))
				}
				if _, has := dec[0]["kv_transfer_params"]; has != tt.decodeKV {
					t.Errorf("decode kv_transfer_params present = %v, want %v", has, tt.decodeKV)
				}
			} else if len(dec) != 0 {
				t.Errorf("the decode endpoint got %d requests after failed prefills", len(dec))
			}
			if tt.retries != "" {
				if n := h.counter("halyard_router_pd_prefill_retries_total", "reason", tt.retries); n != 1 {
					t.Errorf("prefill_retries{%s} = %v", tt.retries, n)
				}
			}
			if n := h.counter("halyard_router_pd_local_prefill_fallbacks_total", "reason", "prefill_failed"); n != tt.fallbacks {
				t.Errorf("fallbacks = %v, want %v", n, tt.fallbacks)
			}
		})
	}
}

func TestPDPrefillTimeout(t *testing.T) {
	h := newPDHarness(t, "{mode: nixl, prefillTimeout: 200ms}", "p0", "p1", "d0")
	h.fakes["p0"].stall = make(chan struct{})
	h.fakes["p1"].stall = make(chan struct{})
	start := time.Now()
	resp, b := h.post(context.Background(), "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3}`)
	if resp == nil || resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status: %v %s", resp, b)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v", d)
	}
	if e := decodeError(t, b); !strings.Contains(e.Error.Message, "did not answer in time") {
		t.Errorf("message %q", e.Error.Message)
	}
	if !waitFor(func() bool { return h.fakes["p0"].canceled.Load()+h.fakes["p1"].canceled.Load() == 2 }) {
		t.Error("the two prefill requests were not both canceled")
	}
	if n := h.counter("halyard_router_pd_prefill_retries_total", "reason", "timeout"); n != 1 {
		t.Errorf("retries{timeout} = %v", n)
	}
}

func TestPDTransferRefused(t *testing.T) {
	h := newPDHarness(t, "{mode: nixl}", "p0", "p1", "d0")
	h.fakes["d0"].answer = badPrefill(400, `{"error":{"message":"kv_transfer_params name no live KV blocks","type":"BadRequestError","param":"kv_transfer_params","code":400}}`)
	resp, b := h.post(context.Background(), "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3}`)
	if resp == nil || resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status: %v %s", resp, b)
	}
	e := decodeError(t, b)
	if e.Error.Code == nil || *e.Error.Code != "kv_transfer_failed" || !strings.Contains(e.Error.Message, "no live KV blocks") {
		t.Errorf("error %+v", e.Error)
	}
	if a, b := h.fakes["p0"].count(), h.fakes["p1"].count(); a != 1 || b != 1 {
		t.Errorf("prefills p0=%d p1=%d, want one each", a, b)
	}
}

func TestPDClientCancelReachesPrefill(t *testing.T) {
	h := newPDHarness(t, "{mode: nixl}", "p0", "d0")
	h.fakes["p0"].stall = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.post(ctx, "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3}`)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for h.fakes["p0"].count() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	for h.fakes["p0"].canceled.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if h.fakes["p0"].canceled.Load() != 1 {
		t.Error("the prefill request was not canceled when the client left")
	}
	if h.fakes["d0"].count() != 0 {
		t.Error("a decode request was sent for a client that left")
	}
}

func TestPDSGLang(t *testing.T) {
	h := newPDHarness(t, "{mode: sglang}", "p0", "p1", "d0")
	// p0 fails; the decode endpoint waits for its room until canceled.
	h.fakes["p0"].answer = badPrefill(500, `{}`)
	var rooms sync.Map
	h.fakes["d0"].answer = func(w http.ResponseWriter, r *http.Request, body map[string]json.RawMessage) {
		room := string(body["bootstrap_room"])
		// Answer only once the room's prefill has arrived at p1.
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if _, ok := rooms.Load(room); ok {
				completion(w, "d0", string(body["stream"]) == "true")
				return
			}
			select {
			case <-r.Context().Done():
				h.fakes["d0"].canceled.Add(1)
				return
			case <-time.After(time.Millisecond):
			}
		}
		badPrefill(400, `{"error":{"message":"timeout","param":"bootstrap_room"}}`)(w, r, body)
	}
	h.fakes["p1"].answer = func(w http.ResponseWriter, _ *http.Request, body map[string]json.RawMessage) {
		rooms.Store(string(body["bootstrap_room"]), true)
		completion(w, "p1", false)
	}
	h.r.store.Get("p1").Begin(1) // p0 is picked first
	defer h.r.store.Get("p1").End(1)
	resp, b := h.post(context.Background(), "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3,"stream":true}`, HeaderExplain, "1")
	if resp == nil || resp.StatusCode != 200 || !strings.Contains(string(b), "w2") {
		t.Fatalf("answer: %v %s", resp, b)
	}
	p0, p1, d0 := h.fakes["p0"].requests(), h.fakes["p1"].requests(), h.fakes["d0"].requests()
	// The decode request of p0's room may be canceled before it reaches d0.
	if len(p0) != 1 || len(p1) != 1 || len(d0) < 1 || len(d0) > 2 {
		t.Fatalf("requests p0=%d p1=%d d0=%d", len(p0), len(p1), len(d0))
	}
	pairs := [][2]map[string]json.RawMessage{{p1[0], d0[len(d0)-1]}}
	if len(d0) == 2 {
		pairs = append(pairs, [2]map[string]json.RawMessage{p0[0], d0[0]})
		if string(d0[0]["bootstrap_room"]) == string(d0[1]["bootstrap_room"]) {
			t.Error("the retry reused the room")
		}
		deadline := time.Now().Add(10 * time.Second)
		for h.fakes["d0"].canceled.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if h.fakes["d0"].canceled.Load() != 1 {
			t.Errorf("the decode waiting on the failed prefill's room was not canceled")
		}
	}
	for i, pair := range pairs {
		pre, dec := pair[0], pair[1]
		u, _ := url.Parse(h.fakes[[]string{"p1", "p0"}[i]].srv.URL)
		for _, k := range []string{"bootstrap_host", "bootstrap_port", "bootstrap_room"} {
			if string(pre[k]) != string(dec[k]) {
				t.Errorf("pair %d: %s differs: %s vs %s", i, k, pre[k], dec[k])
			}
		}
		if string(pre["bootstrap_host"]) != `"`+u.Hostname()+`"` || string(pre["bootstrap_port"]) != u.Port() {
			t.Errorf("pair %d: bootstrap %s:%s, want %s", i, pre["bootstrap_host"], pre["bootstrap_port"], u.Host)
		}
		if string(pre["stream"]) != "true" {
			t.Errorf("pair %d: the prefill did not get the client's body", i)
		}
	}
	if string(p0[0]["bootstrap_room"]) == string(p1[0]["bootstrap_room"]) {
		t.Error("the retry reused the room")
	}
	if n := h.counter("halyard_router_pd_prefill_retries_total", "reason", "status"); n != 1 {
		t.Errorf("retries{status} = %v", n)
	}
	if route := resp.Header.Get(HeaderRoute); !strings.Contains(route, "pd=sglang") || !strings.Contains(route, "prefill=p1") || !strings.Contains(route, "prefill-attempts=2") {
		t.Errorf("explanation %q", route)
	}
}

func TestPDDebugRoute(t *testing.T) {
	h := newPDHarness(t, "{mode: nixl, topologyKey: zone}", "p0", "d0")
	resp, b := h.post(context.Background(), "/debug/route", `{"model":"m","prompt":"hello"}`)
	if resp == nil || resp.StatusCode != 200 {
		t.Fatalf("%v %s", resp, b)
	}
	var out RouteExplanation
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.PD == nil || out.PD.Mode != "nixl" || out.PD.Decode != "d0" || out.PD.Prefill != "p0" || out.Picked != "d0" ||
		out.PD.Topology != "same" || !out.PD.DecodeFirst.Enabled || out.PD.PrefillExplanation == nil {
		t.Errorf("explanation %s", b)
	}
	if h.fakes["p0"].count()+h.fakes["d0"].count() != 0 {
		t.Error("/debug/route sent a request")
	}
}

func TestPDSGLangClientCancelReachesBoth(t *testing.T) {
	h := newPDHarness(t, "{mode: sglang}", "p0", "d0")
	h.fakes["p0"].stall = make(chan struct{})
	h.fakes["d0"].stall = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.post(ctx, "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3,"stream":true}`)
	}()
	if !waitFor(func() bool { return h.fakes["p0"].count() == 1 && h.fakes["d0"].count() == 1 }) {
		t.Fatal("the pair was not sent")
	}
	cancel()
	<-done
	if !waitFor(func() bool { return h.fakes["p0"].canceled.Load() == 1 && h.fakes["d0"].canceled.Load() == 1 }) {
		t.Errorf("canceled: prefill %d, decode %d; want both", h.fakes["p0"].canceled.Load(), h.fakes["d0"].canceled.Load())
	}
}

func TestPDConfigNamesUnknownProfile(t *testing.T) {
	cfg, err := config.Parse([]byte(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints:
  - {name: p0, url: "http://127.0.0.1:1", model: m, role: prefill}
  - {name: d0, url: "http://127.0.0.1:2", model: m, role: decode}
routes: [{model: m, targets: [{pool: m}]}]
pools: [{name: m, pd: {mode: nixl, decodeProfile: nope}}]
`))
	if err != nil {
		t.Fatal(err)
	}
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	_, err = New(Options{Config: cfg, Registry: reg, PresetProfiles: presets.Specs(), Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), `pools[m].pd.decodeProfile: "nope"`) {
		t.Errorf("error = %v", err)
	}
}

// A prefill engine that answers 500 while its /health passes is ejected
// after router.health.outlier.consecutive5xx answers and then gets no
// prefills; every client request is served through the other one.
func TestPDEjectsFailingPrefill(t *testing.T) {
	h := newPDHarness(t, "{mode: nixl}", "p0", "p1", "d0")
	h.fakes["p0"].answer = badPrefill(500, `{"error":"boom"}`)
	// p0 is picked first while it is in rotation: p1 carries a queue.
	h.r.store.Get("p1").Begin(1)
	defer h.r.store.Get("p1").End(1)
	for i := 0; len(h.fakes["p0"].requests()) < config.DefaultOutlierConsecutive5xx; i++ {
		if i == 50 {
			t.Fatalf("p0 got %d prefills of 50 requests", len(h.fakes["p0"].requests()))
		}
		if resp, b := h.post(context.Background(), "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3}`); resp == nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %v %s", i, resp, b)
		}
	}
	if n := h.counter("halyard_router_outlier_ejections_total", "endpoint", "p0"); n != 1 {
		t.Fatalf("ejections of p0 = %v, want 1", n)
	}
	for i := range 10 {
		if resp, b := h.post(context.Background(), "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":3}`); resp == nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d after the ejection: %v %s", i, resp, b)
		}
	}
	if n := len(h.fakes["p0"].requests()); n != config.DefaultOutlierConsecutive5xx {
		t.Errorf("the ejected prefill engine got %d requests, want none after its %d", n, config.DefaultOutlierConsecutive5xx)
	}
}
