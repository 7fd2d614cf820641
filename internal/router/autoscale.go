package router

import (
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// WaitingRoom reports the requests the router holds for a pool because no
// endpoint of it is ready (demand from zero). Admission's queue provides
// it when it holds such requests; without one the signal is 0.
type WaitingRoom interface {
	Waiting(pool string) int
}

// queueRoom is the WaitingRoom of a router whose admission has a fair
// queue: the requests queued for the models routed to the pool (waiting for
// capacity, or for a pool with no ready endpoint; admission bounds both).
type queueRoom struct{ r *Router }

// Waiting sums the queue's demand over the models whose route targets pool.
func (q queueRoom) Waiting(pool string) int {
	n := 0
	for model, waiting := range q.r.admission.Queue().Demand() {
		route, ok := q.r.routes().table.Lookup(model)
		if !ok {
			continue
		}
		for _, t := range route.Targets() {
			if t.Pool == pool {
				n += waiting
				break
			}
		}
	}
	return n
}

// signalBook keeps, per pool, what autoscalers read besides the engines'
// scraped state: the outcomes of finished requests (against the TTFT and
// TPOT objectives), generated tokens, and prompt tokens sent whose first
// token has not come back (outstanding prefill), over a sliding window of
// two buckets.
type signalBook struct {
	ttft, tpot, window time.Duration
	now                func() time.Time

	mu    sync.Mutex
	pools map[string]*poolBook

	// ledgerMu guards ledger: per endpoint, the decayed hits of the prefix
	// blocks the engine reported cached (GET /autoscale/endpoints).
	ledgerMu sync.Mutex
	ledger   autoscale.HitLedger
	// hasher cuts prompts into the ledger's blocks: the router's prefix
	// hashing (router.prefixIndex.blockSize).
	hasher prefixindex.Hasher
}

// hit credits to endpoint the blocks of req's prompt the engine reported
// cached in out (autoscale.HitLedger.Credit, hashed with the book's
// hasher).
func (b *signalBook) hit(endpoint string, req *framework.Request, out framework.Outcome) {
	now := b.now()
	b.ledgerMu.Lock()
	b.ledger.Credit(endpoint, now, b.hasher, req, out)
	b.ledgerMu.Unlock()
}

// hot returns endpoint's hottest blocks (at most
// autoscale.HotBlocksReported) and their decayed hits.
func (b *signalBook) hot(endpoint string) map[uint64]float64 {
	b.ledgerMu.Lock()
	defer b.ledgerMu.Unlock()
	return b.ledger.Hottest(endpoint, b.now(), autoscale.HotBlocksReported)
}

// forget drops removed endpoints from the ledger.
func (b *signalBook) forget(endpoint string) {
	b.ledgerMu.Lock()
	b.ledger.Forget(endpoint)
	b.ledgerMu.Unlock()
}

type poolBook struct {
	cur, prev bucket
	curStart  time.Time
	prefill   int64
}

type bucket struct {
	finished, ttftOK, tpotOK, sent int
	tokens                         int64
	valid                          bool
}

func newSignalBook(cfg config.AutoscalingSignalsConfig, hasher prefixindex.Hasher, now func() time.Time) *signalBook {
	or := func(d, def time.Duration) time.Duration {
		if d <= 0 {
			return def
		}
		return d
	}
	return &signalBook{
		ttft: or(cfg.TTFT.Duration, config.DefaultAutoscalingTTFT), tpot: or(cfg.TPOT.Duration, config.DefaultAutoscalingTPOT),
		window: or(cfg.Window.Duration, config.DefaultAutoscalingWindow), now: now, pools: map[string]*poolBook{}, hasher: hasher,
	}
}

// pool returns the pool's book, its buckets rotated to now; mu is held.
func (b *signalBook) pool(name string, now time.Time) *poolBook {
	p := b.pools[name]
	if p == nil {
		p = &poolBook{curStart: now}
		b.pools[name] = p
	}
	if age := now.Sub(p.curStart); age >= b.window {
		if age >= 2*b.window {
			p.prev = bucket{}
		} else {
			p.prev = p.cur
			p.prev.valid = true
		}
		p.cur, p.curStart = bucket{}, now
	}
	return p
}

// sent counts a request's prompt tokens as outstanding prefill on pool.
func (b *signalBook) sent(pool string, promptTokens int) {
	b.mu.Lock()
	p := b.pool(pool, b.now())
	p.prefill += int64(promptTokens)
	p.cur.sent++
	b.mu.Unlock()
}

// firstToken ends a request's outstanding prefill.
func (b *signalBook) firstToken(pool string, promptTokens int) {
	b.mu.Lock()
	p := b.pool(pool, b.now())
	p.prefill = max(p.prefill-int64(promptTokens), 0)
	b.mu.Unlock()
}

// finished records a request that ended: its TTFT (0: no token came) and
// TPOT, and its generated tokens.
func (b *signalBook) finished(pool string, ttft, tpot time.Duration, tokens int) {
	b.mu.Lock()
	p := b.pool(pool, b.now())
	p.cur.finished++
	if ttft > 0 && ttft <= b.ttft {
		p.cur.ttftOK++
	}
	if ttft > 0 && tpot <= b.tpot {
		p.cur.tpotOK++
	}
	p.cur.tokens += int64(tokens)
	b.mu.Unlock()
}

// signals summarises pool: its healthy endpoints' scraped state plus the
// book's window.
func (b *signalBook) signals(pool string, eps []*datastore.Endpoint, room WaitingRoom) autoscale.Signals {
	s := autoscale.Signals{TTFTAttainment: autoscale.Unknown, TPOTAttainment: autoscale.Unknown}
	var roles map[string]autoscale.Signals
	for _, e := range eps {
		if !e.Healthy() {
			continue
		}
		m := e.Metrics()
		s.Engines++
		s.Waiting += float64(m.WaitingRequests)
		s.Running += float64(m.RunningRequests)
		s.KVUsage += m.KVCacheUsage
		if role := e.Metadata().Role; role == framework.RolePrefill || role == framework.RoleDecode {
			if roles == nil {
				roles = map[string]autoscale.Signals{}
			}
			r := roles[string(role)]
			r.Engines++
			r.Waiting += float64(m.WaitingRequests)
			r.Running += float64(m.RunningRequests)
			r.KVUsage += m.KVCacheUsage
			roles[string(role)] = r
		}
	}
	now := b.now()
	b.mu.Lock()
	p := b.pool(pool, now)
	s.PrefillTokens = float64(p.prefill)
	sum := p.cur
	span := now.Sub(p.curStart)
	if p.prev.valid {
		sum.finished += p.prev.finished
		sum.ttftOK += p.prev.ttftOK
		sum.tpotOK += p.prev.tpotOK
		sum.tokens += p.prev.tokens
		sum.sent += p.prev.sent
		span += b.window
	}
	b.mu.Unlock()
	if span > 0 {
		s.TokensPerSecond = float64(sum.tokens) / span.Seconds()
		s.RequestsPerSecond = float64(sum.sent) / span.Seconds()
	}
	if sum.finished > 0 {
		s.TTFTAttainment = float64(sum.ttftOK) / float64(sum.finished)
		s.TPOTAttainment = float64(sum.tpotOK) / float64(sum.finished)
	}
	if room != nil {
		s.WaitingRoom = float64(room.Waiting(pool))
	}
	if roles != nil {
		// Disaggregated serving: prefill carries the outstanding prompt
		// tokens and TTFT, decode the generated tokens and TPOT.
		pf, dc := roles[autoscale.RolePrefill], roles[autoscale.RoleDecode]
		pf.PrefillTokens, pf.RequestsPerSecond, pf.TTFTAttainment, pf.TPOTAttainment = s.PrefillTokens, s.RequestsPerSecond, s.TTFTAttainment, autoscale.Unknown
		dc.TokensPerSecond, dc.RequestsPerSecond, dc.TTFTAttainment, dc.TPOTAttainment = s.TokensPerSecond, s.RequestsPerSecond, autoscale.Unknown, s.TPOTAttainment
		s.Roles = map[string]autoscale.Signals{autoscale.RolePrefill: pf, autoscale.RoleDecode: dc}
	}
	return s
}

// allSignals returns the signals of every pool that has endpoints or that
// a route targets (a pool scaled to zero has no endpoint, and its waiting
// room is the demand that wakes it).
func (r *Router) allSignals() map[string]autoscale.Signals {
	out := map[string]autoscale.Signals{}
	pools := r.store.Pools()
	table := r.routes().table
	for _, model := range table.Models() {
		if route, ok := table.Lookup(model); ok {
			for _, t := range route.Targets() {
				pools = append(pools, t.Pool)
			}
		}
	}
	for _, pool := range pools {
		if _, done := out[pool]; !done {
			out[pool] = r.signals.signals(pool, r.store.Pool(pool), r.waitingRoom)
		}
	}
	return out
}

// serveAutoscaleSignals answers GET /autoscale/signals (admin listener):
// {"pools": {POOL: Signals}}, or one pool with ?pool=NAME.
func (r *Router) serveAutoscaleSignals(w http.ResponseWriter, hr *http.Request) {
	all := r.allSignals()
	if p := hr.URL.Query().Get("pool"); p != "" {
		s, ok := all[p]
		if !ok {
			http.Error(w, `{"error":{"message":"unknown pool","type":"invalid_request_error","param":"pool","code":"unknown_pool"}}`, http.StatusNotFound)
			return
		}
		all = map[string]autoscale.Signals{p: s}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Pools map[string]autoscale.Signals `json:"pools"`
	}{all})
}

// serveAutoscaleEndpoints answers GET /autoscale/endpoints?pool=NAME
// (admin listener): per endpoint of the pool, its group label, the
// requests in flight on it, whether it drains, and its hottest cached
// prefix blocks with their decayed hits (autoscale.EndpointLoad; the
// controller chooses scale-down victims and waits for drains from it).
func (r *Router) serveAutoscaleEndpoints(w http.ResponseWriter, hr *http.Request) {
	pool := hr.URL.Query().Get("pool")
	if pool == "" {
		http.Error(w, `{"error":{"message":"pool is required","type":"invalid_request_error","param":"pool","code":"missing_pool"}}`, http.StatusBadRequest)
		return
	}
	eps := r.store.Pool(pool)
	out := make([]autoscale.EndpointLoad, 0, len(eps))
	for _, e := range eps {
		md := e.Metadata()
		n, _ := e.InFlight()
		out = append(out, autoscale.EndpointLoad{
			Name: md.Name, Group: md.Labels[discoveryLabelGroup], InFlight: n, Draining: e.Draining(), Hot: r.signals.hot(md.Name),
		})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Endpoints []autoscale.EndpointLoad `json:"endpoints"`
	}{out})
}

// discoveryLabelGroup is the endpoint label Kubernetes discovery puts a
// pod's group index in (discovery.LabelGroup).
const discoveryLabelGroup = "group"

// signalCollector exports the signals as halyard_router_autoscale_*
// gauges, one series per pool, for HPA or KEDA (docs/autoscaling.md).
type signalCollector struct{ r *Router }

var signalDescs = func() map[string]*prometheus.Desc {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("halyard_router_autoscale_"+name, help, []string{"pool"}, nil)
	}
	return map[string]*prometheus.Desc{
		"engines":          d("engines", "Healthy endpoints of the pool."),
		"waiting":          d("waiting_requests", "Requests waiting in the pool's engines' queues (sum at the last scrape)."),
		"running":          d("running_requests", "Requests the pool's engines run (sum at the last scrape)."),
		"kv":               d("kv_cache_usage", "Sum of the pool's engines' KV-cache usage (0-1 each)."),
		"prefill":          d("prefill_tokens", "Prompt tokens sent to the pool whose first token has not come back."),
		"tokens":           d("generated_tokens_per_second", "Tokens generated per second over the signal window."),
		"requests":         d("requests_per_second", "Requests sent to the pool per second over the signal window (attempts)."),
		"ttft":             d("ttft_attainment", "Share of requests finished in the window that met the TTFT objective (-1: none finished)."),
		"tpot":             d("tpot_attainment", "Share of requests finished in the window that met the TPOT objective (-1: none finished)."),
		"room":             d("waiting_room_requests", "Requests held because no endpoint of the pool is ready."),
		"waiting_per_peer": d("waiting_requests_per_engine", "Waiting requests per healthy endpoint (0 without one): an HPA AverageValue target."),
	}
}()

func (c signalCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range signalDescs {
		ch <- d
	}
}

func (c signalCollector) Collect(ch chan<- prometheus.Metric) {
	all := c.r.allSignals()
	pools := make([]string, 0, len(all))
	for p := range all {
		pools = append(pools, p)
	}
	sort.Strings(pools)
	for _, p := range pools {
		s := all[p]
		perEngine := 0.0
		if s.Engines > 0 {
			perEngine = s.Waiting / float64(s.Engines)
		}
		for k, v := range map[string]float64{
			"engines": float64(s.Engines), "waiting": s.Waiting, "running": s.Running, "kv": s.KVUsage,
			"prefill": s.PrefillTokens, "tokens": s.TokensPerSecond, "requests": s.RequestsPerSecond, "ttft": s.TTFTAttainment, "tpot": s.TPOTAttainment,
			"room": s.WaitingRoom, "waiting_per_peer": perEngine,
		} {
			ch <- prometheus.MustNewConstMetric(signalDescs[k], prometheus.GaugeValue, v, p)
		}
	}
}

var _ prometheus.Collector = signalCollector{}

// signalFirstToken ends the attempt's outstanding prefill at its first
// token.
func (r *Router) signalFirstToken(c *call, pool string, at time.Time) {
	if c.firstByte.IsZero() {
		c.firstByte = at
		r.signals.firstToken(pool, c.req.PromptTokens)
	}
}

// signalAttempt records an attempt's end: a failure (no token) or its TTFT
// and TPOT, and the prefix blocks the engine reported cached as hits on
// it (the hit ledger behind cache-aware scale-down).
func (r *Router) signalAttempt(c *call, pool, endpoint string, out framework.Outcome) {
	if out.CachedTokens > 0 {
		r.signals.hit(endpoint, c.req, out)
	}
	if c.firstByte.IsZero() {
		r.signals.firstToken(pool, c.req.PromptTokens)
		r.signals.finished(pool, 0, 0, 0)
		return
	}
	var tpot time.Duration
	if n := out.CompletionTokens; n > 1 {
		tpot = r.now().Sub(c.firstByte) / time.Duration(n-1)
	}
	ttft := c.firstByte.Sub(c.start)
	if out.Err != nil {
		ttft = 0
	}
	r.signals.finished(pool, ttft, tpot, out.CompletionTokens)
}
