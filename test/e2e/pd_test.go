package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// pdEvent and pdStatus mirror the sim's GET /admin/pd.
type pdEvent struct {
	Kind            string  `json:"kind"`
	Connector       string  `json:"connector"`
	RequestID       string  `json:"request_id"`
	XRequestID      string  `json:"x_request_id"`
	Peer            string  `json:"peer"`
	RemoteRequestID string  `json:"remote_request_id"`
	Room            *uint64 `json:"room"`
	Blocks          int     `json:"blocks"`
	Tokens          int     `json:"tokens"`
	Reason          string  `json:"reason"`
}

type pdStatus struct {
	Role      string    `json:"role"`
	EngineID  string    `json:"engine_id"`
	Bootstrap string    `json:"bootstrap"`
	Held      []pdEvent `json:"held"`
	Events    []pdEvent `json:"events"`
}

func simPD(t *testing.T, p *process) pdStatus {
	t.Helper()
	resp, err := http.Get(p.URL() + "/admin/pd")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st pdStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// pdFleet is two prefill and two decode sims (zones a and b) and a router
// with one disaggregated pool.
type pdFleet struct {
	sims   map[string]*process
	router *process
}

func startPDFleet(t *testing.T, mode, pdExtra, profiles string, simArgs ...string) *pdFleet {
	t.Helper()
	return startPDFleetWith(t, mode, pdExtra, profiles, "", simArgs...)
}

// startPDFleetWith is startPDFleet with top-level YAML (tenants) appended
// to the router's configuration.
func startPDFleetWith(t *testing.T, mode, pdExtra, profiles, top string, simArgs ...string) *pdFleet {
	t.Helper()
	f := &pdFleet{sims: map[string]*process{}}
	var eps strings.Builder
	for _, n := range []string{"p0", "p1", "d0", "d1"} {
		role := map[byte]string{'p': "prefill", 'd': "decode"}[n[0]]
		args := append([]string{"--role", role, "--engine-id", n, "--bootstrap-port", "0", "--kv-transfer-per-token", "20us"}, simArgs...)
		f.sims[n] = startSim(t, n, "llama", "zero", args...)
		labels := fmt.Sprintf("zone: %c", 'a'+n[1]-'0')
		if role == "prefill" {
			st := simPD(t, f.sims[n])
			port := st.Bootstrap[strings.LastIndexByte(st.Bootstrap, ':')+1:]
			labels += fmt.Sprintf(", halyard.dev/bootstrap-port: %q", port)
		}
		fmt.Fprintf(&eps, "  - {name: %s, url: %q, model: llama, role: %s, labels: {%s}}\n", n, f.sims[n].URL(), role, labels)
	}
	doc := "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nrouter: {timeouts: {scrape: 3s}" + profiles + "}\nendpoints:\n" + eps.String() +
		"routes:\n  - {model: llama, targets: [{pool: llama}]}\npools:\n  - name: llama\n    pd: {mode: " + mode + ", topologyKey: zone" + pdExtra + "}\n" + top
	f.router = startRouter(t, doc, nil)
	return f
}

// events returns every sim's transfer log by sim name.
func (f *pdFleet) events(t *testing.T) map[string][]pdEvent {
	out := map[string][]pdEvent{}
	for n, p := range f.sims {
		out[n] = simPD(t, p).Events
	}
	return out
}

// checkPairs asserts that each request id was prefilled once, on one
// prefill sim whose kept KV was pulled by exactly one decode sim, which
// names that prefill sim and its request as the source of the KV it
// received.
func checkPairs(t *testing.T, f *pdFleet, ids []string) {
	t.Helper()
	evs := f.events(t)
	type seen struct{ kept, pulled, transferred []string }
	by := map[string]*seen{}
	for _, id := range ids {
		by[id] = &seen{}
	}
	prefillReq := map[string]string{} // x-request-id -> prefill sim/request
	for sim, list := range evs {
		for _, e := range list {
			s := by[e.XRequestID]
			switch {
			case s == nil:
			case e.Kind == "kept":
				s.kept = append(s.kept, sim)
			case e.Kind == "pulled":
				s.pulled = append(s.pulled, sim)
				prefillReq[e.XRequestID] = sim + "/" + e.RequestID
				if e.Peer[0] != 'd' {
					t.Errorf("%s: pulled by %q, not a decode sim", e.XRequestID, e.Peer)
				}
			case e.Kind == "transferred":
				s.transferred = append(s.transferred, sim+"<"+e.Peer+"/"+e.RemoteRequestID)
			case e.Kind == "refused" || e.Kind == "expired":
				t.Errorf("%s: %s on %s (%s)", e.XRequestID, e.Kind, sim, e.Reason)
			}
		}
	}
	for _, id := range ids {
		s := by[id]
		if len(s.kept) != 1 || len(s.pulled) != 1 || len(s.transferred) != 1 || s.kept[0] != s.pulled[0] {
			t.Errorf("%s: kept on %v, pulled from %v, transferred to %v; want one prefill and one decode", id, s.kept, s.pulled, s.transferred)
			continue
		}
		if _, src, _ := strings.Cut(s.transferred[0], "<"); src != prefillReq[id] {
			t.Errorf("%s: the decode sim received KV from %s, the prefill sim gave %s", id, src, prefillReq[id])
		}
	}
	for n, p := range f.sims {
		if st := simPD(t, p); len(st.Held) != 0 {
			t.Errorf("%s still holds %d requests' blocks", n, len(st.Held))
		}
	}
}

func pdClientRequests(t *testing.T, c openai.Client, n int, prefix string) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		// The router keeps the client's X-Request-Id for its logs and
		// sends its own to the engines; it answers with that one.
		var hr *http.Response
		routerID := func() string {
			if hr == nil || hr.Header.Get("X-Request-Id") == "" {
				t.Fatalf("%s: no X-Request-Id in the router's answer", id)
			}
			return hr.Header.Get("X-Request-Id")
		}
		prompt := words(100+i, 300)
		if i%2 == 0 {
			stream := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
				Model:               "llama",
				Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
				MaxCompletionTokens: openai.Int(12),
				StreamOptions:       openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
			}, option.WithHeader("X-Request-Id", id), option.WithResponseInto(&hr))
			var text strings.Builder
			var usage openai.CompletionUsage
			for stream.Next() {
				ch := stream.Current()
				if len(ch.Choices) > 0 {
					text.WriteString(ch.Choices[0].Delta.Content)
				}
				if ch.Usage.TotalTokens > 0 {
					usage = ch.Usage
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("%s: %v", id, err)
			}
			if usage.CompletionTokens != 12 || usage.PromptTokens < 300 || len(strings.Fields(text.String())) != 12 {
				t.Errorf("%s: %q, usage %+v", id, text.String(), usage)
			}
			ids = append(ids, routerID())
			continue
		}
		comp, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
			Model: "llama", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)}, MaxTokens: openai.Int(7),
		}, option.WithHeader("X-Request-Id", id), option.WithResponseInto(&hr))
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if comp.Usage.CompletionTokens != 7 || comp.Usage.PromptTokens != 300 || len(strings.Fields(comp.Choices[0].Text)) != 7 {
			t.Errorf("%s: %q, usage %+v", id, comp.Choices[0].Text, comp.Usage)
		}
		ids = append(ids, routerID())
	}
	return ids
}

func TestPDEveryRequestOnePrefillOneDecode(t *testing.T) {
	for _, mode := range []string{"nixl", "sglang"} {
		t.Run(mode, func(t *testing.T) {
			f := startPDFleet(t, mode, ", decodeFirst: {enabled: false}", "")
			ids := pdClientRequests(t, client(f.router), 12, mode)
			checkPairs(t, f, ids)
			// The decode sims did all the decoding: the prefill sims
			// generated one token per request.
			var prefillReqs, decodeReqs float64
			for n, p := range f.sims {
				if n[0] == 'p' {
					prefillReqs += engineRequests(t, p)
				} else {
					decodeReqs += engineRequests(t, p)
				}
			}
			if prefillReqs != 12 || decodeReqs != 12 {
				t.Errorf("engines served %v prefills and %v decodes, want 12 each", prefillReqs, decodeReqs)
			}
		})
	}
}

func TestPDDecodeSimRefusesForgedParams(t *testing.T) {
	f := startPDFleet(t, "nixl", "", "")
	c := openai.NewClient(option.WithBaseURL(f.sims["d0"].URL()+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ask := func(kv map[string]any) error {
		_, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
			Model: "llama", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(words(1, 50))}, MaxTokens: openai.Int(3),
		}, option.WithJSONSet("kv_transfer_params", kv))
		return err
	}
	// Made-up parameters naming a port where nothing listens.
	forged := map[string]any{"do_remote_prefill": true, "do_remote_decode": false, "remote_engine_id": "p0", "remote_request_id": "cmpl-42",
		"remote_block_ids": []int{7, 8, 9}, "remote_host": "127.0.0.1", "remote_port": 1, "tp_size": 1}
	var apiErr *openai.Error
	if err := ask(forged); !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "kv_transfer_params" {
		t.Fatalf("forged params: %v", err)
	}
	// The real side channel, a made-up request.
	forged["remote_host"], forged["remote_port"] = splitHostPort(t, sidechannel(t, f.sims["p0"]))
	if err := ask(forged); !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.Message, "no live KV blocks") {
		t.Fatalf("made-up request: %v", err)
	}
	if got := metricSum(t, f.sims["d0"], "halyard_sim_pd_refused_total"); got != 2 {
		t.Errorf("halyard_sim_pd_refused_total = %v, want 2", got)
	}
	if got := metricSum(t, f.sims["p0"], `halyard_sim_pd_pull_refused_total{connector="nixl",engine="0",model_name="llama",reason="unknown_request"}`); got != 1 {
		t.Errorf("p0 refused %v pulls, want 1", got)
	}
}

func sidechannel(t *testing.T, p *process) string {
	t.Helper()
	resp, err := http.Get(p.URL() + "/admin/pd")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		SideChannel string `json:"side_channel"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.SideChannel == "" {
		t.Fatalf("no side channel: %v", err)
	}
	return st.SideChannel
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil {
		t.Fatal(err)
	}
	return addr[:i], port
}

// metricSum sums the values of a sim's or a router's series whose name (with labels, if
// given) starts with series.
func metricSum(t *testing.T, p *process, series string) float64 {
	t.Helper()
	base := p.URL()
	if adminAddrRE.MatchString(p.Logs()) {
		base = adminURL(t, p) // a router serves /metrics on its admin listener
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/metrics: %s", base, resp.Status)
	}
	b := make([]byte, 4<<20)
	n, _ := readAll(resp, b)
	total := 0.0
	for _, line := range strings.Split(string(b[:n]), "\n") {
		if strings.HasPrefix(line, series) && (len(line) > len(series) && (line[len(series)] == ' ' || line[len(series)] == '{')) {
			var v float64
			if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
				total += v
			}
		}
	}
	return total
}

func TestPDDecodeFirstSkipsPrefill(t *testing.T) {
	for _, mode := range []string{"nixl", "sglang"} {
		t.Run(mode, func(t *testing.T) {
			// The decode profile prefers the endpoint holding the prompt.
			f := startPDFleet(t, mode, ", decodeProfile: pd-decode", ", profiles: {pd-decode: {scorers: [{type: prefix-cache, weight: 2}, {type: kv-utilization}, {type: least-request}]}}",
				"--block-size", "16")
			c := client(f.router)
			prompt := words(7, 600)
			var routes []string
			for i := range 3 {
				var resp *http.Response
				_, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
					Model: "llama", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)}, MaxTokens: openai.Int(4),
				}, option.WithHeader("x-halyard-explain", "1"), option.WithHeader("X-Request-Id", fmt.Sprintf("df-%d", i)), option.WithResponseInto(&resp))
				if err != nil {
					t.Fatal(err)
				}
				routes = append(routes, resp.Header.Get("x-halyard-route"))
			}
			if !strings.Contains(routes[0], "decode-first=no(") || strings.Contains(routes[0], "prefill=none") {
				t.Errorf("first request: %s", routes[0])
			}
			for _, r := range routes[1:] {
				if !strings.Contains(r, "decode-first=skip(prefix_held held=1.00)") || !strings.Contains(r, "prefill=none") {
					t.Errorf("repeat: %s", r)
				}
			}
			var kept float64
			for _, n := range []string{"p0", "p1"} {
				kept += metricSum(t, f.sims[n], "halyard_sim_pd_kept_total")
			}
			if kept != 1 {
				t.Errorf("prefill sims kept KV %v times, want once (the repeats skip the prefill)", kept)
			}
			if got := metricSum(t, f.router, `halyard_router_pd_decode_first_total{model="llama",reason="prefix_held"}`); got != 2 {
				t.Errorf("decode-first skips counted %v, want 2", got)
			}
			// The skipped requests hit the decode sim's own prefix cache.
			hits := 0.0
			for _, n := range []string{"d0", "d1"} {
				hits += engineMetrics(t, f.sims[n]).PrefixCacheHits
			}
			if hits < 2*580 {
				t.Errorf("decode sims' prefix hits %v tokens, want about %d", hits, 2*600)
			}
		})
	}
}

// TestPDPrefillKilledDuringLoad kills a prefill sim while requests are in
// flight: every request still succeeds on the other prefill sim (within a
// deadline, none hangs), and the router counts the retries.
func TestPDPrefillKilledDuringLoad(t *testing.T) {
	for _, mode := range []string{"nixl", "sglang"} {
		t.Run(mode, func(t *testing.T) {
			f := startPDFleet(t, mode, ", prefillTimeout: 10s, decodeFirst: {enabled: false}", "", "--bootstrap-timeout", "10s")
			c := client(f.router)
			const workers, perWorker = 6, 20
			var done atomic.Int64
			var failed atomic.Int64
			killed := make(chan struct{})
			var once sync.Once
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range perWorker {
						ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
						start := time.Now()
						stream := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
							Model:     "llama",
							Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String(words(1000*w+i, 400))},
							MaxTokens: openai.Int(16),
						}, option.WithHeader("X-Request-Id", fmt.Sprintf("kill-%d-%d", w, i)))
						n := 0
						for stream.Next() {
							n += len(stream.Current().Choices)
						}
						err := stream.Err()
						cancel()
						if d := time.Since(start); d > 45*time.Second {
							t.Errorf("a request took %v", d)
						}
						if err != nil || n < 16 {
							failed.Add(1)
							t.Errorf("request %d/%d: %v (%d chunks)", w, i, err, n)
						}
						if done.Add(1) == workers*perWorker/4 {
							once.Do(func() { f.sims["p0"].kill(); close(killed) })
						}
					}
				})
			}
			wg.Wait()
			select {
			case <-killed:
			default:
				t.Fatal("p0 was never killed")
			}
			if failed.Load() != 0 {
				t.Fatalf("%d of %d requests failed", failed.Load(), workers*perWorker)
			}
			retries := metricSum(t, f.router, "halyard_router_pd_prefill_retries_total")
			errs := metricSum(t, f.router, "halyard_router_pd_prefill_errors_total")
			if errs < 1 || retries < 1 {
				t.Errorf("after killing p0: %v prefill errors, %v retries, want some", errs, retries)
			}
			t.Logf("%s: %v prefill errors, %v retries after killing p0", mode, errs, retries)
		})
	}
}
