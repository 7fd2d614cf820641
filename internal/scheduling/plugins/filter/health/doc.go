// Package health is the health filter: it removes endpoints that report
// themselves unhealthy (an endpoint with a Healthy() bool method, as the
// router's datastore endpoints have: scraped and answering) and endpoints
// whose metrics have gone stale. The decision package runs it first when
// it selects a pool's candidates, with the staleness bound off
// (maxMetricsAge "0"). Scores computed from a
// snapshot older than maxMetricsAge (default 5s, fifty scrapes at the
// default interval) describe an engine that may no longer exist or be
// wedged; such an endpoint is better left out.
//
// Endpoints never scraped (a zero snapshot time) are kept unless
// dropUnscraped is set: right after start-up every endpoint is unscraped.
// Time is the handle's clock, so the filter works in virtual time.
//
// Params: {"maxMetricsAge": "5s", "dropUnscraped": false}.
package health
