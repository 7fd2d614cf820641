package router

import (
	"fmt"
	"reflect"
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/routing"
	"github.com/halyard-dev/halyard/internal/scheduling"
)

// routeState is one immutable snapshot of the routes: the table and the
// profiles its routes may name. A request reads it once (Router.routes)
// and keeps the route and profile it found, so a swap never disturbs a
// request in flight.
type routeState struct {
	table    *routing.Table
	profiles map[string]*scheduling.Profile // never modified once stored
}

// routes returns the current snapshot.
func (r *Router) routes() *routeState { return r.state.Load() }

// routeMetrics count route table updates.
type routeMetrics struct {
	updates *prometheus.CounterVec
	routes  prometheus.Gauge
	skipped *prometheus.GaugeVec
}

// Results of a route table update.
const (
	updateApplied  = "applied"
	updateRejected = "rejected"
)

func newRouteMetrics(reg prometheus.Registerer) *routeMetrics {
	m := &routeMetrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "halyard_router_route_updates_total",
			Help: "Route table updates (SetRoutes, ModelRoute changes) by result: applied, or rejected (the previous table stays).",
		}, []string{"result"}),
		routes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "halyard_router_routes",
			Help: "Public models in the current route table.",
		}),
		skipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "halyard_router_routes_skipped",
			Help: "Route objects of the route source left out of the table now, by reason: invalid (fails validation, or names an unknown profile) or conflict (another route has the same public model and wins).",
		}, []string{"reason"}),
	}
	for _, res := range []string{updateApplied, updateRejected} {
		m.updates.WithLabelValues(res)
	}
	for _, reason := range []string{discovery.SkipInvalid, discovery.SkipConflict} {
		m.skipped.WithLabelValues(reason)
	}
	reg.MustRegister(m.updates, m.routes, m.skipped)
	return m
}

// SetRoutes replaces the route table. The routes are validated as New
// validates the config's (duplicate models, targets and weights, header
// expressions, profiles that are neither configured nor presets), and
// preset profiles they name that are not built yet are built now. On any
// error the current table stays and the error says why. Requests already
// routed keep the route and profile they found; later ones see the new
// table. Pools with a pd block stay as configured.
func (r *Router) SetRoutes(routes []config.RouteSpec) error {
	r.setMu.Lock()
	defer r.setMu.Unlock()
	next, built, err := r.buildRoutes(routes)
	if err != nil {
		r.rm.updates.WithLabelValues(updateRejected).Inc()
		r.log.Warn("route update rejected; the previous routes stay", "error", err, "routes", len(routes))
		return err
	}
	if err := r.registerPluginMetrics(next.profiles, built); err != nil {
		r.rm.updates.WithLabelValues(updateRejected).Inc()
		r.log.Warn("route update rejected; the previous routes stay", "error", err, "routes", len(routes))
		return err
	}
	prev := r.state.Swap(next)
	r.rm.updates.WithLabelValues(updateApplied).Inc()
	r.rm.routes.Set(float64(len(next.table.Models())))
	added, removed := diffModels(prev.table.Models(), next.table.Models())
	r.log.Info("routes updated", "models", next.table.Models(), "added", added, "removed", removed, "profilesBuilt", built)
	return nil
}

// buildRoutes makes the snapshot for routes from the current one, building
// the profiles it lacks; it changes nothing. built lists the new profiles.
func (r *Router) buildRoutes(routes []config.RouteSpec) (*routeState, []string, error) {
	table, err := routing.New(routes)
	if err != nil {
		return nil, nil, fmt.Errorf("router: %w", err)
	}
	cur := r.routes()
	profiles := cur.profiles
	var built []string
	for _, m := range table.Models() {
		rt, _ := table.Lookup(m)
		if profiles[rt.Profile] != nil {
			continue
		}
		if !r.profiles.Has(rt.Profile) {
			return nil, nil, r.unknownProfile(m, rt.Profile)
		}
		p, err := r.profiles.Get(rt.Profile)
		if err != nil {
			return nil, nil, fmt.Errorf("router: %w", err)
		}
		if len(built) == 0 {
			profiles = cloneProfiles(profiles)
		}
		profiles[rt.Profile] = p
		built = append(built, rt.Profile)
	}
	sort.Strings(built)
	return &routeState{table: table, profiles: profiles}, built, nil
}

// checkRoute says whether one route could join the table: its own
// validation and its profile.
func (r *Router) checkRoute(rs config.RouteSpec) error {
	table, err := routing.New([]config.RouteSpec{rs})
	if err != nil {
		return err
	}
	rt, _ := table.Lookup(rs.Model)
	if r.routes().profiles[rt.Profile] != nil {
		return nil
	}
	if !r.profiles.Has(rt.Profile) {
		return r.unknownProfile(rs.Model, rt.Profile)
	}
	return nil
}

func (r *Router) unknownProfile(model, profile string) error {
	return fmt.Errorf("router: route %q uses profile %q, which is neither in router.profiles nor a preset (presets: %v)", model, profile, r.profiles.PresetNames())
}

func cloneProfiles(m map[string]*scheduling.Profile) map[string]*scheduling.Profile {
	out := make(map[string]*scheduling.Profile, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// diffModels returns the models only in next (added) and only in prev
// (removed); both inputs are sorted.
func diffModels(prev, next []string) (added, removed []string) {
	for _, m := range next {
		if _, ok := slices.BinarySearch(prev, m); !ok {
			added = append(added, m)
		}
	}
	for _, m := range prev {
		if _, ok := slices.BinarySearch(next, m); !ok {
			removed = append(removed, m)
		}
	}
	return added, removed
}

// applyRouteSet merges a route source's report with the config file's
// routes and applies it: the config file's routes come first and win a
// public model both name; a route that could not join the table (unknown
// profile, bad targets) is left out with a log line, so that one bad object
// never blocks the others. The endpoints the routes declare join the
// endpoint set.
func (r *Router) applyRouteSet(set discovery.RouteSet) {
	skipped := map[string]int{}
	for _, s := range set.Skipped {
		skipped[s.Reason]++
	}
	merged := slices.Clone(r.configRoutes)
	taken := make(map[string]bool, len(merged)+len(set.Routes))
	for _, rt := range merged {
		taken[rt.Model] = true
	}
	for _, rt := range set.Routes {
		if taken[rt.Spec.Model] {
			skipped[discovery.SkipConflict]++
			r.log.Warn("route skipped: the config file routes this model", "origin", rt.Origin, "model", rt.Spec.Model)
			continue
		}
		if err := r.checkRoute(rt.Spec); err != nil {
			skipped[discovery.SkipInvalid]++
			r.log.Warn("route skipped: invalid", "origin", rt.Origin, "model", rt.Spec.Model, "error", err)
			continue
		}
		taken[rt.Spec.Model] = true
		merged = append(merged, rt.Spec)
	}
	for _, reason := range []string{discovery.SkipInvalid, discovery.SkipConflict} {
		r.rm.skipped.WithLabelValues(reason).Set(float64(skipped[reason]))
	}
	// Endpoints first, so that a new route finds its endpoints.
	r.syncEndpoints(fromRoutes, set.Endpoints)
	// Each route passed checkRoute alone; what may remain (a profile that
	// fails to build) is counted and logged by SetRoutes, and the previous
	// table stays.
	if r.lastMerged != nil && reflect.DeepEqual(*r.lastMerged, merged) {
		return // only the skipped objects changed: keep the splits' state
	}
	if r.SetRoutes(merged) == nil {
		r.lastMerged = &merged
	}
}

// Where an endpoint set comes from.
const (
	fromSource = iota // the endpoint source (static, file, pods)
	fromRoutes        // the routes' own endpoints
)

// syncEndpoints applies an endpoint set from one origin; the store holds
// the union of both origins' latest sets.
func (r *Router) syncEndpoints(origin int, specs []datastore.EndpointSpec) {
	r.endpointsMu.Lock()
	defer r.endpointsMu.Unlock()
	if origin == fromSource {
		r.sourceEndpoints = specs
	} else {
		r.routeEndpoints = specs
	}
	specs = make([]datastore.EndpointSpec, 0, len(r.sourceEndpoints)+len(r.routeEndpoints))
	specs = append(specs, r.sourceEndpoints...)
	specs = append(specs, r.routeEndpoints...)
	added, removed := r.store.Sync(specs)
	r.prefix.sync(specs, removed)
	for _, e := range added {
		r.log.Info("endpoint added", "endpoint", e.Metadata().Name, "pool", e.Pool(), "address", e.Metadata().Address)
	}
	for _, e := range removed {
		r.log.Info("endpoint removed", "endpoint", e.Metadata().Name)
		if r.store.Get(e.Metadata().Name) == nil {
			r.signals.forget(e.Metadata().Name)
		}
	}
}
