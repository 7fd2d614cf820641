package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	configv1alpha1 "github.com/halyard-dev/halyard/api/config/v1alpha1"
	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// ModelRoute condition types and reasons.
const (
	ConditionAccepted     = "Accepted"
	ConditionResolvedRefs = "ResolvedRefs"
	ReasonValid           = "Valid"
	ReasonInvalid         = "Invalid"
	ReasonResolved        = "Resolved"
	ReasonPoolNotFound    = "PoolNotFound"
)

// ModelRouteReconciler checks ModelRoutes: what the CRD schema cannot (a
// header regular expression that does not compile) makes Accepted False,
// and a pool that names neither a ModelServing in the namespace nor an
// external endpoint makes ResolvedRefs False. The router reads the routes
// itself; this reconciler only reports.
type ModelRouteReconciler struct {
	Client client.Client
}

// +kubebuilder:rbac:groups=serving.halyard.dev,resources=modelroutes,verbs=get;list;watch
// +kubebuilder:rbac:groups=serving.halyard.dev,resources=modelroutes/status,verbs=get;update;patch

// Reconcile implements reconcile.Reconciler.
func (r *ModelRouteReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	mr := &servingv1.ModelRoute{}
	if err := r.Client.Get(ctx, req.NamespacedName, mr); err != nil {
		if apierrors.IsNotFound(err) {
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("get modelroute: %w", err)
	}
	st := mr.Status.DeepCopy()
	st.ObservedGeneration = mr.Generation
	set := func(typ string, ok bool, reason, msg string) {
		s := metav1.ConditionTrue
		if !ok {
			s = metav1.ConditionFalse
		}
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: mr.Generation})
	}
	if err := CheckRoute(&mr.Spec); err != nil {
		set(ConditionAccepted, false, ReasonInvalid, err.Error())
	} else {
		set(ConditionAccepted, true, ReasonValid, "the route is well formed")
	}
	var list servingv1.ModelServingList
	if err := r.Client.List(ctx, &list, client.InNamespace(mr.Namespace)); err != nil {
		return reconcile.Result{}, fmt.Errorf("list modelservings: %w", err)
	}
	known := map[string]bool{}
	for _, ms := range list.Items {
		known[ms.Name] = true
	}
	for _, e := range mr.Spec.Endpoints {
		known[endpointPool(e)] = true
	}
	var missing []string
	for _, pool := range routePools(&mr.Spec.RouteSpec) {
		if !known[pool] {
			missing = append(missing, pool)
		}
	}
	if len(missing) > 0 {
		set(ConditionResolvedRefs, false, ReasonPoolNotFound, fmt.Sprintf("pools %s name no ModelServing in namespace %s and no entry of spec.endpoints", strings.Join(missing, ", "), mr.Namespace))
	} else {
		set(ConditionResolvedRefs, true, ReasonResolved, "every pool names a ModelServing or an endpoint")
	}
	if equality.Semantic.DeepEqual(&mr.Status, st) {
		return reconcile.Result{}, nil
	}
	mr.Status = *st
	if err := r.Client.Status().Update(ctx, mr); err != nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		return reconcile.Result{}, fmt.Errorf("update modelroute status: %w", err)
	}
	return reconcile.Result{}, nil
}

// CheckRoute validates what the CRD schema cannot express; the error names
// the field path. It is servingv1.CheckRoute, which the router uses too.
func CheckRoute(s *servingv1.ModelRouteSpec) error { return servingv1.CheckRoute(s) }

func endpointPool(e configv1alpha1.EndpointSpec) string {
	if e.Pool != "" {
		return e.Pool
	}
	return e.Model
}

// routePools lists every pool a route names, sorted and unique.
func routePools(s *configv1alpha1.RouteSpec) []string {
	seen := map[string]bool{}
	add := func(ts []configv1alpha1.TargetSpec) {
		for _, t := range ts {
			seen[t.Pool] = true
		}
	}
	add(s.Targets)
	add(s.Fallback)
	for _, rule := range s.Rules {
		add(rule.Targets)
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// SetupWithManager registers the reconciler; a ModelServing appearing or
// going re-checks the routes of its namespace.
func (r *ModelRouteReconciler) SetupWithManager(mgr ctrl.Manager) error {
	c := mgr.GetClient()
	return ctrl.NewControllerManagedBy(mgr).
		For(&servingv1.ModelRoute{}).
		Watches(&servingv1.ModelServing{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var list servingv1.ModelRouteList
			if err := c.List(ctx, &list, client.InNamespace(o.GetNamespace())); err != nil {
				return nil
			}
			out := make([]reconcile.Request, 0, len(list.Items))
			for _, mr := range list.Items {
				out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: mr.Namespace, Name: mr.Name}})
			}
			return out
		}), builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(ctrlevent.UpdateEvent) bool { return false },
		})).
		Complete(r)
}

var _ reconcile.Reconciler = (*ModelRouteReconciler)(nil)
