// Package ejection is the outlier-ejection filter: it removes endpoints
// their host has ejected for answering server errors in a row (an endpoint
// with an Ejected(now time.Time) bool method, as the router's datastore
// endpoints have; see router.health.outlier), but never all of them: when
// every candidate is ejected it keeps them all, so that passive ejection
// never empties a pool (or, in a disaggregated pool, a role). Time is the
// handle's clock.
//
// Params: none.
package ejection
