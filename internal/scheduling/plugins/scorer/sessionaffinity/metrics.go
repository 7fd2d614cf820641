package sessionaffinity

import "github.com/prometheus/client_golang/prometheus"

// MetricSessions is the name of the sessions gauge; docs/scheduling.md
// documents it.
const MetricSessions = "halyard_router_session_affinity_sessions"

// Describe sends the scorer's metric description.
func (s *Scorer) Describe(ch chan<- *prometheus.Desc) { ch <- s.sessionsDesc }

// Collect sends the number of sessions remembered.
func (s *Scorer) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(s.sessionsDesc, prometheus.GaugeValue, float64(s.Len()))
}

var _ prometheus.Collector = (*Scorer)(nil)
