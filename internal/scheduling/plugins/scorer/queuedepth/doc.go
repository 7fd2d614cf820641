// Package queuedepth is the queue-depth scorer: it prefers endpoints with
// fewer requests waiting in the engine's queue or in flight from this router.
//
// The depth of an endpoint is vllm:num_requests_waiting from the last scrape
// plus the router's own count of requests in flight to it. The scraped figure
// sees other routers' load but lags by up to a scrape interval; the in-flight
// count is exact at every instant, so a burst between two scrapes does not
// all land on the endpoint that looked idlest at the last scrape.
//
// Scores are min-max normalised over the candidates: the shallowest endpoint
// scores 1, the deepest 0, and all score 1 when every depth is equal.
package queuedepth
