package scheduling_test

// A policy study in virtual time: the real scheduling profiles drive a
// compact model of vLLM engines. It chose the default profile's weights and
// the prefix scorer's load-over-affinity gaps (docs/scheduling.md). It runs
// only with -study:
//
//	go test ./internal/scheduling -run TestStudy -study -v
//
// The engine model is deliberately small: continuous batching with chunked
// prefill (max_num_seqs, max_num_batched_tokens), a KV cache of num_gpu_blocks
// blocks of 16 tokens with prefix caching (full prompt blocks keyed by the
// chain hash, freed blocks kept and evicted least recently used), admission
// that waits for KV space (no preemption), and the step time of DESIGN.md §7
// for Llama-3-8B on an H100. Metrics are scraped every 100 ms; the router's
// in-flight counts are exact. The bench's virtual-time mode over the real
// simulator supersedes it.

import (
	"container/list"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/simclock"
)

var (
	study       = flag.Bool("study", false, "run the scheduling policy study (slow)")
	studyFilter = flag.String("study.filter", "", "run only the study's policies whose name contains this")
	studyRates  = flag.String("study.rates", "40,80,100,120", "the study's arrival rates, requests per second")
	studyLoad   = flag.String("study.workload", "wide", "the study's workload: wide (256 system prompts, Zipf 1.0) or hot (32, Zipf 1.5)")
)

const blockTokens = 16

type engineConfig struct {
	numBlocks, maxSeqs, maxBatched int
}

type cblock struct {
	hash prefixindex.BlockHash
	ref  int
	el   *list.Element // in the free LRU while ref == 0
}

type simReq struct {
	chain       []prefixindex.BlockHash
	promptLen   int
	outLen      int
	arrival     time.Time
	firstToken  time.Time
	measured    bool
	blocks      []*cblock
	private     int
	cached      int
	prefillLeft int
	chunk       int
	generated   int
	engine      *simEngine
}

type simEngine struct {
	ep       *plugintest.Endpoint
	cfg      engineConfig
	clock    *simclock.Virtual
	waiting  []*simReq
	running  []*simReq
	cache    map[prefixindex.BlockHash]*cblock
	free     list.List // of *cblock, most recently freed at the front
	used     int       // blocks referenced by running requests
	stepping bool
	done     func(*simReq)
	served   int
}

func newSimEngine(name string, cfg engineConfig, clock *simclock.Virtual, done func(*simReq)) *simEngine {
	e := &simEngine{ep: plugintest.NewEndpoint(name), cfg: cfg, clock: clock, cache: map[prefixindex.BlockHash]*cblock{}, done: done}
	e.scrape()
	return e
}

func (e *simEngine) scrape() {
	e.ep.SetMetrics(framework.Metrics{
		UpdateTime:      e.clock.Now(),
		WaitingRequests: len(e.waiting),
		RunningRequests: len(e.running),
		KVCacheUsage:    float64(e.used) / float64(e.cfg.numBlocks),
		NumBlocks:       e.cfg.numBlocks,
		BlockSize:       blockTokens,
	})
}

func (e *simEngine) enqueue(r *simReq) {
	r.engine = e
	e.waiting = append(e.waiting, r)
	if !e.stepping {
		e.stepping = true
		e.clock.AfterFunc(0, e.step)
	}
}

// admit reserves KV blocks for r, reusing its cached prefix; false when the
// cache cannot make room.
func (e *simEngine) admit(r *simReq) bool {
	k := 0
	for k < len(r.chain) && e.cache[r.chain[k]] != nil {
		k++
	}
	// Pin the cached prefix so eviction cannot take it.
	for _, h := range r.chain[:k] {
		b := e.cache[h]
		if b.ref == 0 {
			e.free.Remove(b.el)
			b.el = nil
			e.used++
		}
		b.ref++
	}
	private := (r.promptLen - len(r.chain)*blockTokens + r.outLen + blockTokens - 1) / blockTokens
	need := len(r.chain) - k + private
	for e.used+e.free.Len()+need > e.cfg.numBlocks && e.free.Len() > 0 {
		b := e.free.Remove(e.free.Back()).(*cblock)
		delete(e.cache, b.hash)
	}
	if e.used+e.free.Len()+need > e.cfg.numBlocks {
		for _, h := range r.chain[:k] {
			e.unpin(e.cache[h])
		}
		return false
	}
	r.blocks = r.blocks[:0]
	for i, h := range r.chain {
		b := e.cache[h]
		if i >= k {
			b = &cblock{hash: h, ref: 1}
			e.cache[h] = b
			e.used++
		}
		r.blocks = append(r.blocks, b)
	}
	r.private = private
	e.used += private
	r.cached = k * blockTokens
	r.prefillLeft = max(1, r.promptLen-r.cached)
	return true
}

func (e *simEngine) unpin(b *cblock) {
	b.ref--
	if b.ref == 0 {
		b.el = e.free.PushFront(b)
		e.used--
	}
}

func (e *simEngine) step() {
	budget := e.cfg.maxBatched
	decode, ctx, prefill := 0, 0, 0
	for _, r := range e.running {
		if r.prefillLeft == 0 {
			decode++
			budget--
			ctx += r.promptLen + r.generated
		}
	}
	for len(e.waiting) > 0 && len(e.running) < e.cfg.maxSeqs && budget > 0 {
		if !e.admit(e.waiting[0]) {
			break
		}
		e.running = append(e.running, e.waiting[0])
		e.waiting = e.waiting[1:]
	}
	for _, r := range e.running {
		if r.prefillLeft > 0 && budget > 0 {
			r.chunk = min(budget, r.prefillLeft)
			budget -= r.chunk
			prefill += r.chunk
			ctx += r.promptLen - r.prefillLeft + r.chunk
		}
	}
	if len(e.running) == 0 {
		e.stepping = false
		return
	}
	ms := 5.8 + 0.018*float64(prefill) + 0.006*float64(decode) + 4e-5*float64(ctx)
	e.clock.AfterFunc(time.Duration(ms*float64(time.Millisecond)), e.finishStep)
}

func (e *simEngine) finishStep() {
	now := e.clock.Now()
	kept := e.running[:0]
	for _, r := range e.running {
		switch {
		case r.chunk > 0:
			r.prefillLeft -= r.chunk
			r.chunk = 0
			if r.prefillLeft == 0 {
				r.firstToken = now
				r.generated = 1
			}
		case r.prefillLeft == 0:
			r.generated++
		}
		if r.prefillLeft == 0 && r.generated >= r.outLen {
			for _, b := range r.blocks {
				e.unpin(b)
			}
			e.used -= r.private
			e.served++
			e.done(r)
			continue
		}
		kept = append(kept, r)
	}
	e.running = kept
	e.step()
}

type workload struct {
	groups, systemTokens     int
	questionMin, questionMax int
	outMin, outMax           int
	zipf                     float64 // group popularity ∝ 1/(rank+1)^zipf
	rate                     float64 // requests per second
	warmup, measure          time.Duration
}

type studyResult struct {
	completed                  int
	ttftMean, ttftP50, ttftP99 time.Duration
	hitRate                    float64
	imbalance                  float64 // max served / mean served
}

func runStudy(t *testing.T, spec config.ProfileSpec, w workload, engines int, cfg engineConfig, seed uint64) studyResult {
	t.Helper()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := simclock.NewVirtual(start)
	p := profile(t, "study", spec, scheduling.Handle{Clock: clock.Now})
	rng := rand.New(rand.NewPCG(seed, 7))
	hasher := prefixindex.Hasher{}

	var ttfts []time.Duration
	var hits, queries int
	done := func(r *simReq) {
		r.engine.ep.AddInFlight(-1, 0)
		if r.measured {
			ttfts = append(ttfts, r.firstToken.Sub(r.arrival))
			hits += r.cached
			queries += r.promptLen
		}
	}
	eps := make([]*simEngine, engines)
	cands := make([]framework.Endpoint, engines)
	for i := range eps {
		eps[i] = newSimEngine(fmt.Sprintf("e%d", i), cfg, clock, done)
		cands[i] = eps[i].ep
	}
	var scrape func()
	scrape = func() {
		for _, e := range eps {
			e.scrape()
		}
		clock.AfterFunc(100*time.Millisecond, scrape)
	}
	clock.AfterFunc(100*time.Millisecond, scrape)

	weights := make([]float64, w.groups)
	total := 0.0
	for g := range weights {
		weights[g] = 1 / math.Pow(float64(g+1), w.zipf)
		total += weights[g]
	}
	system := make([][]uint32, w.groups)
	for g := range system {
		system[g] = make([]uint32, w.systemTokens)
		for i := range system[g] {
			system[g][i] = uint32(g*1_000_003+i*7) % 128000
		}
	}
	end := start.Add(w.warmup + w.measure)
	var arrive func()
	arrive = func() {
		now := clock.Now()
		if now.After(end) {
			return
		}
		x, g := rng.Float64()*total, 0
		for g < w.groups-1 && x > weights[g] {
			x -= weights[g]
			g++
		}
		q := w.questionMin + rng.IntN(w.questionMax-w.questionMin+1)
		prompt := append(slices.Clip(system[g]), make([]uint32, q)...)
		for i := w.systemTokens; i < len(prompt); i++ {
			prompt[i] = uint32(rng.IntN(128000))
		}
		req := &framework.Request{Model: "llama-3-8b", Prompt: framework.Prompt{TokenIDs: prompt}, PromptTokens: len(prompt)}
		state := framework.NewCycleState()
		res, err := p.Schedule(t.Context(), state, req, cands, false)
		if err != nil {
			t.Fatal(err)
		}
		p.PreRequest(t.Context(), state, req, res.Picked[0])
		ep := res.Picked[0].(*plugintest.Endpoint)
		ep.AddInFlight(1, 0)
		sr := &simReq{
			chain:     hasher.AppendChain(nil, req.Model, nil, prompt),
			promptLen: len(prompt),
			outLen:    w.outMin + rng.IntN(w.outMax-w.outMin+1),
			arrival:   now,
			measured:  now.After(start.Add(w.warmup)),
		}
		for _, e := range eps {
			if e.ep == ep {
				e.enqueue(sr)
			}
		}
		clock.AfterFunc(time.Duration(rng.ExpFloat64()/w.rate*float64(time.Second)), arrive)
	}
	clock.AfterFunc(0, arrive)
	clock.RunUntil(end.Add(10 * time.Minute))

	var res studyResult
	res.completed = len(ttfts)
	if len(ttfts) == 0 {
		return res
	}
	slices.Sort(ttfts)
	var sum time.Duration
	for _, d := range ttfts {
		sum += d
	}
	res.ttftMean = sum / time.Duration(len(ttfts))
	res.ttftP50 = ttfts[len(ttfts)/2]
	res.ttftP99 = ttfts[len(ttfts)*99/100]
	res.hitRate = float64(hits) / float64(queries)
	mx, tot := 0, 0
	for _, e := range eps {
		mx = max(mx, e.served)
		tot += e.served
	}
	res.imbalance = float64(mx) / (float64(tot) / float64(len(eps)))
	return res
}

// defaultWith returns the default profile with other weights and gaps, and
// a seeded tie-break so that runs repeat exactly.
func defaultWith(prefix, queue, kv float64, queueGap int, kvGap float64) config.ProfileSpec {
	w := func(v float64) *float64 { return &v }
	return config.ProfileSpec{
		Scorers: []config.PluginSpec{
			{Type: "prefix-cache", Weight: w(prefix), Params: json.RawMessage(fmt.Sprintf(`{"loadOverride":{"queueGap":%d,"kvUsageGap":%g}}`, queueGap, kvGap))},
			{Type: "queue-depth", Weight: w(queue)},
			{Type: "kv-utilization", Weight: w(kv)},
		},
		Picker: &config.PluginSpec{Type: "max-score", Params: json.RawMessage(`{"seed":1}`)},
	}
}

func TestStudy(t *testing.T) {
	if !*study {
		t.Skip("run with -study")
	}
	cfg := engineConfig{numBlocks: 27_000, maxSeqs: 256, maxBatched: 8192}
	workloads := map[string]workload{
		// More distinct system prompts (1.5M tokens) than one engine's KV
		// cache holds, fewer than eight do.
		"wide": {groups: 256, systemTokens: 6000, questionMin: 100, questionMax: 400, outMin: 50, outMax: 250,
			zipf: 1.0, warmup: 30 * time.Second, measure: 120 * time.Second},
		// One system prompt takes about 40% of the traffic, more than one
		// engine can serve.
		"hot": {groups: 32, systemTokens: 4000, questionMin: 100, questionMax: 400, outMin: 50, outMax: 250,
			zipf: 1.5, warmup: 30 * time.Second, measure: 120 * time.Second},
	}
	base, ok := workloads[*studyLoad]
	if !ok {
		t.Fatalf("-study.workload: unknown %q", *studyLoad)
	}
	presets := presets.Specs()
	seeded := func(s config.ProfileSpec) config.ProfileSpec {
		if s.Picker != nil && (s.Picker.Type == "max-score" || s.Picker.Type == "random") {
			p := *s.Picker
			p.Params = json.RawMessage(`{"seed":1}`)
			s.Picker = &p
		}
		return s
	}
	type policy struct {
		name string
		spec config.ProfileSpec
	}
	var policies []policy
	for _, name := range []string{"random", "round-robin", "least-request", "load"} {
		policies = append(policies, policy{name, seeded(presets[name])})
	}
	for _, g := range []int{0, 2, 4, 8, 16, 24, 32, 48, 64} {
		policies = append(policies, policy{fmt.Sprintf("3/1/1 queueGap=%d kvGap=0", g), defaultWith(3, 1, 1, g, 0)})
	}
	for _, kv := range []float64{0.1, 0.2, 0.3, 0.4, 0.5} {
		policies = append(policies, policy{fmt.Sprintf("3/1/1 queueGap=16 kvGap=%g", kv), defaultWith(3, 1, 1, 16, kv)})
	}
	for _, pw := range []float64{1, 2, 5} {
		policies = append(policies, policy{fmt.Sprintf("%g/1/1 queueGap=16 kvGap=0", pw), defaultWith(pw, 1, 1, 16, 0)})
	}
	for _, rs := range strings.Split(*studyRates, ",") {
		w := base
		if _, err := fmt.Sscan(rs, &w.rate); err != nil {
			t.Fatalf("-study.rates: %v", err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "\n%s: 8 engines, %d groups × %d-token system prompt (Zipf %.1f), question %d–%d, output %d–%d tokens, %.0f req/s, %s measured after %s\n",
			*studyLoad, w.groups, w.systemTokens, w.zipf, w.questionMin, w.questionMax, w.outMin, w.outMax, w.rate, w.measure, w.warmup)
		fmt.Fprintf(&b, "| policy | done | TTFT mean | TTFT p50 | TTFT p99 | prefix hit | max/mean served |\n|---|---|---|---|---|---|---|\n")
		for _, pol := range policies {
			if !strings.Contains(pol.name, *studyFilter) {
				continue
			}
			r := runStudy(t, pol.spec, w, 8, cfg, 1)
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %.1f%% | %.2f |\n", pol.name, r.completed,
				r.ttftMean.Round(time.Millisecond), r.ttftP50.Round(time.Millisecond), r.ttftP99.Round(time.Millisecond), 100*r.hitRate, r.imbalance)
		}
		t.Log(b.String())
	}
}
