package k8s

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/halyard-dev/halyard/internal/controller"
)

// TestControllerRunsWithItsClusterRole runs the controller as a service
// account that holds only the generated ClusterRole (config/rbac/role.yaml)
// next to the agent's (config/rbac/agent_role.yaml), on its own API server:
// it must create a ModelServing's pods and the namespace's halyard-agent
// RoleBinding to the halyard-agent ClusterRole, and the same account must
// be refused what the old grant allowed: writing a Role, or binding a
// ClusterRole other than halyard-agent. The pods' service account may write
// the fetch's progress Event but no pod.
func TestControllerRunsWithItsClusterRole(t *testing.T) {
	k := startCluster(t, featureGates)
	ctx := context.Background()
	const sysNS, sa = "halyard-system", "halyard-controller"
	for _, ns := range []string{sysNS, "serving"} {
		k.namespace(t, ns)
	}
	for _, file := range []string{"role.yaml", "agent_role.yaml"} {
		raw, err := os.ReadFile(filepath.Join(repoRoot(), "config", "rbac", file))
		if err != nil {
			t.Fatal(err)
		}
		var cr rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict(raw, &cr); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if err := k.c.Create(ctx, &cr); err != nil {
			t.Fatalf("create ClusterRole %s: %v", cr.Name, err)
		}
	}
	mustCreate := func(obj client.Object) {
		t.Helper()
		if err := k.c.Create(ctx, obj); err != nil {
			t.Fatalf("create %T: %v", obj, err)
		}
	}
	mustCreate(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sysNS, Name: sa}})
	mustCreate(&rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: sa},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "halyard-controller"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: sysNS, Name: sa}},
	})
	// The controller's identity: the service account, by impersonation.
	asController := rest.CopyConfig(k.cfg)
	asController.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + sysNS + ":" + sa}
	ctl := &cluster{env: k.env, cfg: asController, c: k.c, kubeconfig: k.kubeconfig}
	ctl.runController(t, newFakeClock(), controller.InPlaceOff)

	create(t, k, pdServing("serving", "m", 1))
	eventually(t, waitLong, "pods and the agent's RoleBinding", func() (bool, string) {
		if n := len(k.pods(t, "serving", "m")); n != 3 {
			return false, fmt.Sprintf("%d pods", n)
		}
		var rb rbacv1.RoleBinding
		if err := k.c.Get(ctx, client.ObjectKey{Namespace: "serving", Name: "halyard-agent"}, &rb); err != nil {
			return false, err.Error()
		}
		if rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != "halyard-agent" || len(rb.Subjects) != 1 || rb.Subjects[0].Name != "default" {
			return false, "binding " + rb.RoleRef.Kind + "/" + rb.RoleRef.Name
		}
		return true, ""
	})

	// What the account may no longer do.
	c, err := client.New(asController, client.Options{Scheme: k.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: "serving", Name: "any"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}},
	}
	if err := c.Create(ctx, role); !apierrors.IsForbidden(err) {
		t.Errorf("creating a Role as the controller: %v, want forbidden", err)
	}
	bind := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: "serving", Name: "other"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "serving", Name: "default"}},
	}
	if err := c.Create(ctx, bind); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "not currently held") {
		t.Errorf("binding cluster-admin as the controller: %v, want forbidden (escalation)", err)
	}
	var list rbacv1.RoleBindingList
	if err := c.List(ctx, &list); !apierrors.IsForbidden(err) {
		t.Errorf("listing RoleBindings as the controller: %v, want forbidden", err)
	}

	// The pods' service account (bound to halyard-agent): the fetch may
	// write its progress Event, and nobody in the pod may write pods.
	asPod := rest.CopyConfig(k.cfg)
	asPod.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:serving:default"}
	pc, err := client.New(asPod, client.Options{Scheme: k.c.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: "serving", Name: "m-0-prefill-0.halyard-weights"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: "serving", Name: "m-0-prefill-0"},
		Reason:         "FetchingWeights", Message: "fetching", Type: corev1.EventTypeNormal,
	}
	if err := pc.Create(ctx, ev); err != nil {
		t.Errorf("creating the progress Event as the pods' service account: %v", err)
	}
	if err := pc.Patch(ctx, ev, client.RawPatch("application/merge-patch+json", []byte(`{"message":"done"}`))); err != nil {
		t.Errorf("patching the progress Event as the pods' service account: %v", err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "serving", Name: "m-0-prefill-0"}}
	if err := pc.Patch(ctx, pod, client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"annotations":{"x":"y"}}}`))); !apierrors.IsForbidden(err) {
		t.Errorf("patching a pod as the pods' service account: %v, want forbidden", err)
	}
}
