package admission

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are admission's Prometheus metrics (docs/admission.md lists
// them). A nil *Metrics records nothing.
type Metrics struct {
	Requests    *prometheus.CounterVec
	QueueLength *prometheus.GaugeVec
	QueueWait   *prometheus.HistogramVec
	Shed        *prometheus.CounterVec
	StoreErrors *prometheus.CounterVec
	Fallback    prometheus.Gauge
	Tokens      *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg (when not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_admission_requests_total",
			Help: "Admission decisions by tenant and outcome (admitted, unauthenticated, forbidden, over_budget, shed, no_endpoint, store_unavailable).",
		}, []string{"tenant", "outcome"}),
		QueueLength: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "halyard_admission_queue_length",
			Help: "Requests waiting in the fair queue by model, tenant and priority.",
		}, []string{"model", "tenant", "priority"}),
		QueueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "halyard_admission_queue_wait_seconds",
			Help:    "Time admitted requests waited in the fair queue, by model, tenant and priority.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"model", "tenant", "priority"}),
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_admission_shed_total",
			Help: "Requests shed by the fair queue, by tenant, priority and reason (queue_full, timeout, no_endpoint, expected_wait), and admitted requests handed back by scheduling (slo_unmeetable).",
		}, []string{"tenant", "priority", "reason"}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_admission_store_errors_total",
			Help: "Failed round trips to the shared budget store (Redis), by operation (reserve, settle).",
		}, []string{"op"}),
		Fallback: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "halyard_admission_store_fallback",
			Help: "1 while the shared budget store is unreachable and the router applies admission.onStoreError.",
		}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_admission_tokens_total",
			Help: "Budget tokens by tenant: reserved at admission, and charged at settlement (from the engine's usage).",
		}, []string{"tenant", "kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.QueueLength, m.QueueWait, m.Shed, m.StoreErrors, m.Fallback, m.Tokens)
	}
	return m
}

func (m *Metrics) outcome(tenant, outcome string) {
	if m != nil {
		m.Requests.WithLabelValues(tenant, outcome).Inc()
	}
}

func (m *Metrics) queueLen(model, tenant string, p Priority, d float64) {
	if m != nil {
		m.QueueLength.WithLabelValues(model, tenant, p.String()).Add(d)
	}
}

func (m *Metrics) waited(model, tenant string, p Priority, d time.Duration) {
	if m != nil {
		m.QueueWait.WithLabelValues(model, tenant, p.String()).Observe(d.Seconds())
	}
}

func (m *Metrics) shed(tenant string, p Priority, why ShedReason) {
	if m != nil {
		m.Shed.WithLabelValues(tenant, p.String(), string(why)).Inc()
	}
}
