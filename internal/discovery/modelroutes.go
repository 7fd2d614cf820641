package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
)

// ModelRoutes reports the ModelRoute objects as routes. It follows them
// through an informer (a dynamic client, so no generated clientset is
// needed), so creating, editing or deleting a ModelRoute changes the set
// without a restart.
//
// Pools are namespaced: a target's pool P in a ModelRoute of namespace N
// becomes pool "N/P", which holds the ready pods of ModelServing P in N
// (Kubernetes names pod pools the same way) and the route's endpoints[]
// entries whose pool is P. An endpoints[] entry joins the endpoint set
// named "N/<route>/<name>" (name: the entry's name, else its URL's
// host:port).
//
// A ModelRoute that fails servingv1.CheckRoute or cannot be decoded is
// skipped (SkipInvalid). When two claim one public model, the older
// (creationTimestamp, then namespace/name) wins and the other is skipped
// (SkipConflict). Both are logged when they first appear.
type ModelRoutes struct {
	Client dynamic.Interface
	// Namespace limits the routes to one namespace; empty: all.
	Namespace string
	Log       *slog.Logger
}

// ModelRouteResource is the ModelRoute resource.
var ModelRouteResource = servingv1.GroupVersion.WithResource("modelroutes")

// Run watches the ModelRoutes and reports the route set whenever it
// changes.
func (m *ModelRoutes) Run(ctx context.Context, update func(RouteSet)) error {
	log := m.Log
	if log == nil {
		log = slog.Default()
	}
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(m.Client, 10*time.Minute, m.Namespace, nil)
	inf := factory.ForResource(ModelRouteResource)
	var (
		last     *RouteSet
		reported = map[string]string{} // origin → the skip message logged
	)
	return follow(ctx, "modelroute discovery", factory, inf.Informer(), func() {
		objs, err := inf.Lister().List(labels.Everything())
		if err != nil {
			log.Warn("modelroute discovery: list", "error", err)
			return
		}
		var (
			routes  []servingv1.ModelRoute
			decoded []SkippedRoute
		)
		for _, o := range objs {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			var mr servingv1.ModelRoute
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &mr); err != nil {
				decoded = append(decoded, SkippedRoute{Origin: origin(u.GetNamespace(), u.GetName()), Reason: SkipInvalid, Message: "decode: " + err.Error()})
				continue
			}
			routes = append(routes, mr)
		}
		set := ResolveModelRoutes(routes)
		set.Skipped = append(decoded, set.Skipped...)
		sort.Slice(set.Skipped, func(i, j int) bool { return set.Skipped[i].Origin < set.Skipped[j].Origin })
		now := map[string]string{}
		for _, s := range set.Skipped {
			now[s.Origin] = s.Message
			if reported[s.Origin] != s.Message {
				log.Warn("modelroute skipped", "origin", s.Origin, "model", s.Model, "reason", s.Reason, "error", s.Message)
			}
		}
		reported = now
		if last != nil && reflect.DeepEqual(*last, set) {
			return
		}
		last = &set
		update(set)
	})
}

func origin(ns, name string) string { return "ModelRoute " + ns + "/" + name }

// ResolveModelRoutes turns ModelRoute objects into a route set: validated,
// one winner per public model, pools qualified by namespace, the routes'
// endpoints converted. The result does not depend on the input's order.
func ResolveModelRoutes(mrs []servingv1.ModelRoute) RouteSet {
	mrs = append([]servingv1.ModelRoute(nil), mrs...)
	sort.Slice(mrs, func(i, j int) bool { return servingv1.RoutePrecedes(&mrs[i], &mrs[j]) })
	set := RouteSet{Routes: []Route{}, Endpoints: []datastore.EndpointSpec{}}
	winner := map[string]string{} // public model → origin
	for i := range mrs {
		mr := &mrs[i]
		o := origin(mr.Namespace, mr.Name)
		skip := func(reason, msg string) {
			set.Skipped = append(set.Skipped, SkippedRoute{Origin: o, Model: mr.Spec.Model, Reason: reason, Message: msg})
		}
		if err := checkModelRoute(mr); err != nil {
			skip(SkipInvalid, err.Error())
			continue
		}
		if w, taken := winner[mr.Spec.Model]; taken {
			skip(SkipConflict, fmt.Sprintf("model %q is routed by the older %s", mr.Spec.Model, w))
			continue
		}
		winner[mr.Spec.Model] = o
		set.Routes = append(set.Routes, Route{Spec: qualify(mr.Namespace, mr.Spec.RouteSpec), Origin: o})
		set.Endpoints = append(set.Endpoints, routeEndpoints(mr)...)
	}
	sort.Slice(set.Routes, func(i, j int) bool { return set.Routes[i].Spec.Model < set.Routes[j].Spec.Model })
	sort.Slice(set.Endpoints, func(i, j int) bool { return set.Endpoints[i].Metadata.Name < set.Endpoints[j].Metadata.Name })
	return set
}

// checkModelRoute: servingv1.CheckRoute, plus what the router needs that
// the schema normally guarantees (the object may predate the schema).
func checkModelRoute(mr *servingv1.ModelRoute) error { return servingv1.CheckRoute(&mr.Spec) }

// PoolName is the router's name of pool p of namespace ns: what a
// ModelRoute's target names, and the pool of a ModelServing's pods.
func PoolName(ns, p string) string { return ns + "/" + p }

// qualify returns a copy of rs whose pools are namespaced.
func qualify(ns string, rs config.RouteSpec) config.RouteSpec {
	out := *rs.DeepCopy()
	q := func(ts []config.TargetSpec) {
		for i := range ts {
			ts[i].Pool = PoolName(ns, ts[i].Pool)
		}
	}
	q(out.Targets)
	q(out.Fallback)
	for i := range out.Rules {
		q(out.Rules[i].Targets)
	}
	return out
}

// routeEndpoints converts a route's endpoints[] entries.
func routeEndpoints(mr *servingv1.ModelRoute) []datastore.EndpointSpec {
	if len(mr.Spec.Endpoints) == 0 {
		return nil
	}
	eps := make([]config.EndpointSpec, len(mr.Spec.Endpoints))
	for i, e := range mr.Spec.Endpoints {
		e = *e.DeepCopy()
		if e.Name == "" {
			if u, err := url.Parse(e.URL); err == nil {
				e.Name = u.Host
			}
		}
		e.Name = mr.Namespace + "/" + mr.Name + "/" + e.Name
		if e.Pool == "" {
			e.Pool = e.Model
		}
		e.Pool = PoolName(mr.Namespace, e.Pool)
		if e.Role == "" {
			e.Role = config.RoleBoth
		}
		e.URL = strings.TrimSuffix(e.URL, "/")
		eps[i] = e
	}
	return Specs(eps)
}

var _ RouteSource = (*ModelRoutes)(nil)
