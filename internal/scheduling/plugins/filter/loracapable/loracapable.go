package loracapable

import (
	"context"
	"encoding/json"
	"slices"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "lora-capable"

// Filter keeps endpoints that serve the request's adapter.
type Filter struct {
	tn framework.TypedName
}

// Factory builds a Filter; any params are an error.
func Factory(name string, params json.RawMessage, _ framework.Handle) (framework.Plugin, error) {
	var p struct{}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return New(name), nil
}

// New returns a Filter named name.
func New(name string) *Filter {
	return &Filter{tn: framework.TypedName{Type: Type, Name: name}}
}

// TypedName returns the plugin's type and name.
func (f *Filter) TypedName() framework.TypedName { return f.tn }

// Filter keeps every endpoint for a request without adapter, else those that
// declare or run the adapter.
func (f *Filter) Filter(_ context.Context, _ *framework.CycleState, req *framework.Request, endpoints []framework.Endpoint) []framework.Endpoint {
	if req == nil || req.Adapter == "" {
		return endpoints
	}
	out := endpoints[:0]
	for _, e := range endpoints {
		if f.Reason(req, e) == "" {
			out = append(out, e)
		}
	}
	return out
}

// Reason says why the filter leaves e out for req ("adapter A not listed"),
// or "". An adapter the engine reports running or waiting counts as served:
// an engine queues only requests for adapters it knows (vLLM answers an
// unknown one with a 404 at once).
func (f *Filter) Reason(req *framework.Request, e framework.Endpoint) string {
	if req == nil || req.Adapter == "" {
		return ""
	}
	m := e.Metrics()
	if slices.Contains(e.Metadata().Adapters, req.Adapter) ||
		slices.Contains(m.RunningAdapters, req.Adapter) ||
		slices.Contains(m.WaitingAdapters, req.Adapter) {
		return ""
	}
	return "adapter " + req.Adapter + " not listed"
}

var _ framework.Filter = (*Filter)(nil)
