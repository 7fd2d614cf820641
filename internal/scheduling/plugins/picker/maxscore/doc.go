// Package maxscore is the max-score picker: it picks the endpoint with the
// highest weighted score, breaking ties uniformly at random. The random
// tie-break matters: when every score is equal (an idle pool, or a profile
// without scorers) traffic spreads over the pool instead of herding on the
// first endpoint in candidate order.
//
// Params: {"count": N} returns the N best, best first (default 1), for
// callers that want fallbacks; {"seed": S} makes the tie-break reproducible
// (default 0: the runtime's generator).
package maxscore
