// Package leastrequest is the least-request scorer: it prefers endpoints with
// fewer requests in flight from this router. The count is the router's own
// (exact at every instant, no scrape needed), so with the max-score picker it
// makes a complete least-request profile that works before the first scrape
// and against engines that export no metrics.
//
// Scores are min-max normalised over the candidates: fewest in flight scores
// 1, most 0, and all score 1 when every count is equal.
package leastrequest
