package helm

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// render is `helm template halyard deploy/helm/halyard -n halyard-system`
// with the given values, as one stream of documents in template order.
func render(t *testing.T, values map[string]any) string {
	t.Helper()
	ch, err := loader.Load("halyard")
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	if err := ch.Validate(); err != nil {
		t.Fatalf("chart: %v", err)
	}
	vals, err := chartutil.ToRenderValues(ch, values, chartutil.ReleaseOptions{
		Name: "halyard", Namespace: "halyard-system", IsInstall: true, Revision: 1,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatalf("values: %v", err)
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	names := make([]string, 0, len(out))
	for name := range out {
		if strings.HasSuffix(name, ".yaml") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		body := strings.TrimSpace(out[name])
		if body == "" {
			continue
		}
		b.WriteString("---\n# Source: " + name + "\n" + body + "\n")
	}
	return b.String()
}

// monitoringValues turn on everything the chart ships for monitoring:
// ServiceMonitor, engines PodMonitor, PrometheusRule and dashboards.
var monitoringValues = map[string]any{
	"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}},
	"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}},
	"dashboards":     map[string]any{"enabled": true},
}

func TestTemplateGolden(t *testing.T) {
	tests := []struct {
		name   string
		values map[string]any
	}{
		{name: "default", values: nil},
		{name: "servicemonitor", values: map[string]any{
			"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "prometheus"}},
			"controller":     map[string]any{"watchNamespace": "llm", "inPlace": "off"},
			"image":          map[string]any{"tag": "v9.9.9"},
		}},
		{name: "controller-only", values: map[string]any{"router": map[string]any{"enabled": false}}},
		{name: "dragonfly", values: map[string]any{"router": map[string]any{"enabled": false}, "controller": map[string]any{"weights": map[string]any{
			"nodeCacheMaxBytes": "500Gi", "hfEndpoint": "http://hub-mirror:8080", "timeout": "3h",
			"dragonfly": map[string]any{"manager": "http://dragonfly-manager.dragonfly-system:8080", "tokenSecret": "dragonfly-pat", "tag": "halyard", "preheatGate": "2m"},
		}}}},
		{name: "monitoring", values: monitoringValues},
		{name: "tenant-keys", values: tenantKeysValues},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := render(t, tt.values)
			for i, doc := range strings.Split(got, "\n---\n") {
				var v map[string]any
				if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
					t.Fatalf("document %d is not YAML: %v\n%s", i, err, doc)
				}
			}
			path := filepath.Join("testdata", tt.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./deploy/helm -update)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("helm template output differs from %s (-want +got); run go test ./deploy/helm -update if intended:\n%s", path, diff)
			}
		})
	}
}

func TestChartCRDsAreTheGeneratedOnes(t *testing.T) {
	gen, err := filepath.Glob(filepath.Join("..", "..", "config", "crd", "bases", "*.yaml"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("no generated CRDs: %v", err)
	}
	for _, g := range gen {
		want, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("halyard", "crds", filepath.Base(g)))
		if err != nil {
			t.Fatalf("chart lacks %s: %v (run make generate)", filepath.Base(g), err)
		}
		if !bytes.Equal(want, got) {
			t.Errorf("chart CRD %s differs from config/crd/bases: run make generate", filepath.Base(g))
		}
	}
}

// The chart's controller ClusterRole grants exactly what the controller's
// kubebuilder RBAC markers ask for.
func TestControllerRBACMatchesMarkers(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var generated rbacv1.ClusterRole
	if err := yaml.Unmarshal(raw, &generated); err != nil {
		t.Fatal(err)
	}
	var chart *rbacv1.ClusterRole
	for _, doc := range strings.Split(render(t, nil), "\n---\n") {
		var cr rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &cr); err != nil || cr.Kind != "ClusterRole" || cr.Name != "halyard-controller" {
			continue
		}
		chart = &cr
	}
	if chart == nil {
		t.Fatal("no halyard-controller ClusterRole in the chart")
	}
	if diff := cmp.Diff(normalize(generated.Rules), normalize(chart.Rules)); diff != "" {
		t.Errorf("chart ClusterRole rules differ from config/rbac/role.yaml (-generated +chart):\n%s", diff)
	}
}

// normalize flattens rules to sorted "group/resource verb [names]" strings.
func normalize(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		names := append([]string(nil), r.ResourceNames...)
		sort.Strings(names)
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"/"+res+" "+v+" "+strings.Join(names, ","))
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// chartClusterRole returns the chart's ClusterRole of that name.
func chartClusterRole(t *testing.T, name string) *rbacv1.ClusterRole {
	t.Helper()
	for _, doc := range strings.Split(render(t, nil), "\n---\n") {
		var cr rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &cr); err == nil && cr.Kind == "ClusterRole" && cr.Name == name {
			return &cr
		}
	}
	t.Fatalf("no %s ClusterRole in the chart", name)
	return nil
}

// TestControllerRBACIsLeastPrivilege: the controller may write no Roles or
// ClusterRoles, may bind and escalate nothing but the halyard-agent
// ClusterRole, and may read or change RoleBindings only under the name
// halyard-agent (creating one cannot be limited by name); the chart's
// halyard-agent ClusterRole is config/rbac/agent_role.yaml.
func TestControllerRBACIsLeastPrivilege(t *testing.T) {
	for _, rule := range normalize(chartClusterRole(t, "halyard-controller").Rules) {
		if !strings.HasPrefix(rule, "rbac.authorization.k8s.io/") {
			continue
		}
		switch rule {
		case "rbac.authorization.k8s.io/rolebindings create ",
			"rbac.authorization.k8s.io/rolebindings get halyard-agent",
			"rbac.authorization.k8s.io/rolebindings update halyard-agent",
			"rbac.authorization.k8s.io/clusterroles bind halyard-agent":
		default:
			t.Errorf("the controller's ClusterRole grants %q", rule)
		}
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "config", "rbac", "agent_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want rbacv1.ClusterRole
	if err := yaml.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(normalize(want.Rules), normalize(chartClusterRole(t, "halyard-agent").Rules)); diff != "" {
		t.Errorf("chart halyard-agent ClusterRole differs from config/rbac/agent_role.yaml (-config +chart):\n%s", diff)
	}
}

// tenantKeysValues configure tenants whose keys come from Secrets in two
// namespaces (keysFrom.secret), and one from a mounted file.
var tenantKeysValues = map[string]any{"router": map[string]any{"config": map[string]any{
	"apiVersion": "config.halyard.dev/v1alpha1",
	"kind":       "Config",
	"auth":       map[string]any{"apiKeys": map[string]any{"required": true}},
	"tenants": []any{
		map[string]any{"name": "team-b", "keysFrom": map[string]any{"secret": map[string]any{"namespace": "llm", "name": "team-b-keys"}}},
		map[string]any{"name": "team-a", "keysFrom": map[string]any{"secret": map[string]any{"namespace": "llm", "name": "team-a-keys"}}},
		map[string]any{"name": "team-c", "keysFrom": map[string]any{"secret": map[string]any{"namespace": "other", "name": "c-keys"}}},
		map[string]any{"name": "team-d", "keysFrom": map[string]any{"file": "/etc/halyard/keys/team-d"}},
		map[string]any{"name": "team-e"},
	},
}}}

// routerRBAC returns the Roles and RoleBindings the router's template
// renders.
func routerRBAC(t *testing.T, values map[string]any) ([]rbacv1.Role, []rbacv1.RoleBinding) {
	t.Helper()
	var roles []rbacv1.Role
	var bindings []rbacv1.RoleBinding
	router := false
	for _, doc := range strings.Split(render(t, values), "\n---\n") {
		if src, ok := strings.CutPrefix(strings.TrimPrefix(doc, "---\n"), "# Source: "); ok {
			router = strings.HasPrefix(src, "halyard/templates/router.yaml")
		}
		if !router {
			continue
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "Role":
			var r rbacv1.Role
			if err := yaml.Unmarshal([]byte(doc), &r); err != nil {
				t.Fatal(err)
			}
			roles = append(roles, r)
		case "RoleBinding":
			var b rbacv1.RoleBinding
			if err := yaml.Unmarshal([]byte(doc), &b); err != nil {
				t.Fatal(err)
			}
			bindings = append(bindings, b)
		}
	}
	return roles, bindings
}

// TestRouterReadsOnlyItsTenantsSecrets: with tenants' keysFrom.secret the
// chart grants the router's ServiceAccount get, list and watch on those
// Secrets by name (a Role and RoleBinding in each Secret's namespace) and
// on nothing else; without them it renders no Role, and the router's
// ClusterRole never names Secrets.
func TestRouterReadsOnlyItsTenantsSecrets(t *testing.T) {
	if roles, bindings := routerRBAC(t, nil); len(roles) != 0 || len(bindings) != 0 {
		t.Errorf("default values render %d Roles and %d RoleBindings, want none", len(roles), len(bindings))
	}
	for _, rule := range normalize(chartClusterRole(t, "halyard-router").Rules) {
		if strings.Contains(rule, "secrets") {
			t.Errorf("the router's ClusterRole grants %q", rule)
		}
	}

	roles, bindings := routerRBAC(t, tenantKeysValues)
	got := map[string][]string{}
	for _, r := range roles {
		if r.Name != "halyard-router-tenant-keys" {
			t.Errorf("Role %s/%s, want halyard-router-tenant-keys", r.Namespace, r.Name)
		}
		got[r.Namespace] = normalize(r.Rules)
	}
	want := map[string][]string{
		"llm":   {"/secrets get team-a-keys,team-b-keys", "/secrets list team-a-keys,team-b-keys", "/secrets watch team-a-keys,team-b-keys"},
		"other": {"/secrets get c-keys", "/secrets list c-keys", "/secrets watch c-keys"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Roles by namespace (-want +got):\n%s", diff)
	}
	bound := map[string]bool{}
	for _, b := range bindings {
		if b.RoleRef.Kind != "Role" || b.RoleRef.Name != "halyard-router-tenant-keys" {
			t.Errorf("RoleBinding %s/%s refers to %s %s", b.Namespace, b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		if len(b.Subjects) != 1 || b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != "halyard-router" || b.Subjects[0].Namespace != "halyard-system" {
			t.Errorf("RoleBinding %s/%s binds %+v, want the router's ServiceAccount", b.Namespace, b.Name, b.Subjects)
		}
		bound[b.Namespace] = true
	}
	if !bound["llm"] || !bound["other"] || len(bindings) != 2 {
		t.Errorf("RoleBindings in %v, want one in llm and one in other", bound)
	}
}
