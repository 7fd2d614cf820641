package prefixtrack

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metric names; docs/kv-events.md documents them.
const (
	MetricMode            = "halyard_router_prefix_index_mode"
	MetricFallbacks       = "halyard_router_prefix_index_fallbacks_total"
	MetricPreciseBlocks   = "halyard_router_prefix_index_precise_blocks"
	MetricPendingBlocks   = "halyard_router_prefix_index_pending_blocks"
	MetricDriftRatio      = "halyard_router_prefix_hit_drift_ratio"
	MetricPredictedTokens = "halyard_router_prefix_predicted_hit_tokens_total"
	MetricReportedTokens  = "halyard_router_prefix_engine_hit_tokens_total"
)

type trackerDescs struct {
	mode, fallbacks, blocks, pending *prometheus.Desc
}

func newTrackerDescs() trackerDescs {
	return trackerDescs{
		mode: prometheus.NewDesc(MetricMode,
			"1 for the prefix index that answers for the endpoint (mode precise: its KV events; approximate: what the router sent there), 0 for the other.",
			[]string{"endpoint", "mode"}, nil),
		fallbacks: prometheus.NewDesc(MetricFallbacks,
			"Times the endpoint fell back from the precise to the approximate prefix index, by reason (disconnected, events-lost, silent, block-size).",
			[]string{"endpoint", "reason"}, nil),
		blocks: prometheus.NewDesc(MetricPreciseBlocks,
			"Blocks the endpoint's engine reported holding in its KV events.",
			[]string{"endpoint"}, nil),
		pending: prometheus.NewDesc(MetricPendingBlocks,
			"(endpoint, block) claims of requests just routed, not yet reported stored by the engines.",
			nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (t *Tracker) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.descs.mode
	ch <- t.descs.fallbacks
	ch <- t.descs.blocks
	ch <- t.descs.pending
}

// Collect implements prometheus.Collector.
func (t *Tracker) Collect(ch chan<- prometheus.Metric) {
	type row struct {
		name      string
		mode      Mode
		fallbacks map[string]float64
		followed  bool
	}
	t.mu.Lock()
	rows := make([]row, 0, len(t.eps))
	for name, e := range t.eps {
		fb := make(map[string]float64, len(e.fallbacks))
		for k, v := range e.fallbacks {
			fb[k] = v
		}
		rows = append(rows, row{name, e.mode, fb, e.fed || e.src.Endpoint != ""})
	}
	t.mu.Unlock()
	for _, r := range rows {
		for _, m := range []Mode{ModePrecise, ModeApproximate} {
			v := 0.0
			if r.mode == m {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(t.descs.mode, prometheus.GaugeValue, v, r.name, string(m))
		}
		if !r.followed {
			continue
		}
		for _, reason := range []string{ReasonDisconnected, ReasonEventsLost, ReasonSilent, ReasonBlockSize} {
			ch <- prometheus.MustNewConstMetric(t.descs.fallbacks, prometheus.CounterValue, r.fallbacks[reason], r.name, reason)
		}
		ch <- prometheus.MustNewConstMetric(t.descs.blocks, prometheus.GaugeValue, float64(t.precise.EndpointBlocks(r.name)), r.name)
	}
	ch <- prometheus.MustNewConstMetric(t.descs.pending, prometheus.GaugeValue, float64(t.precise.Stats().Pending))
}

var (
	descDriftRatio = prometheus.NewDesc(MetricDriftRatio,
		"Agreement of predicted and engine-reported prefix-cache hit tokens over the drift window: min/max of the two, 1 when they match, near 0 when the router and the engine disagree (see the two totals for which way). Absent while the window holds too few hits to compare.",
		[]string{"endpoint"}, nil)
	descPredicted = prometheus.NewDesc(MetricPredictedTokens,
		"Prompt tokens the router expected cached at the endpoint it picked, summed over requests sent.",
		[]string{"endpoint"}, nil)
	descReported = prometheus.NewDesc(MetricReportedTokens,
		"Prefix-cache hit tokens the endpoint's engine reported (increases of vllm:prefix_cache_hits_total) since the router first scraped it.",
		[]string{"endpoint"}, nil)
)

// Describe implements prometheus.Collector.
func (d *Drift) Describe(ch chan<- *prometheus.Desc) {
	ch <- descDriftRatio
	ch <- descPredicted
	ch <- descReported
}

// Collect implements prometheus.Collector.
func (d *Drift) Collect(ch chan<- prometheus.Metric) {
	for _, name := range d.Endpoints() {
		st := d.Status(name)
		ch <- prometheus.MustNewConstMetric(descPredicted, prometheus.CounterValue, st.PredictedTotal, name)
		ch <- prometheus.MustNewConstMetric(descReported, prometheus.CounterValue, st.ReportedTotal, name)
		if st.OK {
			ch <- prometheus.MustNewConstMetric(descDriftRatio, prometheus.GaugeValue, st.Ratio, name)
		}
	}
}

var (
	_ prometheus.Collector = (*Tracker)(nil)
	_ prometheus.Collector = (*Drift)(nil)
)
