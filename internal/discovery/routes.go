package discovery

import (
	"context"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
)

// RouteSource reports the routes that exist, with the endpoints they bring
// along (external engines a route declares). Run calls update with the
// whole set at least once, and again whenever it changes, until ctx is
// done. Objects it cannot use are reported in RouteSet.Skipped, never by
// failing the whole set.
type RouteSource interface {
	Run(ctx context.Context, update func(RouteSet)) error
}

// RouteSourceFunc adapts a function to RouteSource.
type RouteSourceFunc func(ctx context.Context, update func(RouteSet)) error

// Run calls f.
func (f RouteSourceFunc) Run(ctx context.Context, update func(RouteSet)) error {
	return f(ctx, update)
}

// RouteSet is one report of a RouteSource.
type RouteSet struct {
	// Routes are the usable routes, one per public model, sorted by model.
	Routes []Route
	// Endpoints are the endpoints the usable routes declare, sorted by name.
	Endpoints []datastore.EndpointSpec
	// Skipped are the route objects left out, and why.
	Skipped []SkippedRoute
}

// Route is a route and where it came from.
type Route struct {
	Spec config.RouteSpec
	// Origin names the object, e.g. "ModelRoute ns/name", for logs.
	Origin string
}

// Reasons a route is skipped.
const (
	// SkipInvalid: the object fails validation.
	SkipInvalid = "invalid"
	// SkipConflict: another route claims the same public model and wins.
	SkipConflict = "conflict"
)

// SkippedRoute is a route object that is not used.
type SkippedRoute struct {
	Origin string
	Model  string
	// Reason is SkipInvalid or SkipConflict.
	Reason string
	// Message says what is wrong, naming the field path or the winner.
	Message string
}

// StaticRoutes is a fixed route set.
type StaticRoutes struct {
	Set RouteSet
}

// Run reports the set once and waits for ctx.
func (s *StaticRoutes) Run(ctx context.Context, update func(RouteSet)) error {
	update(s.Set)
	<-ctx.Done()
	return nil
}

var (
	_ RouteSource = (*StaticRoutes)(nil)
	_ RouteSource = RouteSourceFunc(nil)
)
