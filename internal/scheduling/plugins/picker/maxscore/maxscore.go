package maxscore

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/internal/rng"
)

// Type is the registered plugin type.
const Type = "max-score"

// tieEpsilon is how close two totals must be to count as a tie; totals are
// sums of a few weighted terms, so equal inputs give equal sums or sums a few
// ulps apart.
const tieEpsilon = 1e-9

// Params configure a Picker.
type Params struct {
	// Count is how many endpoints to return, best first. Default 1.
	Count int `json:"count"`
	// Seed seeds the tie-break; 0 uses the runtime's generator.
	Seed uint64 `json:"seed"`
}

// Picker picks the best-scored endpoints.
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

// Pick returns the best endpoint (or the Count best), ties in random order.
func (p *Picker) Pick(_ context.Context, _ *framework.CycleState, _ *framework.Request, scored []framework.ScoredEndpoint) []framework.Endpoint {
	if len(scored) == 0 {
		return nil
	}
	if p.count == 1 {
		// One pass; the k-th tie replaces the choice with probability 1/k,
		// which leaves every tied endpoint equally likely.
		best, ties := 0, 1
		for i := 1; i < len(scored); i++ {
			switch d := scored[i].Score - scored[best].Score; {
			case d > tieEpsilon:
				best, ties = i, 1
			case d >= -tieEpsilon:
				ties++
				if p.rand.IntN(ties) == 0 {
					best = i
				}
			}
		}
		return []framework.Endpoint{scored[best].Endpoint}
	}
	order := make([]framework.ScoredEndpoint, len(scored))
	copy(order, scored)
	p.rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	slices.SortStableFunc(order, func(a, b framework.ScoredEndpoint) int {
		if d := a.Score - b.Score; d > tieEpsilon || d < -tieEpsilon {
			return cmp.Compare(b.Score, a.Score)
		}
		return 0
	})
	n := min(p.count, len(order))
	out := make([]framework.Endpoint, n)
	for i := range out {
		out[i] = order[i].Endpoint
	}
	return out
}

var _ framework.Picker = (*Picker)(nil)
