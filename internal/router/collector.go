package router

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/datastore"
)

// endpointCollector publishes per-endpoint state at scrape time.
type endpointCollector struct{ store *datastore.Store }

var (
	descHealthy = prometheus.NewDesc("halyard_router_endpoint_healthy",
		"1 if the endpoint receives requests, 0 if it was taken out (or not yet scraped).", []string{"endpoint", "pool"}, nil)
	descInFlightReqs = prometheus.NewDesc("halyard_router_endpoint_in_flight_requests",
		"The router's own count of unfinished requests sent to the endpoint.", []string{"endpoint", "pool"}, nil)
	descInFlightToks = prometheus.NewDesc("halyard_router_endpoint_in_flight_tokens",
		"Prompt plus max output tokens of the router's unfinished requests on the endpoint.", []string{"endpoint", "pool"}, nil)
	descWaiting = prometheus.NewDesc("halyard_router_endpoint_waiting_requests",
		"Waiting requests the engine reported at the last scrape.", []string{"endpoint", "pool"}, nil)
	descRunning = prometheus.NewDesc("halyard_router_endpoint_running_requests",
		"Running requests the engine reported at the last scrape.", []string{"endpoint", "pool"}, nil)
	descKV = prometheus.NewDesc("halyard_router_endpoint_kv_cache_usage",
		"KV-cache usage (0-1) the engine reported at the last scrape.", []string{"endpoint", "pool"}, nil)
)

func (c *endpointCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHealthy, descInFlightReqs, descInFlightToks, descWaiting, descRunning, descKV} {
		ch <- d
	}
}

func (c *endpointCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.store.All() {
		name, pool := e.Metadata().Name, e.Pool()
		h := 0.0
		if e.Healthy() {
			h = 1
		}
		reqs, toks := e.InFlight()
		m := e.Metrics()
		ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, h, name, pool)
		ch <- prometheus.MustNewConstMetric(descInFlightReqs, prometheus.GaugeValue, float64(reqs), name, pool)
		ch <- prometheus.MustNewConstMetric(descInFlightToks, prometheus.GaugeValue, float64(toks), name, pool)
		ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(m.WaitingRequests), name, pool)
		ch <- prometheus.MustNewConstMetric(descRunning, prometheus.GaugeValue, float64(m.RunningRequests), name, pool)
		ch <- prometheus.MustNewConstMetric(descKV, prometheus.GaugeValue, m.KVCacheUsage, name, pool)
	}
}

var _ prometheus.Collector = (*endpointCollector)(nil)
