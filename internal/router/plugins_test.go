package router

import (
	"log/slog"
	"strings"
	"testing"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

// TestDefaultProfileWithRealPlugins builds the router with the built-in
// plugins and the default profile: a conversation's second turn goes where
// the first went, the prediction is observed, and the prefix scorer's own
// metrics are published with the profile's name.
func TestDefaultProfileWithRealPlugins(t *testing.T) {
	h := newHarnessShipped(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints:
  - {name: e0, url: "{{e0}}", model: llama}
  - {name: e1, url: "{{e1}}", model: llama}
  - {name: e2, url: "{{e2}}", model: llama}
routes:
  - {model: llama, targets: [{pool: llama}]}
`, map[string]string{"e0": "llama", "e1": "llama", "e2": "llama"})

	system := strings.Repeat("You are a careful assistant who answers in French. ", 80)
	first := `{"model":"llama","messages":[{"role":"system","content":"` + system + `"},{"role":"user","content":"Bonjour"}]}`
	resp, b := h.post("/v1/chat/completions", first, "x-halyard-explain", "1")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	home := picked(resp.Header.Get(HeaderRoute))
	second := `{"model":"llama","messages":[{"role":"system","content":"` + system + `"},{"role":"user","content":"Bonjour"},{"role":"assistant","content":"Salut"},{"role":"user","content":"Ça va?"}]}`
	resp, b = h.post("/v1/chat/completions", second, "x-halyard-explain", "1")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if got := picked(resp.Header.Get(HeaderRoute)); got != home {
		t.Errorf("second turn went to %s, the first to %s (explanation %q)", got, home, resp.Header.Get(HeaderRoute))
	}
	_, m := h.get("/metrics")
	for _, want := range []string{
		`halyard_router_prefix_hit_ratio_predicted_count{model="llama"} 2`,
		`halyard_router_prefix_index_blocks{plugin="prefix-cache",profile="default"}`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The second turn was predicted to hit most of its prompt.
	if !strings.Contains(string(m), `halyard_router_prefix_hit_ratio_predicted_bucket{model="llama",le="0.5"} 1`) {
		t.Errorf("predictions not as expected (one miss, one hit):\n%s", grepLines(string(m), "prefix_hit_ratio_predicted_bucket"))
	}
}

func picked(route string) string {
	for _, p := range strings.Split(route, "; ") {
		if v, ok := strings.CutPrefix(p, "picked="); ok {
			return v
		}
	}
	return ""
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestPresetProfilesByName(t *testing.T) {
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	build := func(profile string) error {
		cfg, err := config.Parse([]byte(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints: [{name: e0, url: "http://127.0.0.1:1", model: m}]
routes: [{model: m, profile: ` + profile + `, targets: [{pool: m}]}]
`))
		if err != nil {
			return err
		}
		r, err := New(Options{Config: cfg, Registry: reg, PresetProfiles: presets.Specs(), Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			if got := r.ProfileNames(); len(got) != 2 {
				t.Errorf("profiles built %v, want only the route's and default", got)
			}
		}
		return err
	}
	if err := build("round-robin"); err != nil {
		t.Errorf("preset round-robin: %v", err)
	}
	if err := build("rund-robin"); err == nil || !strings.Contains(err.Error(), `profile "rund-robin"`) || !strings.Contains(err.Error(), "round-robin") {
		t.Errorf("misspelt preset: err = %v, want it to name the profile and the presets", err)
	}
}
