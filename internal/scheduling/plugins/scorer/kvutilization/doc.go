// Package kvutilization is the kv-utilization scorer: it prefers endpoints
// whose KV cache is less full, scoring 1 − vllm:kv_cache_usage_perc from the
// last scrape. The score is absolute, not normalised over the candidates:
// usage is already a fraction, and small differences between endpoints
// should weigh little. An endpoint never scraped scores 1 (usage unknown is
// taken as empty; the queue and least-request scorers carry the load signal
// until the first scrape).
package kvutilization
