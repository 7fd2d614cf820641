// Package latencymodel keeps, for one engine, the router's estimate of the
// work it has sent there and not yet seen finish (outstanding prefill in
// uncached tokens, decoding sequences and their context), and an online fit
// of the engine's step time in the linear form of package steptime, learnt
// from the inter-token times the router observes. From both it predicts a
// new request's time to first token and the step time (TPOT) of the streams
// decoding there.
//
// It is transport-free and clock-free: callers pass the time of each event,
// so the router (wall clock) and the virtual bench (virtual clock) drive it
// alike. It imports nothing of the scheduler; the predicted-latency scorer
// plugin wraps it.
package latencymodel
