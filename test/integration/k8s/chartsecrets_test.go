package k8s

import (
	"context"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

// chartRouterRBAC renders the Helm chart (release "halyard" in namespace
// ns) with the router config routerConfig and returns the Roles and
// RoleBindings of the router's template.
func chartRouterRBAC(t *testing.T, ns string, routerConfig map[string]any) ([]rbacv1.Role, []rbacv1.RoleBinding) {
	t.Helper()
	ch, err := loader.Load(filepath.Join(repoRoot(), "deploy", "helm", "halyard"))
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.ToRenderValues(ch, map[string]any{"router": map[string]any{"config": routerConfig}},
		chartutil.ReleaseOptions{Name: "halyard", Namespace: ns, IsInstall: true, Revision: 1}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range out {
		if strings.HasSuffix(name, "templates/router.yaml") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var roles []rbacv1.Role
	var bindings []rbacv1.RoleBinding
	for _, name := range names {
		for _, doc := range strings.Split(out[name], "\n---\n") {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			switch meta.Kind {
			case "Role":
				var r rbacv1.Role
				if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
					t.Fatal(err)
				}
				roles = append(roles, r)
			case "RoleBinding":
				var b rbacv1.RoleBinding
				if err := yaml.UnmarshalStrict([]byte(doc), &b); err != nil {
					t.Fatal(err)
				}
				bindings = append(bindings, b)
			}
		}
	}
	return roles, bindings
}

// TestChartLetsTheRouterFollowOnlyItsTenantsSecret applies the chart's
// Role and RoleBinding for a tenant's keysFrom.secret to a real API server
// (RBAC on) and runs the router's Secret follower as the router's service
// account (by impersonation): it reads the tenant's keys through its
// informer (list and watch by name), and may neither read another Secret
// of the namespace nor list them all.
func TestChartLetsTheRouterFollowOnlyItsTenantsSecret(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "chart-keys")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin, err := kubernetes.NewForConfig(k.cfg)
	if err != nil {
		t.Fatal(err)
	}
	const key = "sk-chart-5e81c2"
	for name, data := range map[string]string{"team-a-keys": key, "other": "sk-not-a-key"} {
		if _, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
			Data: map[string][]byte{"ci": []byte(data)}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	doc := `apiVersion: config.halyard.dev/v1alpha1
kind: Config
auth: {}
tenants:
  - name: team-a
    keysFrom: {secret: {namespace: ` + ns + `, name: team-a-keys}}
`
	var values map[string]any
	if err := yaml.Unmarshal([]byte(doc), &values); err != nil {
		t.Fatal(err)
	}
	roles, bindings := chartRouterRBAC(t, ns, values)
	if len(roles) != 1 || len(bindings) != 1 {
		t.Fatalf("the chart rendered %d Roles and %d RoleBindings, want one each", len(roles), len(bindings))
	}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &roles[0], metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &bindings[0], metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	asRouter := rest.CopyConfig(k.cfg)
	asRouter.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":halyard-router",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
	router, err := kubernetes.NewForConfig(asRouter)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	a, stop := followTenantKeys(t, ctx, router, cfg, slog.New(slog.DiscardHandler))
	defer stop()
	eventually(t, waitLong, "the tenant's key, read as the router's service account", func() (bool, string) {
		tn, rej := a.Authenticate("Bearer " + key)
		if rej != nil {
			return false, rej.Message
		}
		return tn.Name == "team-a", tn.Name
	})
	if _, err := router.CoreV1().Secrets(ns).Get(ctx, "other", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading another Secret as the router: %v, want forbidden", err)
	}
	if _, err := router.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing the namespace's Secrets as the router: %v, want forbidden", err)
	}
	if _, err := router.CoreV1().Secrets(ns).Get(ctx, "team-a-keys", metav1.GetOptions{}); err != nil {
		t.Errorf("reading the tenant's Secret as the router: %v", err)
	}
}
