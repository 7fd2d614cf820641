// Package autoscale decides how many serving groups a model needs, and which
// groups to remove when it needs fewer. It is the one decision path for
// autoscaling (DESIGN.md §9, §16): the controller applies it to a
// ModelServing, and the bench's virtual fleet (internal/bench/virtual)
// applies the same code to simulated engines.
//
// An Autoscaler is fed Signals (what the routers see: requests waiting, KV
// cache usage, outstanding prefill tokens, generated tokens per second,
// attainment of the TTFT and TPOT objectives, and demand held in a waiting
// room while no engine is ready) and observed cold-start times, and
// Decide returns the desired number of groups (and, for disaggregated
// serving, of prefill and decode instances) with the reason. Time is always
// passed in: there is no clock, no goroutine and no I/O here, so a test or a
// virtual-time run controls it completely.
//
// ChooseVictims picks the groups to remove: those whose engines hold the
// least unique hot prefix cache, from per-engine prefix hit statistics (a
// HitLedger) that a router keeps.
// HitLedger.Credit is the one way a hit reaches a ledger: the router calls
// it for each answer an engine reported cached tokens in, the bench's
// virtual fleet for each request its engines finished, both with the
// router's prefix hasher, so they credit the same blocks.
//
// What does not belong here: reading signals (the router's and the
// controller's job), creating or deleting pods, draining endpoints.
package autoscale
