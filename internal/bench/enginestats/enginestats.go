package enginestats

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/halyard-dev/halyard/internal/bench/stats"
)

// The vLLM counters the bench reads.
const (
	PrefixCacheQueries = "vllm:prefix_cache_queries_total"
	PrefixCacheHits    = "vllm:prefix_cache_hits_total"
	RequestSuccess     = "vllm:request_success_total"
	PromptTokens       = "vllm:prompt_tokens_total"
)

var wanted = []string{PrefixCacheQueries, PrefixCacheHits, RequestSuccess, PromptTokens}

// Counters is one engine's counters at one moment, summed over label sets.
type Counters map[string]float64

// maxPage bounds a /metrics page.
const maxPage = 32 << 20

// Parse reads a Prometheus text page and returns the wanted counters that it
// holds. Lines it cannot read are skipped; the error reports only a failure
// to read r.
func Parse(r io.Reader) (Counters, error) {
	out := Counters{}
	sc := bufio.NewScanner(io.LimitReader(r, maxPage))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := parseSample(sc.Text())
		if !ok {
			continue
		}
		for _, w := range wanted {
			if name == w {
				out[name] += v
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return out, nil
}

// parseSample reads `name{labels} value [timestamp]`.
func parseSample(line string) (string, float64, bool) {
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", 0, false
	}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return "", 0, false
	}
	name, rest := line[:i], line[i:]
	if rest[0] == '{' {
		end, ok := skipLabels(rest)
		if !ok {
			return "", 0, false
		}
		rest = rest[end:]
	}
	fields := strings.Fields(rest)
	if len(fields) == 0 || len(fields) > 2 {
		return "", 0, false
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil || math.IsNaN(v) {
		return "", 0, false
	}
	return name, v, true
}

// skipLabels returns the index just past the closing brace of the label set
// that s starts with, honouring quoted values with escapes.
func skipLabels(s string) (int, bool) {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i + 1, true
		}
	}
	return 0, false
}

// Scrape fetches url and parses it.
func Scrape(ctx context.Context, hc *http.Client, url string) (Counters, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: HTTP %d", url, resp.StatusCode)
	}
	c, err := Parse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return c, nil
}

// ScrapeAll scrapes every url; the result is in url order.
func ScrapeAll(ctx context.Context, hc *http.Client, urls []string) ([]Counters, error) {
	out := make([]Counters, len(urls))
	var errs []error
	for i, u := range urls {
		c, err := Scrape(ctx, hc, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[i] = c
	}
	return out, errors.Join(errs...)
}

// Engine is one engine's share of a run.
type Engine struct {
	URL string `json:"url"`
	// Requests and PromptTokens are counter deltas over the run.
	Requests     float64 `json:"requests"`
	PromptTokens float64 `json:"prompt_tokens"`
	// PrefixCacheQueries and PrefixCacheHits are token counter deltas.
	PrefixCacheQueries float64 `json:"prefix_cache_queries"`
	PrefixCacheHits    float64 `json:"prefix_cache_hits"`
	// Unknown says the engine's counters could not be read before or
	// after the run: its deltas are zero and mean nothing, and it is left
	// out of the hit rate and the imbalances.
	Unknown bool `json:"unknown,omitempty"`
}

// Result is what the engines' counters say about a run.
type Result struct {
	Engines []Engine `json:"engines"`
	// PrefixCacheHitRate is Σhits/Σqueries over the engines (0 when no
	// queries).
	PrefixCacheHitRate float64 `json:"prefix_cache_hit_rate"`
	// RequestImbalance and PromptTokenImbalance are max/mean over engines.
	RequestImbalance     float64 `json:"request_imbalance"`
	PromptTokenImbalance float64 `json:"prompt_token_imbalance"`
}

// Delta compares counters taken before and after a run. A counter that went
// down (an engine restarted) counts from zero. An engine whose scrape failed
// (nil counters before or after) is marked Unknown and left out of the hit
// rate and the imbalances, which are computed over the engines read.
func Delta(urls []string, before, after []Counters) Result {
	var res Result
	var hits, queries float64
	reqs := make([]float64, 0, len(urls))
	toks := make([]float64, 0, len(urls))
	for i, u := range urls {
		var b, a Counters
		if i < len(before) {
			b = before[i]
		}
		if i < len(after) {
			a = after[i]
		}
		d := func(name string) float64 {
			if a[name] < b[name] {
				return a[name]
			}
			return a[name] - b[name]
		}
		if a == nil || b == nil {
			res.Engines = append(res.Engines, Engine{URL: u, Unknown: true})
			continue
		}
		e := Engine{
			URL: u, Requests: d(RequestSuccess), PromptTokens: d(PromptTokens),
			PrefixCacheQueries: d(PrefixCacheQueries), PrefixCacheHits: d(PrefixCacheHits),
		}
		res.Engines = append(res.Engines, e)
		hits += e.PrefixCacheHits
		queries += e.PrefixCacheQueries
		reqs = append(reqs, e.Requests)
		toks = append(toks, e.PromptTokens)
	}
	if queries > 0 {
		res.PrefixCacheHitRate = hits / queries
	}
	res.RequestImbalance = stats.Imbalance(reqs)
	res.PromptTokenImbalance = stats.Imbalance(toks)
	return res
}
