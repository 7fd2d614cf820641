// Package perf measures the router's overhead against a zero-latency
// simulated engine, side by side in one run: maximum requests per second
// (closed loop, wrk) and latency at a fixed rate (open loop, a lean Go
// client), straight to the engine versus through the router. It runs only
// with HALYARD_PERF=1; docs/benchmarks.md records its output.
package perf
