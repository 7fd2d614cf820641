package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's own Prometheus series, documented in
// docs/kubernetes.md. controller-runtime adds its controller_runtime_* and
// workqueue_* series beside them.
type Metrics struct {
	Groups          *prometheus.GaugeVec
	Recoveries      *prometheus.CounterVec
	RestartDuration prometheus.Histogram
	PodOperations   *prometheus.CounterVec
	InPlaceRestart  prometheus.Gauge
	ReconcileTime   prometheus.Histogram
	// WeightsFallbacks counts files pods fetched from the origin because
	// the node's Dragonfly peer failed; Preheats counts preheat jobs by
	// outcome.
	WeightsFallbacks prometheus.Counter
	Preheats         *prometheus.CounterVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Groups: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "halyard_controller_groups",
			Help: "Serving groups by namespace, ModelServing and phase.",
		}, []string{"namespace", "model_serving", "phase"}),
		Recoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_controller_group_recoveries_total",
			Help: "Group recoveries by mode (in_place, recreate, rollout, gang) and outcome (started, succeeded, timeout).",
		}, []string{"mode", "outcome"}),
		RestartDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "halyard_controller_inplace_restart_duration_seconds",
			Help:    "Time from telling a group's agents to restart until its barrier is released.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300},
		}),
		PodOperations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_controller_pod_operations_total",
			Help: "Pod writes by operation (create, delete, force_delete, annotate) and result (ok, error).",
		}, []string{"operation", "result"}),
		InPlaceRestart: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "halyard_controller_inplace_restart_supported",
			Help: "1 when the API server accepts RestartAllContainers restart rules (probed at start), else 0.",
		}),
		ReconcileTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "halyard_controller_modelserving_reconcile_seconds",
			Help:    "Duration of one ModelServing reconcile, API writes included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		WeightsFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "halyard_controller_weights_dragonfly_fallbacks_total",
			Help: "Files that pods fetched from the origin because their node's Dragonfly peer failed, as the fetchers report them.",
		}),
		Preheats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_controller_weights_preheats_total",
			Help: "Dragonfly preheat jobs by outcome (created, succeeded, failed, skipped).",
		}, []string{"outcome"}),
	}
	for _, c := range []prometheus.Collector{m.Groups, m.Recoveries, m.RestartDuration, m.PodOperations, m.InPlaceRestart, m.ReconcileTime, m.WeightsFallbacks, m.Preheats} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
