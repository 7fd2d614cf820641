// Package observability sets up Halyard's logging (log/slog, text or JSON)
// and declares the router's Prometheus metrics (halyard_router_*) on a
// registry of their own, so that every metric name is defined, and documented
// (docs/router.md), in one place. Engine metrics that the router reads are
// package enginemetrics; this package only publishes.
package observability
