package k8s

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
)

// routeCondition waits until the ModelRoute's condition typ has status and
// reason and its message contains msg.
func (k *cluster) routeCondition(t *testing.T, ns, name, typ, status, reason, msg string) {
	t.Helper()
	eventually(t, waitLong, fmt.Sprintf("ModelRoute %s/%s %s=%s (%s)", ns, name, typ, status, reason), func() (bool, string) {
		mr := &servingv1.ModelRoute{}
		if err := k.c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, mr); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(mr.Status.Conditions, typ)
		if c == nil {
			return false, "no condition yet"
		}
		ok := string(c.Status) == status && c.Reason == reason && strings.Contains(c.Message, msg) && c.ObservedGeneration == mr.Generation
		return ok, fmt.Sprintf("%s=%s reason %s: %s (generation %d/%d)", typ, c.Status, c.Reason, c.Message, c.ObservedGeneration, mr.Generation)
	})
}

// The controller reports on ModelRoutes what the router will do with them:
// an unresolved pool, an invalid header expression, and a second route for
// a public model that an older one routes (the router's own precedence
// rule), which takes over when the older one goes.
func TestModelRouteConditions(t *testing.T) {
	k, _ := sharedCluster(t)
	nsA := k.namespace(t, "mrstatus-a")
	nsB := k.namespace(t, "mrstatus-b")
	ctx := context.Background()

	if err := k.c.Create(ctx, modelRoute(nsA, "first", "mrs-model", weighted("svc", 1))); err != nil {
		t.Fatal(err)
	}
	k.routeCondition(t, nsA, "first", controller.ConditionAccepted, "True", controller.ReasonValid, "")
	k.routeCondition(t, nsA, "first", controller.ConditionResolvedRefs, "False", controller.ReasonPoolNotFound, "svc")
	create(t, k, servingOn(nsA, "svc", 8000))
	k.routeCondition(t, nsA, "first", controller.ConditionResolvedRefs, "True", controller.ReasonResolved, "")

	bad := modelRoute(nsA, "bad", "mrs-bad", weighted("svc", 1))
	bad.Spec.Rules = []config.RouteRule{{
		Headers: []config.HeaderMatch{{Name: "x-tenant", Type: config.MatchRegularExpression, Value: "(unclosed"}},
		Targets: []config.TargetSpec{weighted("svc", 1)},
	}}
	if err := k.c.Create(ctx, bad); err != nil {
		t.Fatal(err)
	}
	k.routeCondition(t, nsA, "bad", controller.ConditionAccepted, "False", controller.ReasonInvalid, "spec.rules[0].headers[0].value")

	// Same model from another namespace: created later (or in the same
	// second, when the namespace order decides), so it loses.
	if err := k.c.Create(ctx, modelRoute(nsB, "second", "mrs-model", weighted("other", 1))); err != nil {
		t.Fatal(err)
	}
	k.routeCondition(t, nsB, "second", controller.ConditionAccepted, "False", controller.ReasonModelConflict, nsA+"/first")
	k.routeCondition(t, nsA, "first", controller.ConditionAccepted, "True", controller.ReasonValid, "")

	// The winner goes: the other takes over without being touched.
	if err := k.c.Delete(ctx, modelRoute(nsA, "first", "")); err != nil {
		t.Fatal(err)
	}
	k.routeCondition(t, nsB, "second", controller.ConditionAccepted, "True", controller.ReasonValid, "")
}
