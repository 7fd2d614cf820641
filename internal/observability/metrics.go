package observability

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Error causes counted by halyard_router_request_errors_total.
const (
	CauseBadRequest      = "bad_request"
	CauseModelNotFound   = "model_not_found"
	CauseTooLarge        = "too_large"
	CauseNoEndpoint      = "no_endpoint"
	CauseUpstreamConnect = "upstream_connect"
	CauseUpstreamStatus  = "upstream_5xx"
	CauseUpstreamTimeout = "upstream_timeout"
	CauseStreamBroken    = "stream_broken"
	CauseClientGone      = "client_canceled"
	CauseRequestTimeout  = "request_timeout"
	CauseShutdown        = "shutdown"
	// CauseOverloaded: the router's buffer budget could not hold the
	// request's body or the engine's answer (503 with Retry-After).
	CauseOverloaded = "overloaded"
	// CauseClientStalled: the client read nothing of its answer for
	// router.limits.writeStall; the engine request was cancelled.
	CauseClientStalled = "client_stalled"
)

// RouterMetrics are the router's own metrics. Names and labels are
// documented in docs/router.md.
type RouterMetrics struct {
	Registry *prometheus.Registry

	Requests        *prometheus.CounterVec   // model, endpoint, code
	Errors          *prometheus.CounterVec   // model, cause
	InFlight        prometheus.Gauge         //
	TTFT            *prometheus.HistogramVec // model
	E2E             *prometheus.HistogramVec // model
	AddedLatency    *prometheus.HistogramVec // stage
	SchedulingTime  *prometheus.HistogramVec // profile
	Retries         *prometheus.CounterVec   // model, reason
	Picks           *prometheus.CounterVec   // profile, endpoint
	PrefixPredicted *prometheus.HistogramVec // model
	Tokens          *prometheus.CounterVec   // model, kind
	RouteTargets    *prometheus.CounterVec   // model, pool, fallback
	Ejections       *prometheus.CounterVec   // endpoint, reason
}

// latencyBuckets span 1 ms to 2 min.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120}

// overheadBuckets span 25 µs to 100 ms, for the router's own time.
var overheadBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, .001, .0025, .005, .01, .025, .1}

// NewRouterMetrics creates the metrics on a new registry, with the Go and
// process collectors.
func NewRouterMetrics() *RouterMetrics {
	reg := prometheus.NewRegistry()
	m := &RouterMetrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_router_requests_total",
			Help: "Requests answered, by public model, endpoint that served (\"\" if none) and HTTP status code.",
		}, []string{"model", "endpoint", "code"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_router_request_errors_total",
			Help: "Requests that failed, by public model and cause.",
		}, []string{"model", "cause"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "halyard_router_requests_in_flight",
			Help: "Inference requests being served now.",
		}),
		TTFT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "halyard_router_ttft_seconds",
			Help:    "Time from request arrival to the first response byte written to the client.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		E2E: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "halyard_router_e2e_seconds",
			Help:    "Time from request arrival to the last response byte written to the client.",
			Buckets: latencyBuckets,
		}, []string{"model"}),
		AddedLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "halyard_router_added_latency_seconds",
			Help:    "The router's own time: stage=request from arrival to the start of the upstream request that served, stage=response from the upstream's first body byte to the client's.",
			Buckets: overheadBuckets,
		}, []string{"stage"}),
		SchedulingTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "halyard_router_scheduling_seconds",
			Help:    "Time of one scheduling cycle (filters, scorers, picker), by profile.",
			Buckets: overheadBuckets,
		}, []string{"profile"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_router_retries_total",
			Help: "Attempts retried on another endpoint, by public model and reason (connect, status, timeout, body, transfer_refused).",
		}, []string{"model", "reason"}),
		Picks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_router_picks_total",
			Help: "Endpoints picked by scheduling, by profile and endpoint (one per attempt).",
		}, []string{"profile", "endpoint"}),
		PrefixPredicted: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "halyard_router_prefix_hit_ratio_predicted",
			Help:    "The prefix-cache scorer's score of the picked endpoint: the predicted fraction of the prompt already cached there.",
			Buckets: []float64{0, .1, .2, .3, .4, .5, .6, .7, .8, .9, .95, 1},
		}, []string{"model"}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_router_tokens_total",
			Help: "Tokens from the engines' usage reports, by public model and kind (prompt, completion, cached).",
		}, []string{"model", "kind"}),
		RouteTargets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_router_route_target_total",
			Help: "Requests sent to each route target, by public model, pool and whether it was a fallback.",
		}, []string{"model", "pool", "fallback"}),
		Ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_router_outlier_ejections_total",
			Help: "Times an endpoint was taken out of rotation for router.health.outlier.ejectionTime after consecutive failures (5xx answers or gateway failures), by endpoint and the failure that ejected it: 5xx, connect, reset, timeout, truncated.",
		}, []string{"endpoint", "reason"}),
	}
	reg.MustRegister(m.Collectors()...)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Collectors returns the router's own collectors (not the Go and process
// ones).
func (m *RouterMetrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.Requests, m.Errors, m.InFlight, m.TTFT, m.E2E, m.AddedLatency, m.SchedulingTime,
		m.Retries, m.Picks, m.PrefixPredicted, m.Tokens, m.RouteTargets, m.Ejections,
	}
}
