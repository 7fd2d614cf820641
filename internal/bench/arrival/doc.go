// Package arrival decides when a benchmark sends each request: a Poisson
// process at a rate, everything at once (an infinite rate), or the
// workload's own trace timestamps scaled by a factor. Closed-loop
// concurrency has no schedule; the runner keeps N requests in flight.
//
// Schedules are offsets from the run's start, computed up front from a seed,
// so a run is repeatable and the same schedule serves live and virtual-time
// runs.
package arrival
