// Package discovery holds endpoint sources: where the router learns which
// engines exist. A Source reports the whole current set each time it changes;
// the router applies it with datastore.Store.Sync. The static source reads the
// config file's endpoints block; a Kubernetes source (pods of a ModelServing)
// will implement the same interface.
//
// Health and metrics are not discovery's business: the datastore's collector
// tracks them.
package discovery
