// Package framework holds the interfaces of Halyard's scheduling framework and
// nothing else of substance: the Endpoint and Request that plugins read, the
// Filter, Scorer and Picker extension points, the per-cycle state, the
// explanation record, and the plugin registry.
//
// A scheduling cycle runs one profile: its filters narrow the candidate
// endpoints, its scorers each give every survivor a score in [0,1], the
// scheduler sums the scores with the profile's weights, and its picker
// chooses. Plugins read endpoint state; they never collect it (scrapers and
// KV-event subscribers live elsewhere and publish snapshots).
//
// This package imports nothing else from Halyard's internal packages; a test
// checks it.
package framework
