// Package stats turns per-request measurements into the figures a benchmark
// reports: latency distributions (mean, standard deviation, median, p90,
// p99) of TTFT, TPOT, ITL and end-to-end latency, request and token
// throughput, and goodput under service-level objectives.
//
// Definitions follow vLLM's `vllm bench serve`: TPOT of a request is
// (E2E − TTFT)/(output tokens − 1) and is defined only for requests with more
// than one output token; percentiles interpolate linearly between the closest
// ranks (numpy's default); goodput counts the completed requests that meet
// every given objective, per second of the run.
//
// It knows nothing of HTTP, workloads or engines.
package stats
