package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/halyard-dev/halyard/internal/admission/jwttest"
	"github.com/halyard-dev/halyard/internal/admission/redistest"
)

func keyHash(k string) string {
	h := sha256.Sum256([]byte(k))
	return hex.EncodeToString(h[:])
}

// clientWithKey is an SDK client sending key as its bearer credential.
func clientWithKey(p *process, key string) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(p.URL()+"/v1"), option.WithAPIKey(key), option.WithMaxRetries(0))
	return &c
}

// counter reads one unlabelled sample (or the sum of a name's series)
// from a Prometheus text page.
func counter(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func apiError(t *testing.T, err error) *openai.Error {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v is not an API error", err)
	}
	return e
}

const admissionDoc = `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  scrapeInterval: 50ms
  admission:
    queue: {maxPerModel: 64, maxWait: 5s}
auth:
  jwt: {jwks: "{{jwks}}", issuer: https://issuer.test, audience: halyard, tenantClaim: sub, leeway: 5s}
tenants:
  - name: team-a
    apiKeys: [{sha256: "{{a}}"}]
    models: [llama]
    limits: {tokensPerMinute: 400}
    canExplain: true
  - name: team-b
    apiKeys: [{sha256: "{{b}}"}]
    limits: {tokensPerMinute: 100000}
endpoints:
  - {name: e0, url: "{{e0}}", model: llama}
routes:
  - {model: llama, targets: [{pool: llama}]}
  - {model: other, targets: [{pool: llama, model: llama}]}
`

func TestAdmissionAuthenticatesAndBudgets(t *testing.T) {
	e0 := startSim(t, "e0", "llama", "zero")
	keys := jwttest.NewKeys(t)
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwttest.JWKS(t, keys...))
	}))
	defer jwks.Close()
	doc := strings.NewReplacer("{{jwks}}", jwks.URL, "{{a}}", keyHash("key-a"), "{{b}}", keyHash("key-b")).Replace(admissionDoc)
	r := startRouter(t, doc, map[string]*process{"e0": e0})
	ctx := context.Background()
	hello := openai.ChatCompletionNewParams{Model: "llama", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}, MaxTokens: openai.Int(5)}
	served := func() float64 { return counter(t, e0.URL()+"/metrics", "vllm:request_success_total") }

	t.Run("wrong key is 401", func(t *testing.T) {
		_, err := clientWithKey(r, "key-wrong").Chat.Completions.New(ctx, hello)
		if e := apiError(t, err); e.StatusCode != 401 || e.Code != "invalid_api_key" {
			t.Errorf("got %d %q; want 401 invalid_api_key", e.StatusCode, e.Code)
		}
		resp, err := http.Post(r.URL()+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"llama","messages":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("no key: %d, want 401", resp.StatusCode)
		}
	})
	t.Run("JWTs", func(t *testing.T) {
		now := time.Now()
		claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
			c := jwt.MapClaims{"iss": "https://issuer.test", "aud": "halyard", "sub": "team-b", "exp": now.Add(time.Hour).Unix()}
			mod(c)
			return c
		}
		for _, k := range keys {
			tok := k.Sign(t, claims(func(jwt.MapClaims) {}))
			if _, err := clientWithKey(r, tok).Chat.Completions.New(ctx, hello); err != nil {
				t.Errorf("valid %s token: %v", k.Alg, err)
			}
		}
		for name, tok := range map[string]string{
			"expired":        keys[0].Sign(t, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })),
			"wrong audience": keys[1].Sign(t, claims(func(c jwt.MapClaims) { c["aud"] = "not-halyard" })),
		} {
			_, err := clientWithKey(r, tok).Chat.Completions.New(ctx, hello)
			if e := apiError(t, err); e.StatusCode != 401 || e.Code != "invalid_api_key" {
				t.Errorf("%s token: %d %q; want 401 invalid_api_key", name, e.StatusCode, e.Code)
			}
		}
	})
	t.Run("forbidden model is 403", func(t *testing.T) {
		p := hello
		p.Model = "other"
		_, err := clientWithKey(r, "key-a").Chat.Completions.New(ctx, p)
		if e := apiError(t, err); e.StatusCode != 403 {
			t.Errorf("got %d; want 403", e.StatusCode)
		}
		page, err := clientWithKey(r, "key-a").Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Data) != 1 || page.Data[0].ID != "llama" {
			t.Errorf("team-a's model list %v; want only llama", page.Data)
		}
	})
	t.Run("budgets settle to the engine's usage", func(t *testing.T) {
		c := clientWithKey(r, "key-a")
		// No max_tokens: the router reserves prompt + 256 (its default);
		// the engine generates 16 (vLLM's completions default).
		p := openai.CompletionNewParams{Model: "llama", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon a time")}}
		var h1, h2 *http.Response
		first, err := c.Completions.New(ctx, p, option.WithResponseInto(&h1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Completions.New(ctx, p, option.WithResponseInto(&h2)); err != nil {
			t.Fatal(err)
		}
		rem1, _ := strconv.Atoi(h1.Header.Get("x-ratelimit-remaining-tokens"))
		rem2, _ := strconv.Atoi(h2.Header.Get("x-ratelimit-remaining-tokens"))
		used := int(first.Usage.PromptTokens + first.Usage.CompletionTokens)
		// After the first settled, only its usage stays charged: the
		// second finds rem1 - used left (plus what refilled meanwhile,
		// 400 per minute).
		if h1.Header.Get("x-ratelimit-limit-tokens") != "400" || rem2 < rem1-used || rem2 > rem1-used+5 {
			t.Errorf("limit %s, remaining %d then %d, first used %d; want the second at %d (+refill)",
				h1.Header.Get("x-ratelimit-limit-tokens"), rem1, rem2, used, rem1-used)
		}
	})
	t.Run("past the token budget is 429 and never reaches the engine", func(t *testing.T) {
		c := clientWithKey(r, "key-a")
		big := hello
		big.MaxTokens = openai.Int(300)
		var err error
		for i := 0; i < 5 && err == nil; i++ {
			_, err = c.Chat.Completions.New(ctx, big)
		}
		if err == nil {
			t.Fatal("five requests of 300 tokens within a 400-token budget all passed")
		}
		before := served()
		var resp *http.Response
		_, err = c.Chat.Completions.New(ctx, big, option.WithResponseInto(&resp), option.WithHeader("x-halyard-explain", "1"))
		e := apiError(t, err)
		if e.StatusCode != 429 || e.Code != "rate_limit_exceeded" {
			t.Fatalf("got %d %q; want 429 rate_limit_exceeded", e.StatusCode, e.Code)
		}
		h := e.Response.Header
		if ra, _ := strconv.Atoi(h.Get("Retry-After")); ra < 1 {
			t.Errorf("Retry-After %q", h.Get("Retry-After"))
		}
		for _, name := range []string{"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"} {
			if h.Get(name) == "" {
				t.Errorf("no %s", name)
			}
		}
		if x := h.Get("x-halyard-route"); !strings.Contains(x, "budget=tenant/tokensPerMinute exhausted") {
			t.Errorf("explanation %q does not name the budget", x)
		}
		if after := served(); after != before {
			t.Errorf("the engine served %v requests during the refused one", after-before)
		}
	})
}

const sharedDoc = `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  scrapeInterval: 50ms
  admission:
    store: "{{redis}}"
    storeTimeout: 100ms
    onStoreError: local
    localFraction: 0.5
    queue: {disabled: true}
auth: {}
tenants:
  - name: team-a
    apiKeys: [{sha256: "{{a}}"}]
    limits: {tokensPerMinute: 3000}
endpoints:
  - {name: e0, url: "{{e0}}", model: llama}
routes:
  - {model: llama, targets: [{pool: llama}]}
`

func TestAdmissionSharedBudgetThroughRedis(t *testing.T) {
	srv := redistest.Start(t)
	e0 := startSim(t, "e0", "llama", "zero")
	doc := strings.NewReplacer("{{redis}}", srv.URL(), "{{a}}", keyHash("key-a")).Replace(sharedDoc)
	r1 := startRouter(t, doc, map[string]*process{"e0": e0})
	r2 := startRouter(t, doc, map[string]*process{"e0": e0})
	ctx := context.Background()
	req := openai.ChatCompletionNewParams{Model: "llama", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")}, MaxTokens: openai.Int(200)}
	clients := []*openai.Client{clientWithKey(r1, "key-a"), clientWithKey(r2, "key-a")}

	used, perReq, admitted := 0, 0, [2]int{}
	start := time.Now()
	for i := 0; i < 60; i++ {
		resp, err := clients[i%2].Chat.Completions.New(ctx, req)
		if err != nil {
			if e := apiError(t, err); e.StatusCode != 429 {
				t.Fatalf("request %d: %v", i, err)
			}
			break
		}
		admitted[i%2]++
		perReq = int(resp.Usage.TotalTokens)
		used += perReq
	}
	// One combined limit: 3000 tokens, plus what refilled (50/s), within
	// one request's tokens.
	refill := int(time.Since(start).Seconds()*50) + 1
	if used > 3000+refill || used < 3000-2*perReq {
		t.Errorf("both routers together served %d tokens (%v requests each); want about 3000 (+%d refill), within one request (%d)", used, admitted, refill, perReq)
	}
	if admitted[0] == 0 || admitted[1] == 0 {
		t.Errorf("admitted per router %v; want both", admitted)
	}

	// Redis dies: both routers keep serving on half of the limit each.
	srv.Kill()
	for i, c := range clients {
		t0 := time.Now()
		if _, err := c.Chat.Completions.New(ctx, req); err != nil {
			t.Errorf("router %d after Redis died: %v", i+1, err)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("router %d took %s to answer with Redis dead", i+1, d)
		}
	}
	for i, r := range []*process{r1, r2} {
		if n := counter(t, adminURL(t, r)+"/metrics", "halyard_admission_store_errors_total"); n < 1 {
			t.Errorf("router %d counted %v store errors", i+1, n)
		}
	}
}

// TestAdmissionShedsUnmeetableThroughTheSDK: with
// router.admission.unmeetable: shed, the real router with the shipped
// default profile refuses a request whose declared TTFT objective no
// engine is predicted to meet: the OpenAI SDK sees a 429
// model_overloaded that says why, the engine serves nothing, and the shed
// is counted; the same request with an objective it can meet is served.
func TestAdmissionShedsUnmeetableThroughTheSDK(t *testing.T) {
	e0 := startSim(t, "e0", "llama", "zero")
	doc := `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  scrapeInterval: 50ms
  admission: {unmeetable: shed}
tenants:
  - name: anonymous
endpoints:
  - {name: e0, url: "{{e0}}", model: llama}
routes:
  - {model: llama, targets: [{pool: llama}]}
`
	r := startRouter(t, doc, map[string]*process{"e0": e0})
	c := client(r)
	ctx := context.Background()
	hello := openai.ChatCompletionNewParams{Model: "llama", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")}, MaxTokens: openai.Int(5)}
	served := func() float64 { return counter(t, e0.URL()+"/metrics", "vllm:request_success_total") }

	before := served()
	_, err := c.Chat.Completions.New(ctx, hello, option.WithHeader("x-halyard-slo-ttft-ms", "0.001"))
	wantUnmeetable(t, err)
	if n := counter(t, adminURL(t, r)+"/metrics", `halyard_admission_shed_total{priority="standard",reason="slo_unmeetable",tenant="anonymous"}`); n != 1 {
		t.Errorf("halyard_admission_shed_total{reason=slo_unmeetable} = %v, want 1", n)
	}
	if _, err := c.Chat.Completions.New(ctx, hello, option.WithHeader("x-halyard-slo-ttft-ms", "60000")); err != nil {
		t.Fatalf("a meetable objective: %v", err)
	}
	if got := served() - before; got != 1 {
		t.Errorf("the engine served %v requests, want 1 (the shed one never reached it)", got)
	}
}

// wantUnmeetable checks the SDK's error for a request refused by the
// unmeetable shed: 429 model_overloaded saying why, Retry-After 1.
func wantUnmeetable(t *testing.T, err error) {
	t.Helper()
	e := apiError(t, err)
	if e.StatusCode != 429 || e.Code != "model_overloaded" || !strings.Contains(e.Message, "no endpoint is predicted to meet the request's objectives") {
		t.Errorf("unmeetable objective: %d %q %q; want 429 model_overloaded saying no endpoint is predicted to meet it", e.StatusCode, e.Code, e.Message)
	}
	if ra := e.Response.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1", ra)
	}
}

// TestAdmissionShedsUnmeetablePDThroughTheSDK: the real router in front of
// real disaggregated sims (two prefill, two decode) with
// router.admission.unmeetable: shed and the shipped prefill and decode
// presets refuses, through the OpenAI SDK, a request whose TTFT objective
// no prefill endpoint is predicted to meet (429 model_overloaded,
// Retry-After, counted), before any sim sees it; a request with an
// objective the pair meets is prefilled on one sim and decoded on another.
func TestAdmissionShedsUnmeetablePDThroughTheSDK(t *testing.T) {
	f := startPDFleetWith(t, "nixl", ", decodeFirst: {enabled: false}", ", admission: {unmeetable: shed}", "tenants:\n  - name: anonymous\n")
	c := client(f.router)
	ctx := context.Background()
	prompt := openai.CompletionNewParams{Model: "llama", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(words(1, 300))}, MaxTokens: openai.Int(5)}
	_, err := c.Completions.New(ctx, prompt, option.WithHeader("x-halyard-slo-ttft-ms", "0.001"))
	wantUnmeetable(t, err)
	if n := counter(t, adminURL(t, f.router)+"/metrics", `halyard_admission_shed_total{priority="standard",reason="slo_unmeetable",tenant="anonymous"}`); n != 1 {
		t.Errorf("halyard_admission_shed_total{reason=slo_unmeetable} = %v, want 1", n)
	}
	for n, p := range f.sims {
		if got := engineRequests(t, p); got != 0 {
			t.Errorf("sim %s served %v requests of a shed pair", n, got)
		}
	}
	var hr *http.Response
	if _, err := c.Completions.New(ctx, prompt, option.WithHeader("x-halyard-slo-ttft-ms", "60000"), option.WithResponseInto(&hr)); err != nil {
		t.Fatalf("a meetable objective: %v", err)
	}
	checkPairs(t, f, []string{hr.Header.Get("X-Request-Id")})
}
