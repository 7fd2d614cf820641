package router

import (
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/halyard-dev/halyard/internal/prefixtrack"
)

// TestEveryMetricIsDocumented checks that each halyard_router_* family the
// router exports is described in docs/router.md, and the reverse.
func TestEveryMetricIsDocumented(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	h.post("/v1/chat/completions", chatBody) // so that vectors have children
	fams, err := h.r.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/router.md")
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range fams {
		if n := f.GetName(); strings.HasPrefix(n, "halyard_router_") {
			exported[n] = true
			if !strings.Contains(string(doc), "`"+n+"`") {
				t.Errorf("%s is not documented in docs/router.md", n)
			}
		}
	}
	// Vectors without children are not gathered; list what the docs name
	// and check each is known to the registry's descriptors.
	var documented []string
	for _, field := range strings.Split(string(doc), "`") {
		if strings.HasPrefix(field, "halyard_router_") && !strings.ContainsAny(field, " {") {
			documented = append(documented, field)
		}
	}
	sort.Strings(documented)
	if len(documented) < 15 {
		t.Fatalf("found only %d metric names in docs/router.md: %v", len(documented), documented)
	}
	for _, n := range documented {
		if !exported[n] && !declared(h.r, n) {
			t.Errorf("docs/router.md names %s, which the router does not export", n)
		}
	}
}

// declared reports whether one of the router's collectors describes the
// metric name.
func declared(r *Router, name string) bool {
	ch := make(chan *prometheus.Desc, 256)
	go func() {
		defer close(ch)
		for _, c := range r.metrics.Collectors() {
			c.Describe(ch)
		}
		(&endpointCollector{}).Describe(ch)
		for _, c := range r.pdm.collectors() {
			c.Describe(ch)
		}
		// The precise prefix index's and the drift alarm's, with or
		// without KV events configured.
		r.prefix.drift.Describe(ch)
		if tr, err := prefixtrack.New(prefixtrack.Config{}); err == nil {
			tr.Describe(ch)
		}
	}()
	found := false
	for d := range ch {
		if strings.Contains(d.String(), `fqName: "`+name+`"`) {
			found = true
		}
	}
	return found
}
