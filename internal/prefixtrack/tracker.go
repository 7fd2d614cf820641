package prefixtrack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/kvevents"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/simclock"
)

// Mode says which index answers for an endpoint.
type Mode string

// Modes.
const (
	ModePrecise     Mode = "precise"
	ModeApproximate Mode = "approximate"
)

// Reasons an endpoint is approximate; they label
// halyard_router_prefix_index_fallbacks_total.
const (
	ReasonNoEvents     = "no-events"    // the endpoint is not configured with KV events
	ReasonDisconnected = "disconnected" // the subscription is not connected
	ReasonEventsLost   = "events-lost"  // events were lost beyond repair (a gap, a reconnection, undecodable data)
	ReasonSilent       = "silent"       // no events while the engine caches new prompts
	ReasonBlockSize    = "block-size"   // the engine's blocks are not the router's size
)

// Defaults of Config.
const (
	DefaultSilenceTimeout = 10 * time.Second
	DefaultRecoverAfter   = 2 * time.Minute
	DefaultPendingTTL     = 10 * time.Second
	DefaultBlockSize      = prefixindex.DefaultBlockTokens
)

// Config configures a Tracker. Zero fields take the defaults, except
// PendingTTL: zero turns pending claims off.
type Config struct {
	// Clock times silence, recovery and pending claims, and is given to the
	// subscribers; default simclock.Real.
	Clock simclock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the halyard_kvevents_* subscriber metrics; nil
	// leaves them unregistered. The tracker's own metrics are collected
	// through the Tracker (a prometheus.Collector).
	Registerer prometheus.Registerer
	// BlockSize is the router's block size in tokens (the prefix-cache
	// scorer's blockSize); engines must publish blocks of this size.
	// Default 16.
	BlockSize int
	// SilenceTimeout: an endpoint whose metrics show it caching new prompt
	// tokens, but from which no event batch arrived for this long, falls
	// back to approximate. Default 10s.
	SilenceTimeout time.Duration
	// RecoverAfter: an endpoint whose events were lost beyond repair
	// returns to precise after this long even without a complete resync
	// (its picture then under-counts, never over-counts). Default 2m.
	RecoverAfter time.Duration
	// PendingTTL: blocks of a request just routed count as held by its
	// endpoint for this long, or until the engine reports them. 0: off.
	PendingTTL time.Duration
	// ReplayTimeout bounds one replay exchange of a subscriber; default
	// kvevents.DefaultReplayTimeout.
	ReplayTimeout time.Duration
	// OnRouted, if set, is told of every request a View records (Add),
	// before recording it: how many leading blocks of its prompt the
	// endpoint holds by the knowledge the engine confirms — the precise
	// index's reported blocks for a precise endpoint (pending claims, the
	// router's own guesses, not counted), the approximate index otherwise.
	// It is the prediction the drift alarm checks against the engine.
	OnRouted func(endpoint string, confirmedBlocks int)
}

// Source is one endpoint the tracker knows. An endpoint without Endpoint
// publishes no events and is always approximate.
type Source struct {
	// Name is the router's endpoint name.
	Name string
	// Model is the base model the engine serves: the root of its chains.
	Model string
	// Endpoint and ReplayEndpoint are the engine's publisher and replay
	// addresses; Topic a prefix filter on topics ("" takes all).
	Endpoint, ReplayEndpoint, Topic string
}

// Tracker follows engines' KV events into a precise index and decides, per
// endpoint, whether the precise or the approximate index answers. It is
// safe for concurrent use.
type Tracker struct {
	cfg     Config
	log     *slog.Logger
	precise *prefixindex.Precise
	kvm     *kvevents.Metrics
	descs   trackerDescs

	// setMu orders Start and Set, which hand the pool its sources outside
	// mu: stopping a subscriber delivers AllCleared, which takes mu.
	setMu     sync.Mutex
	mu        sync.Mutex
	eps       map[string]*endpointState
	rehashers map[string]*kvevents.Rehasher // by model
	pool      *kvevents.Pool
	started   bool

	// precise is the set of endpoints currently answered by the precise
	// index, read lock-free by every Match.
	preciseSet atomic.Pointer[map[string]struct{}]
}

type endpointState struct {
	src Source
	// fed endpoints get their events from Feed, not a subscription
	// (virtual time): they are precise unless their block size differs.
	fed bool

	mode   Mode
	reason string // a Reason* constant
	detail string // for logs and explanations
	since  time.Time

	followedAt   time.Time
	connectedAt  time.Time
	wasConnected bool

	// Engine activity from the scrapes: uncached prompt tokens (prefix
	// queries minus hits) and when they were read.
	haveMiss   bool
	lastMiss   float64
	lastScrape time.Time
	// activeSince is the start of the first scrape interval in which the
	// engine cached new tokens with no event batch since; zero when events
	// followed.
	activeSince time.Time

	lostAt     time.Time // events lost and not yet repaired
	lostWhy    string
	badBlock   int // the engine's block size when it is not the router's
	fallbacks  map[string]float64
	lastBatchT time.Time // fed endpoints: when events last arrived
}

// New returns a Tracker that follows nothing yet.
func New(cfg Config) (*Tracker, error) {
	if cfg.Clock == nil {
		cfg.Clock = simclock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = DefaultBlockSize
	}
	if cfg.SilenceTimeout == 0 {
		cfg.SilenceTimeout = DefaultSilenceTimeout
	}
	if cfg.RecoverAfter == 0 {
		cfg.RecoverAfter = DefaultRecoverAfter
	}
	switch {
	case cfg.BlockSize < 0:
		return nil, fmt.Errorf("prefixtrack: blockSize: must be positive, got %d", cfg.BlockSize)
	case cfg.SilenceTimeout < 0:
		return nil, fmt.Errorf("prefixtrack: silenceTimeout: must be positive, got %s", cfg.SilenceTimeout)
	case cfg.RecoverAfter < 0:
		return nil, fmt.Errorf("prefixtrack: recoverAfter: must be positive, got %s", cfg.RecoverAfter)
	case cfg.PendingTTL < 0:
		return nil, fmt.Errorf("prefixtrack: pendingTTL: must not be negative, got %s", cfg.PendingTTL)
	}
	kvm, err := kvevents.NewMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("prefixtrack: %w", err)
	}
	t := &Tracker{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "prefix-tracker"),
		precise:   prefixindex.NewPrecise(cfg.Clock.Now),
		kvm:       kvm,
		descs:     newTrackerDescs(),
		eps:       make(map[string]*endpointState),
		rehashers: make(map[string]*kvevents.Rehasher),
	}
	empty := map[string]struct{}{}
	t.preciseSet.Store(&empty)
	return t, nil
}

// Precise returns the precise index (read-only use).
func (t *Tracker) Precise() *prefixindex.Precise { return t.precise }

// Consumer returns the kvevents.Consumer the tracker's subscribers use;
// Feed delivers events through it without sockets.
func (t *Tracker) Consumer() kvevents.Consumer { return (*consumer)(t) }

// Start starts following the endpoints with events, until ctx ends or
// Close. Set may be called before or after.
func (t *Tracker) Start(ctx context.Context) error {
	t.setMu.Lock()
	defer t.setMu.Unlock()
	t.mu.Lock()
	if t.started {
		t.mu.Unlock()
		return errors.New("prefixtrack: started twice")
	}
	pool, err := kvevents.NewPool(ctx, kvevents.SubscriberConfig{
		Consumer:      t.Consumer(),
		ReplayTimeout: t.cfg.ReplayTimeout,
		Clock:         t.cfg.Clock,
		Logger:        t.cfg.Logger,
		Metrics:       t.kvm,
	})
	if err != nil {
		t.mu.Unlock()
		return fmt.Errorf("prefixtrack: %w", err)
	}
	t.pool, t.started = pool, true
	sources := t.sourcesLocked()
	t.mu.Unlock()
	return pool.Set(sources)
}

// Close stops every subscription.
func (t *Tracker) Close() {
	t.mu.Lock()
	pool := t.pool
	t.pool = nil
	t.mu.Unlock()
	if pool != nil {
		pool.Close()
	}
}

func (t *Tracker) sourcesLocked() []kvevents.Source {
	var out []kvevents.Source
	for _, e := range t.eps {
		if e.src.Endpoint != "" && !e.fed {
			out = append(out, kvevents.Source{Name: e.src.Name, Endpoint: e.src.Endpoint, ReplayEndpoint: e.src.ReplayEndpoint, Topic: e.src.Topic})
		}
	}
	return out
}

// Set makes the tracker know exactly sources: it subscribes to the new
// publishers, resubscribes to changed ones, and forgets endpoints no longer
// listed (and what it knew of them).
func (t *Tracker) Set(sources []Source) error {
	now := t.cfg.Clock.Now()
	t.setMu.Lock()
	defer t.setMu.Unlock()
	t.mu.Lock()
	want := make(map[string]Source, len(sources))
	for i, s := range sources {
		if s.Name == "" {
			t.mu.Unlock()
			return fmt.Errorf("prefixtrack: sources[%d].name: required", i)
		}
		if _, dup := want[s.Name]; dup {
			t.mu.Unlock()
			return fmt.Errorf("prefixtrack: sources[%d].name: %q appears twice", i, s.Name)
		}
		want[s.Name] = s
	}
	var forget []string
	for name, e := range t.eps {
		s, ok := want[name]
		if !ok || s.Model != e.src.Model || s.Endpoint != e.src.Endpoint || s.ReplayEndpoint != e.src.ReplayEndpoint || s.Topic != e.src.Topic {
			delete(t.eps, name)
			forget = append(forget, name)
		}
	}
	for name, s := range want {
		if _, ok := t.eps[name]; ok {
			continue
		}
		e := &endpointState{src: s, followedAt: now, since: now, fallbacks: map[string]float64{}}
		e.mode, e.reason = ModeApproximate, ReasonDisconnected
		if s.Endpoint == "" {
			e.reason = ReasonNoEvents
		}
		t.eps[name] = e
		if s.Endpoint != "" {
			t.rehasherLocked(s.Model)
		}
	}
	for _, name := range forget {
		t.forgetLocked(name)
	}
	pool, subs := t.pool, t.sourcesLocked()
	t.publishLocked()
	t.mu.Unlock()
	if pool == nil {
		return nil
	}
	return pool.Set(subs)
}

// Feed makes the tracker follow name, whose engine serves model, from
// events delivered directly through Consumer() (the bench's virtual time):
// no subscription, no silence check.
func (t *Tracker) Feed(name, model string) {
	now := t.cfg.Clock.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.eps[name] = &endpointState{src: Source{Name: name, Model: model}, fed: true, mode: ModePrecise, since: now, followedAt: now, fallbacks: map[string]float64{}}
	t.rehasherLocked(model)
	t.publishLocked()
}

// forgetLocked drops what the tracker knew of name. (The rehashers and the
// precise index have locks of their own, never held while taking t.mu.)
func (t *Tracker) forgetLocked(name string) {
	for _, rh := range t.rehashers {
		rh.Forget(name)
	}
	t.precise.Cleared(name)
}

func (t *Tracker) rehasherLocked(model string) *kvevents.Rehasher {
	if rh, ok := t.rehashers[model]; ok {
		return rh
	}
	rh, _ := kvevents.NewRehasher(kvevents.RehasherConfig{
		Hash: func(parent uint64, ids []uint32) uint64 {
			return uint64(prefixindex.NextTokens(prefixindex.BlockHash(parent), ids))
		},
		// The scorer seeds a chain with the model the engine is asked for:
		// the base model, or the LoRA adapter's name.
		Root: func(lora string) uint64 {
			if lora == "" {
				return uint64(prefixindex.Seed(model))
			}
			return uint64(prefixindex.Seed(lora))
		},
		Index:   t.precise,
		Logger:  t.cfg.Logger,
		Metrics: t.kvm,
	})
	t.rehashers[model] = rh
	return rh
}

// rehasher returns the Rehasher of endpoint's model, or nil for an
// endpoint the tracker does not follow.
func (t *Tracker) rehasher(endpoint string) *kvevents.Rehasher {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.eps[endpoint]
	if !ok {
		return nil
	}
	return t.rehashers[e.src.Model]
}

// ObserveEngine records an endpoint's prefix-cache counters as scraped at
// at (vllm:prefix_cache_queries_total and _hits_total, in tokens): growing
// misses show the engine caching new prompts, which must produce events.
func (t *Tracker) ObserveEngine(endpoint string, queries, hits float64, at time.Time) {
	if at.IsZero() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.eps[endpoint]
	if !ok || !at.After(e.lastScrape) {
		return
	}
	miss := queries - hits
	if e.haveMiss && miss-e.lastMiss >= float64(t.cfg.BlockSize) && e.activeSince.IsZero() {
		// New tokens were cached between the last scrape and this one.
		e.activeSince = e.lastScrape
	}
	e.haveMiss, e.lastMiss, e.lastScrape = true, miss, at
}

// Evaluate decides every endpoint's mode at now from its subscription's
// status and the engine activity observed; the router calls it after each
// round of scrapes. It also expires pending claims.
func (t *Tracker) Evaluate(now time.Time) {
	t.mu.Lock()
	for _, e := range t.eps {
		var st kvevents.Status
		switch {
		case e.fed:
			st = kvevents.Status{Connected: true, LastBatch: e.lastBatchT}
		case e.src.Endpoint == "":
		case t.pool != nil:
			st, _ = t.pool.Status(e.src.Name)
		}
		t.decideLocked(e, st, now)
	}
	t.publishLocked()
	t.mu.Unlock()
	t.precise.ExpirePending(now)
}

func (t *Tracker) decideLocked(e *endpointState, st kvevents.Status, now time.Time) {
	if st.Connected && !e.wasConnected {
		e.connectedAt = now
	}
	e.wasConnected = st.Connected
	heard := latest(st.LastBatch, e.connectedAt, e.followedAt)
	if !e.activeSince.IsZero() && st.LastBatch.After(e.activeSince) {
		e.activeSince = time.Time{} // events followed the activity
	}
	if !e.lostAt.IsZero() && now.Sub(e.lostAt) >= t.cfg.RecoverAfter {
		t.log.Info("returning to the precise index after events were lost", "endpoint", e.src.Name, "lost_for", now.Sub(e.lostAt).String())
		e.lostAt, e.lostWhy = time.Time{}, ""
	}
	mode, reason, detail := ModePrecise, "", ""
	switch {
	case e.src.Endpoint == "" && !e.fed:
		mode, reason = ModeApproximate, ReasonNoEvents
	case e.badBlock != 0:
		mode, reason, detail = ModeApproximate, ReasonBlockSize, fmt.Sprintf("engine blocks of %d tokens, router %d", e.badBlock, t.cfg.BlockSize)
	case !st.Connected:
		mode, reason = ModeApproximate, ReasonDisconnected
	case !e.lostAt.IsZero():
		mode, reason, detail = ModeApproximate, ReasonEventsLost, e.lostWhy
	case !e.activeSince.IsZero() && now.Sub(latest(e.activeSince, heard)) > t.cfg.SilenceTimeout:
		mode, reason = ModeApproximate, ReasonSilent
		detail = fmt.Sprintf("no events for %s while the engine cached new prompts", now.Sub(latest(e.activeSince, heard)).Round(time.Millisecond))
	}
	t.setModeLocked(e, mode, reason, detail, now)
}

// setModeLocked changes e's mode, logging and counting fallbacks.
func (t *Tracker) setModeLocked(e *endpointState, mode Mode, reason, detail string, now time.Time) {
	if mode == e.mode && reason == e.reason {
		e.detail = detail
		return
	}
	if mode == ModeApproximate && reason != ReasonNoEvents {
		e.fallbacks[reason]++
		t.log.Warn("prefix index falls back to approximate", "endpoint", e.src.Name, "reason", reason, "detail", detail)
	} else if mode == ModePrecise {
		t.log.Info("prefix index precise", "endpoint", e.src.Name, "after", string(e.mode)+"/"+e.reason)
	}
	e.mode, e.reason, e.detail, e.since = mode, reason, detail, now
}

func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

func (t *Tracker) publishLocked() {
	set := make(map[string]struct{}, len(t.eps))
	for name, e := range t.eps {
		if e.mode == ModePrecise {
			set[name] = struct{}{}
		}
	}
	t.preciseSet.Store(&set)
}

// IsPrecise reports whether the precise index answers for endpoint.
func (t *Tracker) IsPrecise(endpoint string) bool {
	_, ok := (*t.preciseSet.Load())[endpoint]
	return ok
}

// Status is an endpoint's mode and why.
type Status struct {
	Mode Mode
	// Reason is a Reason* constant when Mode is approximate.
	Reason string
	// Detail says more, for logs and explanations.
	Detail string
	// Since is when the mode began.
	Since time.Time
	// Blocks is the number of blocks the engine reported holding.
	Blocks int
}

// Status returns endpoint's status; an endpoint the tracker does not know
// is approximate for want of events.
func (t *Tracker) Status(endpoint string) Status {
	t.mu.Lock()
	e, ok := t.eps[endpoint]
	var st Status
	if ok {
		st = Status{Mode: e.mode, Reason: e.reason, Detail: e.detail, Since: e.since}
	} else {
		st = Status{Mode: ModeApproximate, Reason: ReasonNoEvents}
	}
	t.mu.Unlock()
	st.Blocks = t.precise.EndpointBlocks(endpoint)
	return st
}

// Explain describes the modes of endpoints in one line, for routing
// explanations: "prefix index: e0 precise, e1 approximate (silent: ...)".
func (t *Tracker) Explain(endpoints []string) string {
	var b strings.Builder
	b.WriteString("prefix index:")
	names := append([]string(nil), endpoints...)
	sort.Strings(names)
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		st := t.Status(n)
		b.WriteByte(' ')
		b.WriteString(n)
		b.WriteByte(' ')
		b.WriteString(string(st.Mode))
		if st.Mode == ModeApproximate {
			b.WriteString(" (")
			b.WriteString(st.Reason)
			if st.Detail != "" {
				b.WriteString(": ")
				b.WriteString(st.Detail)
			}
			b.WriteByte(')')
		}
	}
	return b.String()
}

// consumer is the Tracker as a kvevents.Consumer: it hands each endpoint's
// events to its model's Rehasher and notes losses and resyncs.
type consumer Tracker

func (c *consumer) t() *Tracker { return (*Tracker)(c) }

func (c *consumer) BlockStored(endpoint string, ev *kvevents.BlockStored) {
	t := c.t()
	rh := t.rehasher(endpoint)
	if rh == nil {
		return
	}
	t.noteBatch(endpoint)
	if ev.BlockSize != t.cfg.BlockSize {
		t.mu.Lock()
		e := t.eps[endpoint]
		first := e != nil && e.badBlock == 0
		if e != nil {
			e.badBlock = ev.BlockSize
		}
		t.mu.Unlock()
		if first {
			t.log.Warn("engine publishes blocks of another size than the router's; its precise index is unusable",
				"endpoint", endpoint, "engine_block_size", ev.BlockSize, "router_block_size", t.cfg.BlockSize)
		}
		return
	}
	rh.BlockStored(endpoint, ev)
}

func (c *consumer) BlockRemoved(endpoint string, ev *kvevents.BlockRemoved) {
	t := c.t()
	if rh := t.rehasher(endpoint); rh != nil {
		t.noteBatch(endpoint)
		rh.BlockRemoved(endpoint, ev)
	}
}

// AllCleared implements kvevents.Consumer: the engine's cache is empty, so
// the precise picture is exact again.
func (c *consumer) AllCleared(endpoint string) {
	t := c.t()
	rh := t.rehasher(endpoint)
	if rh == nil {
		t.precise.Cleared(endpoint)
		return
	}
	t.noteBatch(endpoint)
	rh.AllCleared(endpoint)
	t.mu.Lock()
	if e := t.eps[endpoint]; e != nil {
		e.lostAt, e.lostWhy = time.Time{}, ""
	}
	t.mu.Unlock()
}

func (c *consumer) Unreliable(endpoint, reason string) {
	t := c.t()
	rh := t.rehasher(endpoint)
	if rh == nil {
		return
	}
	rh.Unreliable(endpoint, reason)
	now := t.cfg.Clock.Now()
	t.mu.Lock()
	if e := t.eps[endpoint]; e != nil {
		e.lostAt, e.lostWhy = now, reason
		t.setModeLocked(e, ModeApproximate, ReasonEventsLost, reason, now)
		t.publishLocked()
	}
	t.mu.Unlock()
}

// Resynced implements kvevents.Resyncer: a complete rebuild from the
// publisher's buffer repairs a loss.
func (c *consumer) Resynced(endpoint string, complete bool) {
	if !complete {
		return
	}
	t := c.t()
	t.mu.Lock()
	if e := t.eps[endpoint]; e != nil && !e.lostAt.IsZero() {
		t.log.Info("events resynced from the replay buffer", "endpoint", endpoint)
		e.lostAt, e.lostWhy = time.Time{}, ""
	}
	t.mu.Unlock()
}

// noteBatch records, for fed endpoints, that events arrived (subscribed
// endpoints report it in their status).
func (t *Tracker) noteBatch(endpoint string) {
	t.mu.Lock()
	if e := t.eps[endpoint]; e != nil && e.fed {
		e.lastBatchT = t.cfg.Clock.Now()
	}
	t.mu.Unlock()
}

var (
	_ kvevents.Consumer = (*consumer)(nil)
	_ kvevents.Resyncer = (*consumer)(nil)
	_ kvevents.Index    = (*prefixindex.Precise)(nil)
)
