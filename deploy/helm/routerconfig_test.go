package helm

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
)

// TestRouterConfigAndProbes: the chart's router config is one the router
// loads, with explanations off, and the router's readiness probe is /ready.
func TestRouterConfigAndProbes(t *testing.T) {
	got := render(t, nil)
	var cfgDoc string
	for _, doc := range strings.Split(got, "\n---\n") {
		var cm struct {
			Kind string            `json:"kind"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		if cm.Kind == "ConfigMap" && cm.Data["config.yaml"] != "" {
			cfgDoc = cm.Data["config.yaml"]
		}
	}
	cfg, err := config.Parse([]byte(cfgDoc))
	if err != nil {
		t.Fatalf("the chart's router config does not load: %v\n%s", err, cfgDoc)
	}
	if cfg.Router.Debug.ExplainEnabled() {
		t.Error("explanations are on in the chart's router config")
	}
	if !strings.Contains(got, "readinessProbe:\n          httpGet: {path: /ready, port: http}") {
		t.Error("the router's readiness probe is not /ready")
	}
}
