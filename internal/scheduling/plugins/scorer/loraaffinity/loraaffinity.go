package loraaffinity

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "lora-affinity"

// Scores of the tiers.
const (
	ScoreRunning = 1.0
	ScoreWaiting = 0.8
	ScoreRoom    = 0.5
	ScoreFull    = 0.0
)

// Scorer scores endpoints by how ready they are to serve an adapter.
type Scorer struct {
	tn framework.TypedName
}

// Factory builds a Scorer; any params are an error.
func Factory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	var p struct{}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return New(name), nil
}

// New returns a Scorer named name.
func New(name string) *Scorer {
	return &Scorer{tn: framework.TypedName{Type: Type, Name: name}}
}

// TypedName returns the plugin's type and name.
func (s *Scorer) TypedName() framework.TypedName { return s.tn }

// Score writes each endpoint's tier score for the request's adapter.
func (s *Scorer) Score(_ context.Context, _ *framework.CycleState, req *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	for i, e := range endpoints {
		if req == nil || req.Adapter == "" {
			scores[i] = 1
			continue
		}
		m := e.Metrics()
		switch {
		case slices.Contains(m.RunningAdapters, req.Adapter):
			scores[i] = ScoreRunning
		case slices.Contains(m.WaitingAdapters, req.Adapter):
			scores[i] = ScoreWaiting
		case m.MaxLoRA == 0 || len(m.RunningAdapters) < m.MaxLoRA:
			scores[i] = ScoreRoom
		default:
			scores[i] = ScoreFull
		}
	}
}

var _ framework.Scorer = (*Scorer)(nil)
