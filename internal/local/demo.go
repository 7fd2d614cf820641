package local

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/halyard-dev/halyard/internal/enginemetrics"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// Demo load shape: groups of users share a system prompt, as tenants of one
// application do.
const (
	demoGroups       = 8
	demoSystemTokens = 1000
	demoQuestionToks = 40
	demoMaxTokens    = 48
	demoConcurrency  = 16
	// demoScrapeTimeout bounds reading the engines' counters for the
	// report, also after Ctrl-C.
	demoScrapeTimeout = 5 * time.Second
)

type demoResult struct {
	ttft, tpot, e2e time.Duration
	tokens          int
	endpoint        string
	err             error
	cut             bool // failed because the demo was interrupted
}

// runDemo sends one chat request and prints the answer, then runs n
// streamed requests of a shared-prefix mix and prints a report.
func runDemo(ctx context.Context, out io.Writer, url, model string, n int, engines []*vllmapi.Instance) error {
	client := &http.Client{Timeout: 2 * time.Minute}
	answer, err := chatOnce(ctx, client, url, model)
	if err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	fmt.Fprintf(out, "\nOne chat request through the router (simulated engines answer with placeholder words):\n  > Introduce yourself in one sentence.\n  < %s\n", answer)

	scraper := &enginemetrics.Scraper{}
	before := scrapeAll(ctx, scraper, engines)
	fmt.Fprintf(out, "\nRunning a short load: %d streamed chat requests, %d groups sharing a %d-token system prompt, concurrency %d ...\n",
		n, demoGroups, demoSystemTokens, demoConcurrency)
	rng := rand.New(rand.NewPCG(7, 11))
	systems := make([]string, demoGroups)
	for g := range systems {
		systems[g] = words(rng, demoSystemTokens)
	}
	// Bodies are made as they are dispatched, so that a large n costs no
	// memory up front.
	body := func() []byte {
		b, _ := json.Marshal(map[string]any{
			"model": model,
			"messages": []map[string]string{
				{"role": "system", "content": systems[rng.IntN(demoGroups)]},
				{"role": "user", "content": words(rng, demoQuestionToks)},
			},
			"max_tokens":     demoMaxTokens,
			"stream":         true,
			"stream_options": map[string]bool{"include_usage": true},
		})
		return b
	}
	results := make([]demoResult, 0, min(n, 4096))
	var resultsMu sync.Mutex
	next := make(chan []byte)
	var wg sync.WaitGroup
	start := time.Now()
	for range demoConcurrency {
		wg.Go(func() {
			for b := range next {
				res := streamOnce(ctx, client, url, b)
				// A failure once Ctrl-C was pressed is the interruption's
				// (the request's cancel, or the router stopping).
				res.cut = res.err != nil && ctx.Err() != nil
				resultsMu.Lock()
				results = append(results, res)
				resultsMu.Unlock()
			}
		})
	}
dispatch:
	for range n {
		select {
		case next <- body():
		case <-ctx.Done():
			break dispatch
		}
	}
	close(next)
	wg.Wait()
	wall := time.Since(start)
	// Requests never sent are not results; those cut by the interruption
	// neither.
	if ctx.Err() != nil {
		kept := results[:0]
		for _, r := range results {
			if !r.cut {
				kept = append(kept, r)
			}
		}
		fmt.Fprintf(out, "\nInterrupted: %d of %d requests completed or failed before Ctrl-C.\n", len(kept), n)
		results = kept
	}
	// The engines outlive an interruption (they stop after the demo
	// returns), so their counters are still read after Ctrl-C.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), demoScrapeTimeout)
	defer cancel()
	after := scrapeAll(sctx, scraper, engines)
	report(out, results, wall, before, after)
	return nil
}

func words(rng *rand.Rand, n int) string {
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = uint32(rng.IntN(5000))
	}
	return tokenizer.Pseudo{}.Decode(ids)
}

func chatOnce(ctx context.Context, client *http.Client, url, model string) (string, error) {
	body, _ := json.Marshal(map[string]any{
		"model":      model,
		"messages":   []map[string]string{{"role": "user", "content": "Introduce yourself in one sentence."}},
		"max_tokens": 24,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var cc struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &cc); err != nil || len(cc.Choices) == 0 {
		return "", fmt.Errorf("unexpected answer %s", b)
	}
	return cc.Choices[0].Message.Content, nil
}

// streamOnce sends one streamed request and times its tokens.
func streamOnce(ctx context.Context, client *http.Client, url string, body []byte) demoResult {
	var res demoResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		res.err = err
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-halyard-explain", "1")
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		res.err = err
		return res
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		res.err = fmt.Errorf("status %d", resp.StatusCode)
		return res
	}
	for _, part := range strings.Split(resp.Header.Get("x-halyard-route"), "; ") {
		if p, ok := strings.CutPrefix(part, "picked="); ok {
			res.endpoint = p
		}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var first, last time.Time
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			continue
		}
		if chunk.Error != nil {
			res.err = fmt.Errorf("stream error: %s", chunk.Error.Message)
			return res
		}
		if len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			last = now
		}
		if chunk.Usage != nil {
			res.tokens = chunk.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		res.err = err
		return res
	}
	res.e2e = time.Since(t0)
	if !first.IsZero() {
		res.ttft = first.Sub(t0)
		if res.tokens > 1 {
			res.tpot = last.Sub(first) / time.Duration(res.tokens-1)
		}
	}
	return res
}

type counters struct{ queries, hits float64 }

func scrapeAll(ctx context.Context, s *enginemetrics.Scraper, engines []*vllmapi.Instance) []counters {
	out := make([]counters, len(engines))
	for i, e := range engines {
		if m, err := s.Scrape(ctx, e.URL); err == nil {
			out[i] = counters{m.PrefixCacheQueries, m.PrefixCacheHits}
		}
	}
	return out
}

func report(out io.Writer, results []demoResult, wall time.Duration, before, after []counters) {
	var ttft, tpot []time.Duration
	perEndpoint := map[string]int{}
	failed, tokens := 0, 0
	for _, r := range results {
		if r.err != nil {
			failed++
			continue
		}
		ttft = append(ttft, r.ttft)
		if r.tpot > 0 {
			tpot = append(tpot, r.tpot)
		}
		tokens += r.tokens
		perEndpoint[r.endpoint]++
	}
	ok := len(results) - failed
	fmt.Fprintf(out, "\nDemo report (%d requests, %d failed, %.1fs)\n", len(results), failed, wall.Seconds())
	fmt.Fprintf(out, "  TTFT       p50 %8s   p99 %8s\n", pct(ttft, 50), pct(ttft, 99))
	fmt.Fprintf(out, "  TPOT       p50 %8s   p99 %8s\n", pct(tpot, 50), pct(tpot, 99))
	fmt.Fprintf(out, "  throughput %.1f requests/s, %.0f output tokens/s\n", float64(ok)/wall.Seconds(), float64(tokens)/wall.Seconds())
	names := make([]string, 0, len(perEndpoint))
	for n := range perEndpoint {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprint(out, "  per engine")
	for _, n := range names {
		fmt.Fprintf(out, "  %s:%d", n, perEndpoint[n])
	}
	fmt.Fprintln(out)
	var q, h float64
	for i := range after {
		if i < len(before) {
			q += after[i].queries - before[i].queries
			h += after[i].hits - before[i].hits
		}
	}
	if q > 0 {
		fmt.Fprintf(out, "  prefix-cache hit ratio (engines' counters) %.1f%% of %.0f prompt tokens\n", 100*h/q, q)
	}
}

func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = min(max(i-1, 0), len(s)-1)
	return s[i].Round(10 * time.Microsecond).String()
}
