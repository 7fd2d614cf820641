package helm

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
	"github.com/halyard-dev/halyard/internal/router"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// query is one PromQL expression the chart ships: a dashboard panel's
// target or an alert rule's expression.
type query struct {
	where string // dashboard/panel or group/alert
	expr  string
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title  string `json:"title"`
	Panels []struct {
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// dashboardQueries reads every panel target and templating query of the
// chart's dashboards.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("halyard", "dashboards", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in halyard/dashboards: %v", err)
	}
	var qs []query
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for _, tg := range p.Targets {
				qs = append(qs, query{where: d.Title + " / " + p.Title, expr: tg.Expr})
			}
		}
		for _, v := range d.Templating.List {
			if v.Definition != "" {
				qs = append(qs, query{where: d.Title + " / $" + v.Name, expr: v.Definition})
			}
		}
	}
	return qs
}

// ruleGroups is a Prometheus rules file.
type ruleGroups struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// renderedRules renders the chart with values and returns the spec of its
// PrometheusRule as a Prometheus rules file.
func renderedRules(t *testing.T, values map[string]any) ([]byte, ruleGroups) {
	t.Helper()
	for _, doc := range strings.Split(render(t, values), "\n---\n") {
		var obj struct {
			Kind string          `json:"kind"`
			Spec json.RawMessage `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		if obj.Kind != "PrometheusRule" {
			continue
		}
		var rg ruleGroups
		if err := json.Unmarshal(obj.Spec, &rg); err != nil {
			t.Fatal(err)
		}
		out, err := yaml.JSONToYAML(obj.Spec)
		if err != nil {
			t.Fatal(err)
		}
		return out, rg
	}
	t.Fatal("the chart rendered no PrometheusRule")
	return nil, ruleGroups{}
}

func ruleQueries(rg ruleGroups) []query {
	var qs []query
	for _, g := range rg.Groups {
		for _, r := range g.Rules {
			qs = append(qs, query{where: g.Name + " / " + r.Alert, expr: r.Expr})
		}
	}
	return qs
}

// metricRE finds the metric names of Halyard and of vLLM in an expression.
var metricRE = regexp.MustCompile(`\b(?:halyard_[a-z0-9_]+|vllm:[a-z0-9_:]+)`)

// metricNames returns the metric names expr uses, sorted.
func metricNames(expr string) []string {
	names := metricRE.FindAllString(expr, -1)
	slices.Sort(names)
	return slices.Compact(names)
}

// registered returns the names of the metrics the router (with a PD pool,
// the prefix index, admission and the default profiles), the controller and the
// simulator (both roles) register.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	describe := func(c prometheus.Collector) {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		re := regexp.MustCompile(`fqName: "([^"]+)"`)
		for d := range ch {
			if m := re.FindStringSubmatch(d.String()); m != nil {
				names[m[1]] = true
			}
		}
	}

	cfg, err := config.Parse([]byte(`
apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  prefixIndex: {}
  admission: {queue: {maxPerModel: 16}}
auth: {}
tenants:
  - {name: t, apiKeys: [{sha256: "0000000000000000000000000000000000000000000000000000000000000000"}], limits: {requestsPerMinute: 60}}
endpoints:
  - {name: e0, url: "http://127.0.0.1:1", model: m}
  - {name: p0, url: "http://127.0.0.1:2", model: pd, role: prefill}
  - {name: d0, url: "http://127.0.0.1:3", model: pd, role: decode}
routes:
  - {model: m, targets: [{pool: m}]}
  - {model: pd, targets: [{pool: pd}]}
pools:
  - {name: pd, pd: {mode: nixl}}
`))
	if err != nil {
		t.Fatal(err)
	}
	describe(newTestRouter(t, cfg, slog.New(slog.DiscardHandler)).Metrics().Registry)

	creg := prometheus.NewRegistry()
	if _, err := controller.NewMetrics(creg); err != nil {
		t.Fatal(err)
	}
	describe(creg)

	for _, role := range []string{"both", "prefill", "decode"} {
		srv, err := vllmapi.Spec{Model: "m", Role: role, Profile: "zero"}.Build(simclock.Real{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/metrics", nil))
		tp := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := tp.TextToMetricFamilies(rec.Body)
		if err != nil {
			t.Fatalf("sim /metrics: %v", err)
		}
		for n := range fams {
			names[n] = true
		}
	}
	return names
}

// TestMonitoringUsesRegisteredMetrics checks that every metric name in the
// chart's dashboards and alert rules is one the code registers.
func TestMonitoringUsesRegisteredMetrics(t *testing.T) {
	_, rg := renderedRules(t, monitoringValues)
	qs := append(dashboardQueries(t), ruleQueries(rg)...)
	known := registered(t)
	used := 0
	for _, q := range qs {
		for _, n := range metricNames(q.expr) {
			used++
			if known[n] {
				continue
			}
			base := n
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if base != n && known[base] {
				continue
			}
			t.Errorf("%s: %s is not a metric the router, the controller or the simulator registers\n  expr: %s", q.where, n, q.expr)
		}
	}
	if used < 50 {
		t.Errorf("only %d metric references found in %d queries: is the extraction broken?", used, len(qs))
	}
}

// newTestRouter builds a router with every plugin and the preset profiles,
// as the halyard binary does, for the monitoring tests.
func newTestRouter(t *testing.T, cfg *config.Config, log *slog.Logger) *router.Router {
	t.Helper()
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	r, err := router.New(router.Options{Config: cfg, Registry: reg, PresetProfiles: presets.Specs(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
