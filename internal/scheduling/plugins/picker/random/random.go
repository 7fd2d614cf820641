package random

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/internal/rng"
)

// Type is the registered plugin type.
const Type = "random"

// Params configure a Picker.
type Params struct {
	// Count is how many distinct endpoints to return. Default 1.
	Count int `json:"count"`
	// Seed seeds the choice; 0 uses the runtime's generator.
	Seed uint64 `json:"seed"`
}

// Picker picks endpoints uniformly at random.
type Picker struct {
	tn    framework.TypedName
	count int
	rand  *rng.Source
}

// Factory builds a Picker from JSON params.
func Factory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	p := Params{Count: 1}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return New(name, p)
}

// New returns a Picker named name.
func New(name string, p Params) (*Picker, error) {
	if p.Count < 1 {
		return nil, fmt.Errorf("params.count: must be at least 1, got %d", p.Count)
	}
	return &Picker{tn: framework.TypedName{Type: Type, Name: name}, count: p.Count, rand: rng.New(p.Seed)}, nil
}

// TypedName returns the plugin's type and name.
func (p *Picker) TypedName() framework.TypedName { return p.tn }

// Pick returns Count distinct endpoints chosen uniformly.
func (p *Picker) Pick(_ context.Context, _ *framework.CycleState, _ *framework.Request, scored []framework.ScoredEndpoint) []framework.Endpoint {
	if len(scored) == 0 {
		return nil
	}
	if p.count == 1 {
		return []framework.Endpoint{scored[p.rand.IntN(len(scored))].Endpoint}
	}
	all := make([]framework.Endpoint, len(scored))
	for i, s := range scored {
		all[i] = s.Endpoint
	}
	// A partial Fisher-Yates shuffle draws the first Count.
	n := min(p.count, len(all))
	for i := 0; i < n; i++ {
		j := i + p.rand.IntN(len(all)-i)
		all[i], all[j] = all[j], all[i]
	}
	return all[:n]
}

var _ framework.Picker = (*Picker)(nil)
