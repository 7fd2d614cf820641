package ejection

import (
	"context"
	"encoding/json"
	"time"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "outlier-ejection"

// ejectable is what an endpoint offers when its host ejects outliers.
type ejectable interface {
	Ejected(now time.Time) bool
}

// Filter leaves out ejected endpoints while others remain.
type Filter struct {
	tn  framework.TypedName
	now func() time.Time
}

// Factory builds a Filter; any params are an error.
func Factory(name string, params json.RawMessage, h framework.Handle) (framework.Plugin, error) {
	var p struct{}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return New(name, h), nil
}

// New returns a Filter named name that reads time from h (the wall clock
// when h is nil).
func New(name string, h framework.Handle) *Filter {
	now := time.Now
	if h != nil {
		now = h.Now
	}
	return &Filter{tn: framework.TypedName{Type: Type, Name: name}, now: now}
}

// TypedName returns the plugin's type and name.
func (f *Filter) TypedName() framework.TypedName { return f.tn }

// Filter keeps the endpoints that are not ejected, or all of them when
// every one is.
func (f *Filter) Filter(_ context.Context, _ *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint) []framework.Endpoint {
	now := f.now()
	kept := 0
	for _, e := range endpoints {
		if !ejected(e, now) {
			kept++
		}
	}
	if kept == 0 || kept == len(endpoints) {
		return endpoints
	}
	out := endpoints[:0]
	for _, e := range endpoints {
		if !ejected(e, now) {
			out = append(out, e)
		}
	}
	return out
}

// Reason says that e is ejected ("ejected after consecutive 5xx"), or "".
// The filter may still keep it (when every candidate is ejected).
func (f *Filter) Reason(_ *framework.Request, e framework.Endpoint) string {
	if ejected(e, f.now()) {
		return "ejected after consecutive 5xx"
	}
	return ""
}

func ejected(e framework.Endpoint, now time.Time) bool {
	ej, ok := e.(ejectable)
	return ok && ej.Ejected(now)
}

var _ framework.Filter = (*Filter)(nil)
