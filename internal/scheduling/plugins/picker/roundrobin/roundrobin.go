package roundrobin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "round-robin"

// Params configure a Picker.
type Params struct {
	// Count is how many endpoints to return. Default 1.
	Count int `json:"count"`
}

// Picker picks endpoints in turn by name. It is safe for concurrent use.
type Picker struct {
	tn    framework.TypedName
	count int
	mu    sync.Mutex
	last  string
	begun bool
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
	return &Picker{tn: framework.TypedName{Type: Type, Name: name}, count: p.Count}, nil
}

// TypedName returns the plugin's type and name.
func (p *Picker) TypedName() framework.TypedName { return p.tn }

// Pick returns the next endpoint in turn (or the next Count).
func (p *Picker) Pick(_ context.Context, _ *framework.CycleState, _ *framework.Request, scored []framework.ScoredEndpoint) []framework.Endpoint {
	if len(scored) == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.count == 1 {
		e := p.next(scored)
		p.last, p.begun = e.Metadata().Name, true
		return []framework.Endpoint{e}
	}
	order := make([]framework.Endpoint, len(scored))
	for i, s := range scored {
		order[i] = s.Endpoint
	}
	slices.SortFunc(order, func(a, b framework.Endpoint) int {
		return strings.Compare(a.Metadata().Name, b.Metadata().Name)
	})
	start := 0
	if p.begun {
		start, _ = slices.BinarySearchFunc(order, p.last, func(e framework.Endpoint, name string) int {
			return strings.Compare(e.Metadata().Name, name)
		})
		if start < len(order) && order[start].Metadata().Name == p.last {
			start++
		}
	}
	n := min(p.count, len(order))
	out := make([]framework.Endpoint, n)
	for i := range out {
		out[i] = order[(start+i)%len(order)]
	}
	p.last, p.begun = out[0].Metadata().Name, true
	return out
}

// next returns the candidate whose name follows the last pick's, or the
// smallest name when none does; one pass, no sorting.
func (p *Picker) next(scored []framework.ScoredEndpoint) framework.Endpoint {
	var after, first framework.Endpoint
	var afterName, firstName string
	for _, s := range scored {
		n := s.Endpoint.Metadata().Name
		if first == nil || n < firstName {
			first, firstName = s.Endpoint, n
		}
		if p.begun && n > p.last && (after == nil || n < afterName) {
			after, afterName = s.Endpoint, n
		}
	}
	if after != nil {
		return after
	}
	return first
}

var _ framework.Picker = (*Picker)(nil)
