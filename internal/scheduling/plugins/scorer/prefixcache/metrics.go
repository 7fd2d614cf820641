package prefixcache

import "github.com/prometheus/client_golang/prometheus"

// Metric names; docs/scheduling.md documents them.
const (
	MetricIndexBlocks    = "halyard_router_prefix_index_blocks"
	MetricIndexEndpoints = "halyard_router_prefix_index_endpoints"
	MetricIndexEvictions = "halyard_router_prefix_index_evictions_total"
	MetricLoadOverrides  = "halyard_router_prefix_load_overrides_total"
)

type descs struct {
	blocks, endpoints, evictions, overrides *prometheus.Desc
}

func newDescs(instance string) descs {
	l := prometheus.Labels{"plugin": instance}
	return descs{
		blocks:    prometheus.NewDesc(MetricIndexBlocks, "(endpoint, block) entries held by the approximate prefix index.", nil, l),
		endpoints: prometheus.NewDesc(MetricIndexEndpoints, "Endpoints holding at least one block in the approximate prefix index.", nil, l),
		evictions: prometheus.NewDesc(MetricIndexEvictions, "(endpoint, block) entries evicted from the approximate prefix index to respect its bounds.", nil, l),
		overrides: prometheus.NewDesc(MetricLoadOverrides, "Times an endpoint holding part of a prompt scored 0 because its load was past the override gap.", nil, l),
	}
}

// Describe sends the scorer's metric descriptions.
func (s *Scorer) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.descs.blocks
	ch <- s.descs.endpoints
	ch <- s.descs.evictions
	ch <- s.descs.overrides
}

// Collect sends the scorer's current metrics.
func (s *Scorer) Collect(ch chan<- prometheus.Metric) {
	st := s.Stats()
	ch <- prometheus.MustNewConstMetric(s.descs.blocks, prometheus.GaugeValue, float64(st.Index.Blocks))
	ch <- prometheus.MustNewConstMetric(s.descs.endpoints, prometheus.GaugeValue, float64(st.Index.Endpoints))
	ch <- prometheus.MustNewConstMetric(s.descs.evictions, prometheus.CounterValue, float64(st.Index.Evictions))
	ch <- prometheus.MustNewConstMetric(s.descs.overrides, prometheus.CounterValue, float64(st.LoadOverrides))
}

var _ prometheus.Collector = (*Scorer)(nil)
