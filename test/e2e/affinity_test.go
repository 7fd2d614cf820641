package e2e

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const fourEngines = `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {scrapeInterval: 50ms, timeouts: {scrape: 3s}}
endpoints:
  - {name: e0, url: "{{e0}}", model: llama}
  - {name: e1, url: "{{e1}}", model: llama}
  - {name: e2, url: "{{e2}}", model: llama}
  - {name: e3, url: "{{e3}}", model: llama}
routes:
  - {model: llama, targets: [{pool: llama}]}
`

func startFour(t *testing.T) (*process, map[string]*process) {
	sims := map[string]*process{}
	for _, n := range []string{"e0", "e1", "e2", "e3"} {
		sims[n] = startSim(t, n, "llama", "h100-llama3-8b")
	}
	return startRouter(t, fourEngines, sims), sims
}

// ask sends one chat turn with the explain header and returns the endpoint
// that served it.
func ask(t *testing.T, c openai.Client, system, question string, maxTokens int64) string {
	t.Helper()
	var resp *http.Response
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:     "llama",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(system), openai.UserMessage(question)},
		MaxTokens: openai.Int(maxTokens),
	}, option.WithHeader("x-halyard-explain", "1"), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	return pickedEndpoint(resp)
}

// TestPrefixAffinity: conversations that share a 4,000-token system prompt
// land on the endpoint that holds it, and the engines' own prefix-cache
// counters prove the hits.
func TestPrefixAffinity(t *testing.T) {
	r, sims := startFour(t)
	c := client(r)
	systems := []string{words(1, 4000), words(2, 4000), words(3, 4000)}
	home := map[int]string{}
	onHome, total := 0, 0
	for i := range 12 {
		for g, sys := range systems {
			ep := ask(t, c, sys, words(100+i*10+g, 30), 4)
			if i == 0 {
				home[g] = ep
				continue
			}
			total++
			if ep == home[g] {
				onHome++
			}
		}
	}
	if onHome != total {
		t.Errorf("%d of %d follow-up requests landed on their prompt's endpoint (homes %v)", onHome, total, home)
	}
	var q, h float64
	for _, s := range sims {
		m := engineMetrics(t, s)
		q += m.PrefixCacheQueries
		h += m.PrefixCacheHits
	}
	// 36 requests of ~4,030 tokens; the first of each group misses.
	if ratio := h / q; ratio < 0.85 {
		t.Errorf("engines' prefix-cache hit ratio %.3f (hits %.0f of %.0f tokens), want >= 0.85", ratio, h, q)
	}
	t.Logf("homes %v; engines' prefix hit ratio %.3f", home, h/q)
}

// TestHotEndpointShedsLoad: when one prompt's endpoint is swamped, load
// wins over affinity and other endpoints take requests of that prompt.
func TestHotEndpointShedsLoad(t *testing.T) {
	r, _ := startFour(t)
	c := client(r)
	sys := words(9, 4000)
	home := ask(t, c, sys, "warm up", 2)
	var mu sync.Mutex
	served := map[string]int{}
	var wg sync.WaitGroup
	for w := range 48 {
		wg.Go(func() {
			ep := ask(t, c, sys, words(500+w, 30), 200)
			mu.Lock()
			served[ep]++
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("home %s; 48 concurrent requests served by %v", home, served)
	if len(served) < 2 {
		t.Errorf("all 48 concurrent requests went to %v: the hot endpoint did not shed load", served)
	}
	if served[home] >= 48 {
		t.Errorf("home endpoint took every request")
	}
}
