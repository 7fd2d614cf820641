package leastrequest

import (
	"context"
	"encoding/json"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "least-request"

// Scorer scores endpoints by router-local in-flight requests. It has no
// parameters.
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

// Score writes 1 for the endpoint with the fewest requests in flight, 0 for
// the most, linearly in between.
func (s *Scorer) Score(_ context.Context, _ *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint, scores []float64) {
	if len(endpoints) == 0 {
		return
	}
	lo, hi := int64(-1), int64(-1)
	for i, e := range endpoints {
		n, _ := e.InFlight()
		scores[i] = float64(n)
		if lo < 0 || n < lo {
			lo = n
		}
		if n > hi {
			hi = n
		}
	}
	span := float64(hi - lo)
	for i := range endpoints {
		if span == 0 {
			scores[i] = 1
			continue
		}
		scores[i] = (float64(hi) - scores[i]) / span
	}
}

var _ framework.Scorer = (*Scorer)(nil)
