// Package enginestats reads the counters of the engines behind a benchmark
// target from their Prometheus /metrics pages, before and after a run, so
// that the report can give the engines' own prefix-cache hit rate
// (vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total deltas)
// and the spread of load across engines (vllm:request_success_total and
// vllm:prompt_tokens_total deltas).
//
// Its parser reads the Prometheus text format tolerantly: it sums a
// metric's samples over all label sets and ignores everything else.
package enginestats
