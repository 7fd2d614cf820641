package queuedepth

import (
	"context"
	"encoding/json"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "queue-depth"

// Params configure a Scorer.
type Params struct {
	// EngineOnly counts only the engine's scraped waiting requests, leaving
	// out the router's own in-flight count: the llm-d router's queue-scorer
	// reads the scraped queue alone (the llm-d preset sets it). Default
	// false.
	EngineOnly bool `json:"engineOnly"`
}

// Scorer scores endpoints by queue depth.
type Scorer struct {
	tn         framework.TypedName
	engineOnly bool
}

// Factory builds a Scorer from JSON params.
func Factory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	var p Params
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	s := New(name)
	s.engineOnly = p.EngineOnly
	return s, nil
}

// New returns a Scorer named name with the default params.
func New(name string) *Scorer {
	return &Scorer{tn: framework.TypedName{Type: Type, Name: name}}
}

// Depth is an endpoint's queue depth as this scorer sees it: requests waiting
// in the engine plus requests in flight from the router.
func Depth(e framework.Endpoint) int64 {
	inflight, _ := e.InFlight()
	return int64(e.Metrics().WaitingRequests) + inflight
}

// TypedName returns the plugin's type and name.
func (s *Scorer) TypedName() framework.TypedName { return s.tn }

// Score writes 1 for the shallowest endpoint, 0 for the deepest, linearly in
// between.
func (s *Scorer) Score(_ context.Context, _ *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	if len(endpoints) == 0 {
		return
	}
	lo, hi := int64(-1), int64(-1)
	for i, e := range endpoints {
		d := Depth(e)
		if s.engineOnly {
			d = int64(e.Metrics().WaitingRequests)
		}
		scores[i] = float64(d) // the depth, normalised below
		if lo < 0 || d < lo {
			lo = d
		}
		if d > hi {
			hi = d
		}
	}
	span := float64(hi - lo)
	for i := range scores[:len(endpoints)] {
		if span == 0 {
			scores[i] = 1
			continue
		}
		scores[i] = (float64(hi) - scores[i]) / span
	}
}

var _ framework.Scorer = (*Scorer)(nil)
