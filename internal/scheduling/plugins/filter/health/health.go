package health

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Type is the registered plugin type.
const Type = "health"

// DefaultMaxMetricsAge is the default staleness bound.
const DefaultMaxMetricsAge = 5 * time.Second

// Params configure a Filter.
type Params struct {
	// MaxMetricsAge is a Go duration; older snapshots remove the endpoint.
	// "0" turns the staleness bound off (the endpoint's own health alone
	// decides).
	MaxMetricsAge string `json:"maxMetricsAge"`
	// DropUnscraped removes endpoints that were never scraped.
	DropUnscraped bool `json:"dropUnscraped"`
}

// Filter removes endpoints with stale metrics.
type Filter struct {
	tn            framework.TypedName
	now           func() time.Time
	maxAge        time.Duration
	dropUnscraped bool
}

// Factory builds a Filter from JSON params.
func Factory(name string, params json.RawMessage, h framework.Handle) (framework.Plugin, error) {
	p := Params{MaxMetricsAge: DefaultMaxMetricsAge.String()}
	if err := framework.DecodeParams(params, &p); err != nil {
		return nil, err
	}
	return New(name, p, h)
}

// New returns a Filter named name that reads time from h (the wall clock
// when h is nil).
func New(name string, p Params, h framework.Handle) (*Filter, error) {
	age, err := time.ParseDuration(p.MaxMetricsAge)
	if err != nil {
		return nil, fmt.Errorf("params.maxMetricsAge: %w", err)
	}
	if age < 0 {
		return nil, fmt.Errorf("params.maxMetricsAge: must not be negative, got %s", age)
	}
	now := time.Now
	if h != nil {
		now = h.Now
	}
	return &Filter{tn: framework.TypedName{Type: Type, Name: name}, now: now, maxAge: age, dropUnscraped: p.DropUnscraped}, nil
}

// TypedName returns the plugin's type and name.
func (f *Filter) TypedName() framework.TypedName { return f.tn }

// healthReporter is what an endpoint offers when its host tracks its
// health (the router's datastore: scraped and answering); endpoints without
// it are healthy.
type healthReporter interface {
	Healthy() bool
}

// Filter keeps endpoints that do not report themselves unhealthy and whose
// metrics are fresh (or were never scraped, unless DropUnscraped).
func (f *Filter) Filter(_ context.Context, _ *framework.CycleState, _ *framework.Request, endpoints []framework.Endpoint) []framework.Endpoint {
	var oldest time.Time
	if f.maxAge > 0 {
		oldest = f.now().Add(-f.maxAge)
	}
	out := endpoints[:0]
	for _, e := range endpoints {
		if f.Reason(nil, e) != "" {
			continue
		}
		t := e.Metrics().UpdateTime
		switch {
		case t.IsZero():
			if f.dropUnscraped {
				continue
			}
		case f.maxAge > 0 && t.Before(oldest):
			continue
		}
		out = append(out, e)
	}
	return out
}

// Reason says why the endpoint's own health leaves it out ("unhealthy"),
// or "" (staleness is not a reason given here: it changes with time).
func (f *Filter) Reason(_ *framework.Request, e framework.Endpoint) string {
	if h, ok := e.(healthReporter); ok && !h.Healthy() {
		return "unhealthy"
	}
	return ""
}

var _ framework.Filter = (*Filter)(nil)
