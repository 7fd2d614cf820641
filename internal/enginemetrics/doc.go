// Package enginemetrics reads an inference engine's Prometheus text
// exposition (/metrics) into a framework.Metrics snapshot. It knows vLLM's
// names and maps SGLang's onto the same snapshot; every other line is skipped
// without being decoded, so a scrape costs a scan of the text and no
// allocation beyond the snapshot.
//
// Scheduling, health tracking and the scrape loop live elsewhere (the
// datastore); this package only parses and fetches.
package enginemetrics
