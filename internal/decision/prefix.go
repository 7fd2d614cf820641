package decision

import (
	"context"
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// PrefixScorerType is the plugin type whose score of the picked endpoint a
// Decision reports (Decision.Prefix): the prefix hit the scheduler
// predicted, observed by the router as
// halyard_router_prefix_hit_ratio_predicted.
const PrefixScorerType = "prefix-cache"

// prefixScoresKey holds the prefix scorer's scores of the current cycle.
const prefixScoresKey framework.StateKey = "decision/prefix-scores"

type prefixScores struct {
	endpoints []framework.Endpoint
	scores    []float64
}

// scoreOf returns the recorded score of e, if any.
func (p *prefixScores) scoreOf(e framework.Endpoint) (float64, bool) {
	for i, c := range p.endpoints {
		if c == e {
			return p.scores[i], true
		}
	}
	return 0, false
}

// recordingRegistry returns a registry that builds plugins through src and
// wraps scorers of type PrefixScorerType so that their scores are kept in
// the cycle state, where the decision reads the picked endpoint's. The
// scorers reach a shared index through their handle, not through a
// swapped factory.
func recordingRegistry(src *framework.Registry) *framework.Registry {
	out := &framework.Registry{}
	for _, typ := range src.Types() {
		_ = out.Register(typ, func(name string, params json.RawMessage, h framework.Handle) (framework.Plugin, error) {
			pl, err := src.New(typ, name, params, h)
			if err != nil || typ != PrefixScorerType {
				return pl, err
			}
			s, ok := pl.(framework.Scorer)
			if !ok {
				return pl, nil
			}
			return &recordingScorer{Scorer: s}, nil
		})
	}
	return out
}

// recordingScorer forwards to a scorer and records its scores. It forwards
// the optional hooks too, so that the profile still calls them.
type recordingScorer struct {
	framework.Scorer
}

func (r *recordingScorer) Score(ctx context.Context, state *framework.CycleState, req *framework.Request, eps []framework.Endpoint, scores []float64) {
	r.Scorer.Score(ctx, state, req, eps, scores)
	if state != nil {
		state.Write(prefixScoresKey, &prefixScores{endpoints: append([]framework.Endpoint(nil), eps...), scores: append([]float64(nil), scores...)})
	}
}

func (r *recordingScorer) PreRequest(ctx context.Context, state *framework.CycleState, req *framework.Request, picked framework.Endpoint) {
	if pr, ok := r.Scorer.(framework.PreRequest); ok {
		pr.PreRequest(ctx, state, req, picked)
	}
}

func (r *recordingScorer) ResponseComplete(ctx context.Context, req *framework.Request, e framework.Endpoint, out framework.Outcome) {
	if rc, ok := r.Scorer.(framework.ResponseComplete); ok {
		rc.ResponseComplete(ctx, req, e, out)
	}
}

// Describe forwards to the wrapped scorer if it is a Prometheus collector.
func (r *recordingScorer) Describe(ch chan<- *prometheus.Desc) {
	if c, ok := r.Scorer.(prometheus.Collector); ok {
		c.Describe(ch)
	}
}

// Collect forwards to the wrapped scorer if it is a Prometheus collector.
func (r *recordingScorer) Collect(ch chan<- prometheus.Metric) {
	if c, ok := r.Scorer.(prometheus.Collector); ok {
		c.Collect(ch)
	}
}

// Unwrap returns the wrapped scorer.
func (r *recordingScorer) Unwrap() framework.Plugin { return r.Scorer }

var (
	_ framework.Scorer           = (*recordingScorer)(nil)
	_ framework.PreRequest       = (*recordingScorer)(nil)
	_ framework.ResponseComplete = (*recordingScorer)(nil)
	_ prometheus.Collector       = (*recordingScorer)(nil)
)
