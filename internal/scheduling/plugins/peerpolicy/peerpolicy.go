package peerpolicy

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/internal/rng"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
)

// Registered plugin types.
const (
	SGLangType       = "sglang-cache-aware"
	AIBrixType       = "aibrix-prefix-cache"
	KthenaLeastType  = "kthena-least-request"
	MaxWaitingType   = "max-waiting"
	defaultMaxWaiter = 10 // Kthena's Helm chart: maxWaitingRequests
)

// SGLangParams are the cache_aware policy's thresholds.
type SGLangParams struct {
	// CacheThreshold is the share of the prompt the best match must exceed
	// to win over the least-loaded endpoint. Default 0.3.
	CacheThreshold float64 `json:"cacheThreshold"`
	// BalanceAbsThreshold and BalanceRelThreshold declare the load
	// imbalanced when both max − min > abs and max > rel × min. Defaults
	// 64 and 1.5.
	BalanceAbsThreshold int     `json:"balanceAbsThreshold"`
	BalanceRelThreshold float64 `json:"balanceRelThreshold"`
	// Seed seeds tie-breaking; 0 uses the runtime's generator.
	Seed uint64 `json:"seed"`
}

// AIBrixParams are the prefix-cache router's settings.
type AIBrixParams struct {
	// ImbalanceAbsCount: above this spread of running requests only the
	// least-loaded endpoints are considered. Default 8.
	ImbalanceAbsCount int `json:"imbalanceAbsCount"`
	// StandardDeviationFactor: a matching endpoint wins only if its load is
	// at most mean + factor × standard deviation. Default 1.
	StandardDeviationFactor float64 `json:"standardDeviationFactor"`
	// Seed seeds tie-breaking; 0 uses the runtime's generator.
	Seed uint64 `json:"seed"`
}

// MaxWaitingParams configure the max-waiting filter.
type MaxWaitingParams struct {
	// MaxWaiting: endpoints reporting this many waiting requests or more
	// are left out. Default 10.
	MaxWaiting int `json:"maxWaiting"`
}

// SGLangFactory builds a sglang-cache-aware scorer.
func SGLangFactory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	p := SGLangParams{CacheThreshold: 0.3, BalanceAbsThreshold: 64, BalanceRelThreshold: 1.5}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	if p.CacheThreshold < 0 || p.CacheThreshold > 1 || p.BalanceAbsThreshold < 0 || p.BalanceRelThreshold < 0 {
		return nil, fmt.Errorf("%s: cacheThreshold must be in [0,1] and the balance thresholds non-negative", SGLangType)
	}
	return &SGLang{tn: framework.TypedName{Type: SGLangType, Name: name}, p: p, rand: rng.New(p.Seed)}, nil
}

// AIBrixFactory builds an aibrix-prefix-cache scorer.
func AIBrixFactory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	p := AIBrixParams{ImbalanceAbsCount: 8, StandardDeviationFactor: 1}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	if p.ImbalanceAbsCount < 0 || p.StandardDeviationFactor < 0 {
		return nil, fmt.Errorf("%s: imbalanceAbsCount and standardDeviationFactor must be non-negative", AIBrixType)
	}
	return &AIBrix{tn: framework.TypedName{Type: AIBrixType, Name: name}, p: p, rand: rng.New(p.Seed)}, nil
}

// KthenaLeastParams configure the kthena-least-request scorer.
type KthenaLeastParams struct {
	// Span normalises by the spread, (max − base)/(max − min), as the
	// queue-depth scorer does, so that the least loaded endpoint scores 1
	// and the most loaded 0 whatever the counts; by default (false) the
	// score is Kthena's own (max − base)/max, under which, when every
	// engine carries many requests (a hundred streams each on a busy
	// fleet), a difference of a few requests is a few hundredths of a
	// point.
	Span bool `json:"span"`
}

// KthenaLeastFactory builds a kthena-least-request scorer.
func KthenaLeastFactory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	var p KthenaLeastParams
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return &KthenaLeast{tn: framework.TypedName{Type: KthenaLeastType, Name: name}, span: p.Span}, nil
}

// MaxWaitingFactory builds a max-waiting filter.
func MaxWaitingFactory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	p := MaxWaitingParams{MaxWaiting: defaultMaxWaiter}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	if p.MaxWaiting < 1 {
		return nil, fmt.Errorf("%s: maxWaiting must be at least 1", MaxWaitingType)
	}
	return &MaxWaiting{tn: framework.TypedName{Type: MaxWaitingType, Name: name}, max: p.MaxWaiting}, nil
}

// SGLang is the sglang-cache-aware scorer.
type SGLang struct {
	tn   framework.TypedName
	p    SGLangParams
	rand *rng.Source
}

// TypedName returns the plugin's type and name.
func (s *SGLang) TypedName() framework.TypedName { return s.tn }

// Score writes 1 for the endpoint SGLang's cache_aware policy picks, 0
// elsewhere.
func (s *SGLang) Score(_ context.Context, state *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	if len(endpoints) == 0 {
		return
	}
	load := inFlight(endpoints)
	lo, hi := slices.Min(load), slices.Max(load)
	pick, why := -1, "load imbalanced: least in flight"
	if hi-lo <= int64(s.p.BalanceAbsThreshold) || float64(hi) <= float64(lo)*s.p.BalanceRelThreshold {
		why = "no match above the threshold: least in flight"
		if ratios := matchRatios(state, len(endpoints)); ratios != nil {
			if best := slices.Max(ratios); best > s.p.CacheThreshold {
				// The tree's longest match; among equals the less loaded.
				pick = leastOf(s.rand, load, func(i int) bool { return ratios[i] == best })
				why = fmt.Sprintf("match %.2f above the threshold", best)
			}
		}
	}
	if pick < 0 {
		pick = leastOf(s.rand, load, func(int) bool { return true })
	}
	oneHot(scores, len(endpoints), pick)
	if framework.Explaining(state) {
		framework.AddNote(state, fmt.Sprintf("%s: %s, picks %s", s.tn.Name, why, endpoints[pick].Metadata().Name))
	}
}

// AIBrix is the aibrix-prefix-cache scorer.
type AIBrix struct {
	tn   framework.TypedName
	p    AIBrixParams
	rand *rng.Source
}

// TypedName returns the plugin's type and name.
func (a *AIBrix) TypedName() framework.TypedName { return a.tn }

// Score writes 1 for the endpoint AIBrix's prefix-cache router picks, 0
// elsewhere.
func (a *AIBrix) Score(_ context.Context, state *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	n := len(endpoints)
	if n == 0 {
		return
	}
	load := inFlight(endpoints)
	lo, hi := slices.Min(load), slices.Max(load)
	allowed := func(int) bool { return true }
	if hi-lo > int64(a.p.ImbalanceAbsCount) {
		allowed = func(i int) bool { return load[i] == lo }
	}
	var mean, sd float64
	for _, l := range load {
		mean += float64(l)
	}
	mean /= float64(n)
	for _, l := range load {
		sd += (float64(l) - mean) * (float64(l) - mean)
	}
	sd = math.Sqrt(sd / float64(n))
	limit := mean + a.p.StandardDeviationFactor*sd

	pick := -1
	if ratios := matchRatios(state, n); ratios != nil {
		// Best match first, then least loaded, ties at random: a shuffle
		// then a stable sort, as AIBrix orders its matched pods.
		order := make([]int, 0, n)
		for i, r := range ratios {
			if r > 0 && allowed(i) {
				order = append(order, i)
			}
		}
		a.rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		slices.SortStableFunc(order, func(x, y int) int {
			if ratios[x] != ratios[y] {
				if ratios[x] > ratios[y] {
					return -1
				}
				return 1
			}
			return int(load[x] - load[y])
		})
		for _, i := range order {
			if float64(load[i]) <= limit {
				pick = i
				break
			}
		}
	}
	if pick < 0 {
		// AIBrix falls back to the least-loaded of all ready endpoints.
		pick = leastOf(a.rand, load, func(int) bool { return true })
	}
	oneHot(scores, n, pick)
	if framework.Explaining(state) {
		framework.AddNote(state, fmt.Sprintf("%s picks %s (load limit %.1f)", a.tn.Name, endpoints[pick].Metadata().Name, limit))
	}
}

// KthenaLeast is the kthena-least-request scorer.
type KthenaLeast struct {
	tn   framework.TypedName
	span bool
}

// TypedName returns the plugin's type and name.
func (k *KthenaLeast) TypedName() framework.TypedName { return k.tn }

// Score writes (max − base) / max where base is the router's in-flight
// count plus 100 for each of them the engine is not running (in flight
// minus the scraped running count), 1 for all when every base is 0; with
// Span, (max − base)/(max − min), 1 for all when every base is equal.
func (k *KthenaLeast) Score(_ context.Context, _ *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	lo, hi := math.Inf(1), 0.0
	for i, e := range endpoints {
		n, _ := e.InFlight()
		base := float64(n) + 100*max(float64(n)-float64(e.Metrics().RunningRequests), 0)
		scores[i] = base
		hi = max(hi, base)
		lo = min(lo, base)
	}
	span := hi
	if k.span {
		span = hi - lo
	}
	for i := range endpoints {
		if span == 0 {
			scores[i] = 1
			continue
		}
		scores[i] = (hi - scores[i]) / span
	}
}

// MaxWaiting is the max-waiting filter.
type MaxWaiting struct {
	tn  framework.TypedName
	max int
}

// TypedName returns the plugin's type and name.
func (m *MaxWaiting) TypedName() framework.TypedName { return m.tn }

// Filter keeps the endpoints reporting fewer than maxWaiting waiting
// requests.
func (m *MaxWaiting) Filter(_ context.Context, _ *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint) []framework.Endpoint {
	kept := endpoints[:0]
	for _, e := range endpoints {
		if e.Metrics().WaitingRequests < m.max {
			kept = append(kept, e)
		}
	}
	return kept
}

func inFlight(endpoints []framework.Endpoint) []int64 {
	load := make([]int64, len(endpoints))
	for i, e := range endpoints {
		load[i], _ = e.InFlight()
	}
	return load
}

// matchRatios returns the prefix-cache scorer's per-endpoint match ratios
// for this cycle, nil when it did not run or the prompt has no block.
func matchRatios(state *framework.CycleState, n int) []float64 {
	if state == nil {
		return nil
	}
	v, ok := state.Read(prefixcache.MatchedKey)
	if !ok {
		return nil
	}
	m, ok := v.(prefixcache.Matched)
	if !ok || len(m.Ratios) != n {
		return nil
	}
	return m.Ratios
}

// leastOf returns the index of least load among those ok accepts, ties at
// random; -1 when none.
func leastOf(r *rng.Source, load []int64, ok func(int) bool) int {
	best, ties := -1, 0
	for i, l := range load {
		if !ok(i) {
			continue
		}
		switch {
		case best < 0 || l < load[best]:
			best, ties = i, 1
		case l == load[best]:
			// Reservoir sampling keeps each tied index with equal chance.
			ties++
			if r.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return best
}

func oneHot(scores []float64, n, pick int) {
	for i := range n {
		scores[i] = 0
	}
	if pick >= 0 {
		scores[pick] = 1
	}
}

var (
	_ framework.Scorer = (*SGLang)(nil)
	_ framework.Scorer = (*AIBrix)(nil)
	_ framework.Scorer = (*KthenaLeast)(nil)
	_ framework.Filter = (*MaxWaiting)(nil)
)
