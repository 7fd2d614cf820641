package plugintest

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// Endpoint is a framework.Endpoint whose state tests set directly. Its
// metrics may be replaced while plugins read them (SetMetrics), and its
// in-flight counts are atomic.
type Endpoint struct {
	md       framework.EndpointMetadata
	metrics  atomic.Pointer[framework.Metrics]
	requests atomic.Int64
	tokens   atomic.Int64
}

var _ framework.Endpoint = (*Endpoint)(nil)

// NewEndpoint returns an endpoint named name with role both and empty
// metrics.
func NewEndpoint(name string) *Endpoint {
	e := &Endpoint{md: framework.EndpointMetadata{Name: name, Address: "http://" + name, Role: framework.RoleBoth}}
	e.metrics.Store(&framework.Metrics{})
	return e
}

// WithRole sets the endpoint's role; it returns e for chaining.
func (e *Endpoint) WithRole(r framework.Role) *Endpoint { e.md.Role = r; return e }

// WithModel sets the endpoint's model.
func (e *Endpoint) WithModel(m string) *Endpoint { e.md.Model = m; return e }

// WithAdapters sets the LoRA adapters the endpoint declares.
func (e *Endpoint) WithAdapters(a ...string) *Endpoint { e.md.Adapters = a; return e }

// WithMetrics sets the metrics snapshot.
func (e *Endpoint) WithMetrics(m framework.Metrics) *Endpoint { e.SetMetrics(m); return e }

// WithInFlight sets the router's in-flight counts.
func (e *Endpoint) WithInFlight(requests, tokens int64) *Endpoint {
	e.requests.Store(requests)
	e.tokens.Store(tokens)
	return e
}

// SetMetrics publishes a new metrics snapshot.
func (e *Endpoint) SetMetrics(m framework.Metrics) { e.metrics.Store(&m) }

// AddInFlight adds to the in-flight counts (negative to finish requests).
func (e *Endpoint) AddInFlight(requests, tokens int64) {
	e.requests.Add(requests)
	e.tokens.Add(tokens)
}

// Metadata returns the endpoint's metadata.
func (e *Endpoint) Metadata() *framework.EndpointMetadata { return &e.md }

// Metrics returns the latest snapshot.
func (e *Endpoint) Metrics() *framework.Metrics { return e.metrics.Load() }

// InFlight returns the in-flight counts.
func (e *Endpoint) InFlight() (requests, tokens int64) { return e.requests.Load(), e.tokens.Load() }

// Endpoints returns the endpoints as a []framework.Endpoint.
func Endpoints(eps ...*Endpoint) []framework.Endpoint {
	out := make([]framework.Endpoint, len(eps))
	for i, e := range eps {
		out[i] = e
	}
	return out
}

// Names returns the endpoints' names.
func Names(eps []framework.Endpoint) []string {
	out := make([]string, len(eps))
	for i, e := range eps {
		out[i] = e.Metadata().Name
	}
	return out
}

// Clock is a settable clock, safe for concurrent use. The zero value reads
// 2026-01-01T00:00:00Z.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now.IsZero() {
		return epoch
	}
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.now.IsZero() {
		c.now = epoch
	}
	c.now = c.now.Add(d)
}

// Handle is a framework.Handle over a Clock with a logger that discards
// unless Log is set.
type Handle struct {
	Clock *Clock
	Log   *slog.Logger
	// Instances are the shared instances it offers, by key.
	Instances map[string]any
}

var _ framework.SharedHandle = Handle{}

// Shared returns the shared instance stored under key.
func (h Handle) Shared(key string) (any, bool) {
	v, ok := h.Instances[key]
	return v, ok
}

// NewHandle returns a handle with a fresh clock.
func NewHandle() Handle { return Handle{Clock: &Clock{}} }

// Now returns the clock's time.
func (h Handle) Now() time.Time {
	if h.Clock == nil {
		return epoch
	}
	return h.Clock.Now()
}

// Logger returns the logger.
func (h Handle) Logger() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

// Build calls factory with params given as JSON text and fails the test on
// error.
func Build[T framework.Plugin](t testing.TB, factory framework.Factory, params string, h framework.Handle) T {
	t.Helper()
	var raw json.RawMessage
	if params != "" {
		raw = json.RawMessage(params)
	}
	p, err := factory("", raw, h)
	if err != nil {
		t.Fatalf("factory(%s): %v", params, err)
	}
	v, ok := p.(T)
	if !ok {
		t.Fatalf("factory returned %T", p)
	}
	return v
}

// Score runs s over eps and returns the scores.
func Score(s framework.Scorer, state *framework.CycleState, req *framework.Request, eps []framework.Endpoint) []float64 {
	out := make([]float64, len(eps))
	s.Score(context.Background(), state, req, eps, out)
	return out
}
