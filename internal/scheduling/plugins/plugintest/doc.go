// Package plugintest provides what tests of scheduling plugins need: a simple
// Endpoint whose state tests set directly, a Handle with a settable clock,
// and helpers to build plugins from JSON params. It is imported by tests
// only; the router's real endpoints live in internal/datastore.
package plugintest
