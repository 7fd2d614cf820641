package router

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/observability"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/prefixtrack"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// prefixRouting is the router's part in precise prefix routing
// (docs/kv-events.md): it tokenises prompts with the engines' tokenizers
// (models[]), follows the KV events of the endpoints that publish them
// (prefixtrack.Tracker, whose View the prefix-cache scorers read), and
// compares predicted with engine-reported prefix hits (prefixtrack.Drift).
type prefixRouting struct {
	cfg    config.PrefixIndexConfig
	log    *slog.Logger
	clock  simclock.Clock
	models map[string]*promptTokenizer // by the engine's base model
	// tracker is nil when no configured endpoint publishes events and
	// router.prefixIndex is absent: the scorers then keep their
	// approximate index alone.
	tracker *prefixtrack.Tracker
	drift   *prefixtrack.Drift
}

// newPrefixRouting loads the models' tokenizers (each file once) and makes
// the tracker when an endpoint publishes KV events.
func newPrefixRouting(c *config.Config, log *slog.Logger, clock simclock.Clock, reg *observability.RouterMetrics) (*prefixRouting, error) {
	p := &prefixRouting{
		cfg:    c.Router.PrefixIndex.WithDefaults(),
		log:    log,
		clock:  clock,
		models: map[string]*promptTokenizer{},
	}
	loaded := map[string]tokenizer.Tokenizer{}
	for i, m := range c.Models {
		tok, ok := loaded[m.Tokenizer]
		if !ok {
			start := time.Now()
			var err error
			if tok, err = tokenizer.Load(m.Tokenizer); err != nil {
				return nil, fmt.Errorf("router: models[%d].tokenizer: %w", i, err)
			}
			loaded[m.Tokenizer] = tok
			log.Info("tokenizer loaded", "model", m.Name, "tokenizer", m.Tokenizer, "took", time.Since(start).Round(time.Millisecond).String())
		}
		p.models[m.Name] = &promptTokenizer{tok: tok, template: m.ChatTemplate, bos: m.BOS}
	}
	// Follow events when a configured endpoint publishes them, or when the
	// prefixIndex block asks for it (endpoints with events may come later,
	// from a reloaded endpoints file).
	follow := c.Router.PrefixIndex != nil
	for _, e := range c.Endpoints {
		follow = follow || e.KVEvents != nil
	}
	drift, err := prefixtrack.NewDrift(prefixtrack.DriftConfig{Window: p.cfg.DriftWindow.Duration, MinTokens: float64(p.cfg.DriftMinTokens)})
	if err != nil {
		return nil, fmt.Errorf("router: router.prefixIndex: %w", err)
	}
	p.drift = drift
	reg.Registry.MustRegister(drift)
	if follow {
		p.tracker, err = prefixtrack.New(prefixtrack.Config{
			Clock:          clock,
			Logger:         log,
			Registerer:     reg.Registry,
			BlockSize:      p.cfg.BlockSize,
			SilenceTimeout: p.cfg.SilenceTimeout.Duration,
			RecoverAfter:   p.cfg.RecoverAfter.Duration,
			PendingTTL:     p.cfg.PendingTTL.Duration,
			ReplayTimeout:  p.cfg.ReplayTimeout.Duration,
			OnRouted: func(endpoint string, blocks int) {
				p.drift.Predicted(endpoint, blocks*p.cfg.BlockSize)
			},
		})
		if err != nil {
			return nil, fmt.Errorf("router: router.prefixIndex: %w", err)
		}
		reg.Registry.MustRegister(p.tracker)
	}
	return p, nil
}

// hasher cuts prompts into blocks as the router's prefix hashing does
// (router.prefixIndex.blockSize; text in chunks of the default size).
func (p *prefixRouting) hasher() prefixindex.Hasher {
	return prefixindex.Hasher{BlockTokens: p.cfg.BlockSize}
}

// sharedInstances are the instances the profiles' plugins share: with a
// tracker, the prefix-cache scorers read its view (the precise index where
// an endpoint's events are trusted) through their handle.
func (p *prefixRouting) sharedInstances() map[string]any {
	if p.tracker == nil {
		return nil
	}
	return map[string]any{prefixcache.SharedIndexKey: prefixcache.SharedIndex{
		BlockSize:     p.cfg.BlockSize,
		BlockSizeFrom: "router.prefixIndex.blockSize",
		Wrap:          func(a *prefixindex.Approximate) prefixcache.Index { return p.tracker.View(a) },
	}}
}

// start starts following the publishers.
func (p *prefixRouting) start(ctx context.Context) error {
	if p.tracker == nil {
		return nil
	}
	return p.tracker.Start(ctx)
}

func (p *prefixRouting) stop() {
	if p.tracker != nil {
		p.tracker.Close()
	}
}

// sync follows the endpoint set given by discovery, subscribing to the
// KV events of the endpoints that have them.
func (p *prefixRouting) sync(specs []datastore.EndpointSpec, removed []*datastore.Endpoint) {
	for _, e := range removed {
		p.drift.Forget(e.Metadata().Name)
	}
	if p.tracker == nil {
		return
	}
	sources := make([]prefixtrack.Source, 0, len(specs))
	for _, s := range specs {
		src := prefixtrack.Source{Name: s.Metadata.Name, Model: s.Metadata.Model}
		if ev := s.KVEvents; ev != nil {
			src.Endpoint, src.ReplayEndpoint, src.Topic = ev.Endpoint, ev.ReplayEndpoint, ev.Topic
		}
		sources = append(sources, src)
	}
	if err := p.tracker.Set(sources); err != nil {
		p.log.Error("cannot follow the endpoints' KV events", "error", err)
	}
}

// monitor feeds the engines' scraped prefix counters to the tracker and the
// drift, and re-decides the endpoints' modes, every interval until ctx ends.
func (p *prefixRouting) monitor(ctx context.Context, store *datastore.Store, interval time.Duration) {
	tick := make(chan struct{}, 1)
	for {
		for _, e := range store.All() {
			m := e.Metrics()
			name := e.Metadata().Name
			p.drift.ObserveEngine(name, m.PrefixCacheHits, m.UpdateTime)
			if p.tracker != nil {
				p.tracker.ObserveEngine(name, m.PrefixCacheQueries, m.PrefixCacheHits, m.UpdateTime)
			}
		}
		if p.tracker != nil {
			p.tracker.Evaluate(p.clock.Now())
		}
		t := p.clock.AfterFunc(interval, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-tick:
		}
	}
}

// tokenize gives the request the token ids the engine of model will see,
// once per request: later attempts on endpoints of the same model reuse
// them. A model without a configured tokenizer keeps the prompt text.
func (p *prefixRouting) tokenize(c *call, model string) {
	if c.tokenizedFor == model {
		return
	}
	c.tokenizedFor = model
	pt, ok := p.models[model]
	if !ok {
		if c.req.Prompt.TokenIDs != nil && c.body.PromptTokenIDs == nil {
			// Tokenised for another model: back to the text.
			c.req.Prompt.TokenIDs = nil
			c.req.PromptTokens = countText(c.body.PromptText, c.req.Prompt.TextLen())
		}
		return
	}
	ids, count, err := pt.tokenize(c.body, c.req.Prompt.TextLen())
	if err != nil {
		p.log.Warn("cannot tokenise the prompt; routing on its text", "request_id", c.req.ID, "model", model, "error", err)
		return
	}
	// A prompt longer than tokenizeHeadBytes: ids of its head, its length
	// estimated.
	c.req.Prompt.TokenIDs = ids
	c.req.PromptTokens = count
}

// predicted records the hit the prefix-cache scorer predicted for the
// endpoint a request is sent to, after PreRequest. With a tracker, its
// views report the prediction instead (Config.OnRouted), leaving out the
// pending claims that PredictedHit includes.
func (p *prefixRouting) predicted(state *framework.CycleState, endpoint string) {
	if p.tracker != nil {
		return
	}
	if hit, ok := framework.ReadAs[prefixcache.PredictedHit](state, prefixcache.PredictedHitKey); ok {
		p.drift.Predicted(endpoint, hit.MatchedTokens)
	}
}

// explain adds the candidates' index modes to an explanation.
func (p *prefixRouting) explain(ex *framework.Explanation) {
	if p.tracker == nil || ex == nil {
		return
	}
	names := make([]string, 0, len(ex.Endpoints))
	for _, e := range ex.Endpoints {
		names = append(names, e.Name)
	}
	ex.Notes = append(ex.Notes, p.tracker.Explain(names))
}

// modes returns each endpoint's index mode, for /debug/route.
func (p *prefixRouting) modes(ex *framework.Explanation) map[string]string {
	if p.tracker == nil || ex == nil {
		return nil
	}
	out := make(map[string]string, len(ex.Endpoints))
	for _, e := range ex.Endpoints {
		st := p.tracker.Status(e.Name)
		out[e.Name] = string(st.Mode)
		if st.Mode == prefixtrack.ModeApproximate {
			out[e.Name] += " (" + st.Reason + ")"
		}
	}
	return out
}
