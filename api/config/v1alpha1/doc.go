// Package v1alpha1 holds the versioned types of Halyard's configuration file
// (apiVersion config.halyard.dev/v1alpha1, kind Config), read by
// `halyard router --config` and `halyard up --config`, and the route schema
// that the ModelRoute custom resource embeds, so that one document serves
// both. Load decodes strictly, then defaults, then validates; every error
// names the field path.
package v1alpha1
