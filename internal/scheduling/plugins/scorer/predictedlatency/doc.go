// Package predictedlatency is the predicted-latency scorer: for each
// candidate it predicts the request's time to first token (the uncached
// prefill waiting there plus the request's own uncached tokens, in steps of
// the engine's fitted step time), the time per output token it will see,
// and the stall its prefill imposes on the streams already decoding there,
// and prefers the endpoint of least predicted cost. Prefix affinity is in
// the same unit: the tokens an endpoint holds are prefill time saved.
//
// The scorer keeps one latencymodel.Engine per endpoint: what the router
// sent there and has not seen finish (PreRequest, FirstToken and
// ResponseComplete hooks), corrected by the engine's scraped queue, and the
// online fit of its step time. It reads the prefix-cache scorer's per
// endpoint matches (prefixcache.MatchedKey) when that scorer runs before it
// in the profile; without it every prompt counts as uncached.
//
// Requests may carry objectives in the headers x-halyard-slo-ttft-ms and
// x-halyard-slo-tpot-ms (or take the params' defaults): endpoints predicted
// to meet them are preferred; when none is, the explanation says so and the
// scorer counts it (halyard_router_slo_unmeetable_total). With the param
// unmeetable "triage" such a request goes instead to the endpoint already
// furthest behind the TTFT objective, where it delays no request that
// could still be on time (Params.Unmeetable).
//
// Scores are minCost/cost over the candidates: the cheapest scores 1. With
// max-score as the picker and this scorer alone weighted, the pick is the
// endpoint of least predicted cost.
package predictedlatency
