package router

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const routesDoc = `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  health: {failureThreshold: 1, successThreshold: 1}
  profiles:
    affinity:
      scorers:
        - {type: prefix-cache, weight: 2, params: {b0: 1, b1: 0.25}}
        - {type: least-in-flight, weight: 1}
      picker: {type: max-score}
    dropb0:
      filters: [{type: drop, params: [b0]}]
      scorers: [{type: prefix-cache, params: {b0: 1, b1: 0.25}}]
endpoints:
  - {name: s0, url: "{{s0}}", model: llama, pool: stable}
  - {name: c0, url: "{{c0}}", model: llama, pool: canary}
  - {name: b0, url: "{{b0}}", model: base, adapters: [sql-lora]}
  - {name: b1, url: "{{b1}}", model: base}
  - {name: f0, url: "{{f0}}", model: llama, pool: spare}
routes:
  - model: llama
    rules:
      - headers: [{name: x-canary, value: "1"}]
        targets: [{pool: canary}]
    targets: [{pool: stable, weight: 90}, {pool: canary, weight: 10}]
    fallback: [{pool: spare}]
  - {model: sql, adapter: sql-lora, targets: [{pool: base}]}
  - {model: based, profile: affinity, targets: [{pool: base}]}
  - {model: explained, profile: dropb0, targets: [{pool: base}]}
`

func routesHarness(t *testing.T) *harness {
	return newHarness(t, routesDoc, map[string]string{"s0": "llama", "c0": "llama", "b0": "base", "b1": "base", "f0": "llama"})
}

// sdk returns an official OpenAI client pointed at the router.
func sdk(h *harness) openai.Client {
	return openai.NewClient(option.WithBaseURL(h.srv.URL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

func TestCanarySplitHitsWeights(t *testing.T) {
	h := routesHarness(t)
	client := sdk(h)
	const n = 1000
	for range n {
		_, err := client.Completions.New(context.Background(), openai.CompletionNewParams{
			Model:  "llama",
			Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	stable, canary := h.engines["s0"].requests.Load(), h.engines["c0"].requests.Load()
	if stable+canary != n {
		t.Fatalf("stable %d + canary %d != %d", stable, canary, n)
	}
	if frac := float64(canary) / n; frac < 0.08 || frac > 0.12 {
		t.Errorf("canary share %.3f, want 0.10±0.02", frac)
	}
	// The header rule sends everything to the canary.
	for range 10 {
		h.post("/v1/completions", `{"model":"llama","prompt":"x"}`, "x-canary", "1")
	}
	if got := h.engines["c0"].requests.Load() - canary; got != 10 {
		t.Errorf("header rule sent %d of 10 to the canary", got)
	}
}

func TestLoRARouteSendsAdapterAndPreservesBytes(t *testing.T) {
	h := routesHarness(t)
	body := `{ "model" : "sql",  "messages":[{"role":"user","content":"SELECT"}], "temperature":0.5 }`
	resp, b := h.post("/v1/chat/completions", body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	bodies, _ := h.engines["b0"].received()
	if len(bodies) != 1 || h.engines["b1"].requests.Load() != 0 {
		t.Fatalf("b0 got %d, b1 got %d requests; the adapter is listed only on b0", len(bodies), h.engines["b1"].requests.Load())
	}
	want := `{ "model" : "sql-lora",  "messages":[{"role":"user","content":"SELECT"}], "temperature":0.5 }`
	if diff := cmp.Diff(want, string(bodies[0])); diff != "" {
		t.Errorf("engine body (-want +got):\n%s", diff)
	}
}

func TestFallbackWhenPrimaryPoolIsDown(t *testing.T) {
	h := routesHarness(t)
	h.engines["s0"].metricsFail.Store(true)
	h.engines["c0"].metricsFail.Store(true)
	h.r.collector.ScrapeOnce(context.Background())
	resp, b := h.post("/v1/completions", `{"model":"llama","prompt":"x"}`, "x-halyard-explain", "1")
	if resp.StatusCode != 200 || h.engines["f0"].requests.Load() != 1 {
		t.Fatalf("status %d, spare got %d: %s", resp.StatusCode, h.engines["f0"].requests.Load(), b)
	}
	if ex := resp.Header.Get(HeaderRoute); !strings.Contains(ex, "route=llama>spare(fallback)") || !strings.Contains(ex, "excluded(unhealthy)") {
		t.Errorf("explanation %q does not tell of the fallback", ex)
	}
}

func TestExplainHeaderAndDebugRoute(t *testing.T) {
	h := routesHarness(t)
	resp, b := h.post("/v1/chat/completions", `{"model":"based","messages":[{"role":"user","content":"x"}]}`, "X-Halyard-Explain", "1")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	want := "route=based>base; profile=affinity; picked=b0; attempt=1; b0=3.00(least-in-flight:1.00 prefix-cache:1.00); b1=1.50(least-in-flight:1.00 prefix-cache:0.25)"
	if diff := cmp.Diff(want, resp.Header.Get(HeaderRoute)); diff != "" {
		t.Errorf("explain header (-want +got):\n%s", diff)
	}
	if resp, _ := h.post("/v1/chat/completions", `{"model":"based","messages":[{"role":"user","content":"x"}]}`); resp.Header.Get(HeaderRoute) != "" {
		t.Error("explanation sent without being asked for")
	}
	before := h.engines["b0"].requests.Load() + h.engines["b1"].requests.Load()
	resp, b = h.post("/debug/route", `{"model":"explained","messages":[{"role":"user","content":"hello there"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("debug status %d: %s", resp.StatusCode, b)
	}
	var got RouteExplanation
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Picked != "b1" || got.Target == nil || got.Target.Pool != "base" || got.Kind != "chat" || got.Route.Profile != "dropb0" {
		t.Errorf("debug route = %s", b)
	}
	if got.Explanation == nil || len(got.Explanation.Endpoints) != 2 || got.Explanation.Endpoints[0].FilteredBy != "drop" {
		t.Errorf("explanation lacks the filter result: %s", b)
	}
	if after := h.engines["b0"].requests.Load() + h.engines["b1"].requests.Load(); after != before {
		t.Error("/debug/route sent the request to an engine")
	}
	resp, b = h.get("/debug/route?model=llama&prompt=hi")
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"picked"`) {
		t.Errorf("GET /debug/route = %d %s", resp.StatusCode, b)
	}
	if m := metricValue(t, h, `halyard_router_prefix_hit_ratio_predicted_count{model="based"}`); m != 2 {
		t.Errorf("prefix hit ratio observed %v times, want 2 (the two real requests)", m)
	}
}

// TestSDKChatAndStreaming drives the router with the official OpenAI SDK.
func TestSDKChatAndStreaming(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	client := sdk(h)
	ctx := context.Background()
	var hdr *http.Response
	chat, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "llama",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}, option.WithResponseInto(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(chat.Choices[0].Message.Content, "hello from e") || chat.Usage.TotalTokens != 8 {
		t.Errorf("chat = %+v", chat)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "llama",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var text strings.Builder
	var usage int64
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
		if c.Usage.TotalTokens > 0 {
			usage = c.Usage.TotalTokens
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != "w0 w1 w2 " || usage != 8 {
		t.Errorf("stream text %q usage %d", text.String(), usage)
	}
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "nope", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var apiErr *openai.Error
	if !asAPIError(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
		t.Errorf("unknown model error = %v", err)
	}
}

func TestCanaryPoolDownSendsItsShareElsewhere(t *testing.T) {
	h := routesHarness(t)
	h.engines["c0"].metricsFail.Store(true)
	h.r.collector.ScrapeOnce(context.Background())
	for i := range 20 {
		if resp, b := h.post("/v1/completions", `{"model":"llama","prompt":"x"}`); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if s, f := h.engines["s0"].requests.Load(), h.engines["f0"].requests.Load(); s != 18 || f != 2 {
		t.Errorf("stable got %d, spare %d; want 18 and the canary's 2 (the explicit fallback comes first)", s, f)
	}
}
