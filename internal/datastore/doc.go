// Package datastore holds the router's view of its endpoints: what discovery
// said about each (metadata and pool), the latest scraped engine metrics, the
// router's own in-flight request and token counts, and health. It also runs
// the scrape loop that keeps metrics and health current.
//
// Endpoints implement framework.Endpoint, so scheduling plugins read them
// directly; plugins never write here. Discovery sources (package discovery)
// feed Store.Sync; parsing engine metrics is package enginemetrics.
package datastore
