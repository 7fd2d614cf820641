package vllmapi

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/simulator"
)

// Label names as vLLM's V1 Prometheus logger has them.
var engineLabels = []string{"model_name", "engine"}

// Histogram buckets copied from vLLM's V1 metrics (data, not code).
var (
	ttftBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
		0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	itlBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
		1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}
	requestLatencyBuckets = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
		40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
)

// metrics are the server's Prometheus metrics: histograms it observes, and
// a collector that reads the engine's snapshot at scrape time.
type metrics struct {
	registry *prometheus.Registry
	ttft     prometheus.Observer
	itl      prometheus.Observer
	tpot     prometheus.Observer
	e2e      prometheus.Observer
	queue    prometheus.Observer
}

// newMetrics makes the metrics of eng; lora reports whether LoRA is
// enabled, which vllm:lora_requests_info is exposed only with, as in vLLM.
func newMetrics(eng *simulator.Engine, lora func() bool) *metrics {
	model := eng.Config().Model
	labels := prometheus.Labels{"model_name": model, "engine": "0"}
	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets, ConstLabels: labels})
	}
	ttft := hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttftBuckets)
	itl := hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itlBuckets)
	tpot := hist("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds (older name of the inter-token latency).", itlBuckets)
	e2e := hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", requestLatencyBuckets)
	queue := hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", requestLatencyBuckets)
	reg := prometheus.NewRegistry()
	reg.MustRegister(ttft, itl, tpot, e2e, queue, &snapshotCollector{engine: eng, model: model, lora: lora})
	return &metrics{registry: reg, ttft: ttft, itl: itl, tpot: tpot, e2e: e2e, queue: queue}
}

// observe records one finished request and its token times.
func (m *metrics) observe(res simulator.Result, tokenTimes []time.Time) {
	if res.Reason == simulator.FinishAbort {
		return
	}
	if !res.FirstToken.IsZero() {
		m.ttft.Observe(res.TTFT().Seconds())
	}
	for i := 1; i < len(tokenTimes); i++ {
		d := tokenTimes[i].Sub(tokenTimes[i-1]).Seconds()
		m.itl.Observe(d)
		m.tpot.Observe(d)
	}
	m.e2e.Observe(res.E2E().Seconds())
	m.queue.Observe(res.QueueTime().Seconds())
}

var (
	descRunning = prometheus.NewDesc("vllm:num_requests_running",
		"Number of requests in model execution batches.", engineLabels, nil)
	descWaiting = prometheus.NewDesc("vllm:num_requests_waiting",
		"Number of requests waiting to be processed.", engineLabels, nil)
	descKVUsage = prometheus.NewDesc("vllm:kv_cache_usage_perc",
		"KV-cache usage. 1 means 100 percent usage.", engineLabels, nil)
	descGPUCacheUsage = prometheus.NewDesc("vllm:gpu_cache_usage_perc",
		"GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED: use vllm:kv_cache_usage_perc.", engineLabels, nil)
	descPrefixQueries = prometheus.NewDesc("vllm:prefix_cache_queries_total",
		"Prefix cache queries, in terms of number of queried tokens.", engineLabels, nil)
	descPrefixHits = prometheus.NewDesc("vllm:prefix_cache_hits_total",
		"Prefix cache hits, in terms of number of cached tokens.", engineLabels, nil)
	descPreemptions = prometheus.NewDesc("vllm:num_preemptions_total",
		"Cumulative number of preemption from the engine.", engineLabels, nil)
	descPromptTokens = prometheus.NewDesc("vllm:prompt_tokens_total",
		"Number of prefill tokens processed.", engineLabels, nil)
	descGenerationTokens = prometheus.NewDesc("vllm:generation_tokens_total",
		"Number of generation tokens processed.", engineLabels, nil)
	descSuccess = prometheus.NewDesc("vllm:request_success_total",
		"Count of successfully processed requests.", append(engineLabels[:2:2], "finished_reason"), nil)
	descCacheConfig = prometheus.NewDesc("vllm:cache_config_info",
		"Information of the LLMEngine CacheConfig",
		[]string{"model_name", "engine", "block_size", "num_gpu_blocks", "num_cpu_blocks", "cache_dtype", "enable_prefix_caching", "gpu_memory_utilization"}, nil)
	descLoRA = prometheus.NewDesc("vllm:lora_requests_info",
		"Running stats on lora requests.",
		[]string{"max_lora", "waiting_lora_adapters", "running_lora_adapters"}, nil)
)

// snapshotCollector turns an engine snapshot into vLLM's gauges, counters
// and info metrics at scrape time.
type snapshotCollector struct {
	engine *simulator.Engine
	model  string
	lora   func() bool
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRunning, descWaiting, descKVUsage, descGPUCacheUsage,
		descPrefixQueries, descPrefixHits, descPreemptions, descPromptTokens, descGenerationTokens,
		descSuccess, descCacheConfig, descLoRA} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.engine.Snapshot()
	m, e := c.model, "0"
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, m, e)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), m, e)
	}
	gauge(descRunning, float64(s.Running))
	gauge(descWaiting, float64(s.Waiting))
	gauge(descKVUsage, s.KVUsage)
	gauge(descGPUCacheUsage, s.KVUsage)
	counter(descPrefixQueries, s.PrefixQueries)
	counter(descPrefixHits, s.PrefixHits)
	counter(descPreemptions, s.Preemptions)
	counter(descPromptTokens, s.PromptTokens)
	counter(descGenerationTokens, s.GenerationTokens)
	for _, r := range []struct {
		reason string
		n      uint64
	}{{"stop", s.FinishedStop}, {"length", s.FinishedLength}, {"abort", s.FinishedAbort}} {
		ch <- prometheus.MustNewConstMetric(descSuccess, prometheus.CounterValue, float64(r.n), m, e, r.reason)
	}
	ch <- prometheus.MustNewConstMetric(descCacheConfig, prometheus.GaugeValue, 1, m, e,
		strconv.Itoa(s.BlockSize), strconv.Itoa(s.NumBlocks), "0", "auto", "True", "0.9")
	if c.lora != nil && c.lora() {
		ch <- prometheus.MustNewConstMetric(descLoRA, prometheus.GaugeValue, float64(s.Time.UnixNano())/1e9,
			strconv.Itoa(s.MaxLoras), strings.Join(s.WaitingLoRAs, ","), strings.Join(s.RunningLoRAs, ","))
	}
}

var _ prometheus.Collector = (*snapshotCollector)(nil)
