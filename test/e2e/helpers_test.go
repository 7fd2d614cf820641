package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"sigs.k8s.io/yaml"

	"github.com/halyard-dev/halyard/internal/enginemetrics"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// startSim runs `halyard sim` on a free port.
func startSim(t *testing.T, name, model, profile string, extra ...string) *process {
	t.Helper()
	needSim(t)
	args := append([]string{"sim", "--listen", "127.0.0.1:0", "--model", model, "--profile", profile, "--log-level", "info"}, extra...)
	p := start(t, "sim "+name, "simulated engine serving", args...)
	waitHTTP(t, p.URL()+"/health")
	return p
}

// startRouter writes doc (with {{name}} replaced by the URL of sims[name])
// to a file and runs `halyard router` on it, waiting until it is ready.
func startRouter(t *testing.T, doc string, sims map[string]*process) *process {
	t.Helper()
	for name, s := range sims {
		doc = strings.ReplaceAll(doc, "{{"+name+"}}", s.URL())
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(decisionHeadersOn(t, doc)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := start(t, "router", "router serving", "router", "--config", path, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "info")
	waitHTTP(t, r.URL()+"/ready")
	return r
}

// decisionHeadersOn sets router.debug.explain and endpointHeader in the
// config document unless it sets them: they are off by default and these
// tests read the decisions.
func decisionHeadersOn(t *testing.T, doc string) string {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		return doc // an invalid document is the test's subject
	}
	router, _ := m["router"].(map[string]any)
	if router == nil {
		router = map[string]any{}
	}
	debug, _ := router["debug"].(map[string]any)
	if debug == nil {
		debug = map[string]any{}
	}
	for _, k := range []string{"explain", "endpointHeader"} {
		if _, ok := debug[k]; !ok {
			debug[k] = true
		}
	}
	router["debug"], m["router"] = debug, router
	b, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var adminAddrRE = regexp.MustCompile(`\badmin_addr=(\S+)`)

// adminURL is a router's admin listener base URL, from its "router
// serving" log line.
func adminURL(t *testing.T, p *process) string {
	t.Helper()
	m := adminAddrRE.FindStringSubmatch(p.Logs())
	if m == nil {
		t.Fatalf("%s logged no admin_addr:\n%s", p.name, p.Logs())
	}
	return "http://" + m[1]
}

func client(p *process) openai.Client {
	return openai.NewClient(option.WithBaseURL(p.URL()+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// engineMetrics scrapes a sim's /metrics.
func engineMetrics(t *testing.T, p *process) *framework.Metrics {
	t.Helper()
	m, err := (&enginemetrics.Scraper{}).Scrape(context.Background(), p.URL())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// pickedEndpoint returns the picked= part of an explanation header.
func pickedEndpoint(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	for _, part := range strings.Split(resp.Header.Get("x-halyard-route"), "; ") {
		if p, ok := strings.CutPrefix(part, "picked="); ok {
			return p
		}
	}
	return ""
}

// words returns n pseudo-words seeded by seed, one token each under the
// pseudo-tokenizer.
func words(seed, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		v := uint32(seed*7919 + i*104729)
		fmt.Fprintf(&b, "%c%c%c", 'a'+v%26, 'a'+(v/26)%26, 'a'+(v/676)%26)
	}
	return b.String()
}
