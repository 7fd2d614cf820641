package kvutilization

import (
	"context"
	"encoding/json"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "kv-utilization"

// Scorer scores endpoints by free KV cache. It has no parameters.
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

// Score writes 1 − KV cache usage, clamped to [0,1].
func (s *Scorer) Score(_ context.Context, _ *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	for i, e := range endpoints {
		u := e.Metrics().KVCacheUsage
		switch {
		case u != u || u < 0: // NaN or nonsense: unknown
			u = 0
		case u > 1:
			u = 1
		}
		scores[i] = 1 - u
	}
}

var _ framework.Scorer = (*Scorer)(nil)
