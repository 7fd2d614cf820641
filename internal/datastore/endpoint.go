package datastore

import (
	"sync"
	"sync/atomic"

	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// EndpointSpec is what discovery says about one endpoint.
type EndpointSpec struct {
	// Pool is the group of endpoints that routes target.
	Pool string
	// Metadata describes the engine.
	Metadata framework.EndpointMetadata
	// KVEvents, when set, is where the engine publishes its KV-cache
	// events (precise prefix routing follows them).
	KVEvents *KVEvents
	// Draining asks for no new requests: the endpoint's group is being
	// removed and its requests in flight finish. Changing it keeps the
	// endpoint's state (in-flight counts above all).
	Draining bool
}

// KVEvents are the addresses of an engine's KV-event publisher:
// tcp://HOST:PORT of its PUB and replay sockets, and a topic prefix.
type KVEvents struct {
	Endpoint, ReplayEndpoint, Topic string
}

// HealthPolicy sets when an endpoint is taken out and put back.
type HealthPolicy struct {
	// FailureThreshold consecutive failures take a healthy endpoint out.
	FailureThreshold int
	// SuccessThreshold consecutive successful scrapes bring an endpoint that
	// was taken out back. An endpoint that has never been healthy needs one.
	SuccessThreshold int
}

var emptyMetrics = &framework.Metrics{}

// Endpoint is one engine as the router sees it. It is safe for concurrent use.
type Endpoint struct {
	pool string
	md   framework.EndpointMetadata

	metrics atomic.Pointer[framework.Metrics]
	// Load is the router's own count of the requests sent to the endpoint
	// (InFlight, Begin, End) and of those without a first token back yet
	// (Prefilling, PrefillBegin, PrefillEnd).
	decision.Load
	healthy  atomic.Bool
	draining atomic.Bool
	// Outlier ejection (outlier.go): consecutive server errors, the end of
	// the current ejection (unix ns, or 0) and the ejections so far.
	consecutive5xx, ejectedUntil, ejections atomic.Int64

	mu          sync.Mutex
	failures    int
	successes   int
	everHealthy bool
	lastErr     string
}

// NewEndpoint returns an endpoint from its spec, not yet healthy.
func NewEndpoint(spec EndpointSpec) *Endpoint {
	e := &Endpoint{pool: spec.Pool, md: spec.Metadata}
	e.draining.Store(spec.Draining)
	return e
}

// Draining reports whether the endpoint takes no new requests (its group
// is being removed).
func (e *Endpoint) Draining() bool { return e.draining.Load() }

// Metadata returns what discovery said about the endpoint.
func (e *Endpoint) Metadata() *framework.EndpointMetadata { return &e.md }

// Pool returns the endpoint's pool.
func (e *Endpoint) Pool() string { return e.pool }

// Metrics returns the latest scraped snapshot, or an empty one.
func (e *Endpoint) Metrics() *framework.Metrics {
	if m := e.metrics.Load(); m != nil {
		return m
	}
	return emptyMetrics
}

// SetMetrics publishes a new snapshot; m must not be modified afterwards.
func (e *Endpoint) SetMetrics(m *framework.Metrics) { e.metrics.Store(m) }

// Healthy reports whether the endpoint may receive requests.
func (e *Endpoint) Healthy() bool { return e.healthy.Load() }

// LastError returns the last failure's message, or "".
func (e *Endpoint) LastError() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// ObserveSuccess records a successful scrape. It reports whether the
// endpoint became healthy.
func (e *Endpoint) ObserveSuccess(p HealthPolicy) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failures = 0
	e.successes++
	if e.healthy.Load() {
		return false
	}
	need := max(p.SuccessThreshold, 1)
	if !e.everHealthy {
		need = 1
	}
	if e.successes >= need {
		e.healthy.Store(true)
		e.everHealthy = true
		e.lastErr = ""
		return true
	}
	return false
}

// ObserveFailure records a failed scrape or a connection error. It reports
// whether the endpoint became unhealthy.
func (e *Endpoint) ObserveFailure(p HealthPolicy, err error) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.successes = 0
	e.failures++
	if err != nil {
		e.lastErr = err.Error()
	}
	if e.healthy.Load() && e.failures >= max(p.FailureThreshold, 1) {
		e.healthy.Store(false)
		return true
	}
	return false
}

var _ framework.Endpoint = (*Endpoint)(nil)
