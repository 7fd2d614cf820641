package helm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
	"github.com/halyard-dev/halyard/internal/router"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// needBinary returns the path of a Debian binary the test needs; without
// it the test skips, or fails when CI=true or HALYARD_REQUIRE_PROMETHEUS=1.
func needBinary(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found (Debian package %s; make test-deps installs it)", name, pkg)
	if os.Getenv("CI") == "true" || os.Getenv("HALYARD_REQUIRE_PROMETHEUS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// TestPromtoolChecksTheRules runs `promtool check rules` on the chart's
// PrometheusRule.
func TestPromtoolChecksTheRules(t *testing.T) {
	promtool := needBinary(t, "promtool", "prometheus")
	rules, rg := renderedRules(t, monitoringValues)
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, rules, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s\n%s", err, out, rules)
	}
	n := len(ruleQueries(rg))
	if !strings.Contains(string(out), fmt.Sprintf("%d rules found", n)) {
		t.Errorf("promtool saw other than the %d rules:\n%s", n, out)
	}
}

// emptyPanels are the queries that may return no series under this test's
// load, with the reason.
var emptyPanels = map[string]string{
	"Halyard / Router / PD prefill failures": "no prefill fails in this fleet",
}

// absentMetrics are the metrics the chart uses that this test's fleet does
// not produce, with the reason.
var absentMetrics = map[string]string{
	"halyard_router_pd_prefill_errors_total":          "no prefill fails in this fleet",
	"halyard_router_pd_local_prefill_fallbacks_total": "no prefill fails in this fleet",
}

// TestDashboardsAndAlertsAgainstPrometheus starts Debian's Prometheus
// scraping a router, simulated engines (one answering 500s) and the
// controller's metrics under a short load, evaluates every dashboard query
// and alert expression through the HTTP API, and waits for the alerts the
// induced faults must fire.
func TestDashboardsAndAlertsAgainstPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Prometheus")
	}
	prom := needBinary(t, "prometheus", "prometheus")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	// Engines: three for "llama" (the third answers 500s and is ejected),
	// a prefill and a decode one for "pd", and one answering 500s alone
	// behind "broken" (errors reach the client: the error-ratio alert).
	type engine struct {
		name, model, role string
		faults            vllmapi.Faults
	}
	engines := []engine{
		{name: "e0", model: "llama"}, {name: "e1", model: "llama"},
		{name: "bad", model: "llama", faults: vllmapi.Faults{ErrorRate: 1}},
		{name: "p0", model: "pd", role: "prefill"}, {name: "d0", model: "pd", role: "decode"},
		{name: "broken", model: "broken", faults: vllmapi.Faults{ErrorRate: 1}},
	}
	var targets []string
	var eps strings.Builder
	for i, e := range engines {
		in, err := vllmapi.Start(ctx, vllmapi.Spec{
			Listen: "127.0.0.1:0", Model: e.model, Role: e.role, Profile: "zero", Seed: uint64(i + 1), Faults: e.faults,
		}, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); _ = in.Wait() })
		targets = append(targets, in.Addr)
		role := e.role
		if role == "" {
			role = "both"
		}
		fmt.Fprintf(&eps, "  - {name: %s, url: %q, model: %s, role: %s}\n", e.name, in.URL, e.model, role)
	}
	cfg, err := config.Parse([]byte(`
apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  scrapeInterval: 100ms
  prefixIndex: {driftMinTokens: 64}
  health: {outlier: {consecutive5xx: 3, ejectionTime: 60s}}
  admission: {queue: {maxPerModel: 2, endpointConcurrency: 1}}
auth: {}
tenants:
  - name: load
    apiKeys: [{sha256: "` + sha256Hex("unused") + `"}]
    limits: {requestsPerMinute: 1000000, tokensPerMinute: 1000000000}
endpoints:
` + eps.String() + `
routes:
  - {model: llama, targets: [{pool: llama}]}
  - {model: pd, targets: [{pool: pd}]}
  - {model: broken, targets: [{pool: broken}]}
pools:
  - {name: pd, pd: {mode: nixl}}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := newTestRouter(t, cfg, log)
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, rln, time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	routerURL := "http://" + rln.Addr().String()
	// /metrics is on the router's admin handler, off the public listener.
	aln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	asrv := &http.Server{Handler: r.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = asrv.Serve(aln) }()
	t.Cleanup(func() { _ = asrv.Close() })
	adminURL := "http://" + aln.Addr().String()
	targets = append(targets, aln.Addr().String())

	// The controller's metrics, as its Metrics type registers them, moved
	// as a recovering fleet would move them.
	creg := prometheus.NewRegistry()
	cm, err := controller.NewMetrics(creg)
	if err != nil {
		t.Fatal(err)
	}
	cm.InPlaceRestart.Set(1)
	cm.Groups.WithLabelValues("llm", "llama", "Ready").Set(2)
	cm.Groups.WithLabelValues("llm", "llama", "Restarting").Set(1)
	cm.PodOperations.WithLabelValues("create", "ok").Add(6)
	cm.ReconcileTime.Observe(0.004)
	cm.RestartDuration.Observe(3)
	for _, mo := range [][2]string{{"in_place", "started"}, {"in_place", "succeeded"}, {"in_place", "timeout"}, {"recreate", "started"}, {"rollout", "started"}} {
		cm.Recoveries.WithLabelValues(mo[0], mo[1])
	}
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	csrv := &http.Server{Handler: promhttp.HandlerFor(creg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = csrv.Serve(cln) }()
	t.Cleanup(func() { _ = csrv.Close() })

	// Prometheus, scraping every second and evaluating the chart's rules
	// every second, rendered with for: 0s so firing is not delayed.
	dir := t.TempDir()
	values := map[string]any{"prometheusRule": map[string]any{
		"enabled":    true,
		"ejection":   map[string]any{"for": "0s"},
		"errorRatio": map[string]any{"threshold": 0.05, "for": "0s"},
		"recovery":   map[string]any{"for": "0s"},
		"shedding":   map[string]any{"ratio": 0.001, "for": "0s"},
	}}
	rules, rg := renderedRules(t, values)
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	promCfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [rules.yaml]
scrape_configs:
  - job_name: halyard
    static_configs: [{targets: [%q]}]
  - job_name: engines
    static_configs: [{targets: [%s]}]
  - job_name: controller
    static_configs: [{targets: [%q]}]
`, targets[len(targets)-1], quoteAll(targets[:len(targets)-1]), cln.Addr().String())
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(promCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := freeAddr(t)
	cmd := exec.CommandContext(ctx, prom,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr,
		"--log.level=warn")
	var promLog syncBuffer
	cmd.Stdout, cmd.Stderr = &promLog, &promLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	api := &promAPI{t: t, base: "http://" + promAddr}
	deadline := time.Now().Add(30 * time.Second)
	for !api.ready() {
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready within 30s:\n%s", promLog.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Load: a few seconds of chats sharing system prompts (prefix hits),
	// streamed and not, PD requests, requests the broken pool fails and
	// requests for an unknown model.
	waitReady(t, r)
	// Every target scraped once before the load: a counter Prometheus
	// first sees with its final value has no increase, and the alerts on
	// increase() would never fire.
	ntargets := float64(len(targets) + 1)
	deadline = time.Now().Add(30 * time.Second)
	for api.scalar(`count(up == 1)`) < ntargets {
		if time.Now().After(deadline) {
			t.Fatalf("prometheus has not scraped all %v targets within 30s:\n%s", ntargets, promLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	c := openai.NewClient(option.WithBaseURL(routerURL+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	var wg sync.WaitGroup
	loadEnd := time.Now().Add(4 * time.Second)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; time.Now().Before(loadEnd); i++ {
				model := []string{"llama", "llama", "pd", "broken", "nope"}[(i+w)%5]
				p := openai.ChatCompletionNewParams{
					Model: model,
					Messages: []openai.ChatCompletionMessageParamUnion{
						openai.SystemMessage(strings.Repeat(fmt.Sprintf("You are assistant %d of a shared fleet. ", w%2), 30)),
						openai.UserMessage(fmt.Sprintf("question %d", i)),
					},
					MaxTokens: openai.Int(8),
				}
				if i%7 == 3 { // refused by admission: an unknown key
					_, _ = c.Chat.Completions.New(ctx, p, option.WithAPIKey("wrong"))
					continue
				}
				if i%2 == 0 {
					s := c.Chat.Completions.NewStreaming(ctx, p)
					for s.Next() {
					}
					_ = s.Close()
				} else {
					_, _ = c.Chat.Completions.New(ctx, p)
				}
				if i%5 == 0 {
					cm.Recoveries.WithLabelValues("in_place", "started").Inc()
					cm.Recoveries.WithLabelValues("in_place", "timeout").Inc()
					cm.Recoveries.WithLabelValues("recreate", "started").Inc()
					cm.Recoveries.WithLabelValues("rollout", "started").Inc()
					cm.RestartDuration.Observe(2)
					cm.ReconcileTime.Observe(0.003)
					cm.PodOperations.WithLabelValues("delete", "ok").Inc()
				}
			}
		})
	}
	wg.Wait()
	// Bursts at the PD model (one decode endpoint, one slot, two places in
	// the queue): requests queue, wait, and the rest are shed. A counter
	// Prometheus first scrapes with its final value shows no increase, so
	// the second burst comes once Prometheus has the sheds' series.
	burst := func() {
		for range 16 {
			wg.Go(func() {
				_, _ = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
					Model:     "pd",
					Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("burst")},
					MaxTokens: openai.Int(8),
				})
			})
		}
		wg.Wait()
	}
	burst()
	deadline = time.Now().Add(20 * time.Second)
	for len(api.query(`halyard_admission_shed_total`)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no sheds in prometheus 20s after the burst (router: %v shed)", metricValue(t, adminURL, "halyard_admission_shed_total"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	burst()
	// Prometheus has the load once a scrape after it shows every request.
	sent := metricValue(t, adminURL, "halyard_router_requests_total")
	if sent == 0 {
		t.Fatalf("the router's %s/metrics counts no requests", adminURL)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		got := api.scalar(`sum(halyard_router_requests_total)`)
		if got >= sent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus has %v of the router's %v requests after 20s", got, sent)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Every metric the chart names has series.
	qs := append(dashboardQueries(t), ruleQueries(rg)...)
	seen := map[string]bool{}
	for _, q := range qs {
		for _, n := range metricNames(q.expr) {
			if seen[n] || absentMetrics[n] != "" {
				continue
			}
			seen[n] = true
			if len(api.query(fmt.Sprintf(`{__name__=%q}`, n))) == 0 {
				t.Errorf("%s: no series of %s in Prometheus", q.where, n)
			}
		}
	}
	// Every dashboard query is valid PromQL and returns series.
	for _, q := range dashboardQueries(t) {
		if strings.HasPrefix(q.expr, "label_values(") {
			continue // a Grafana function; its metric was checked above
		}
		expr := strings.NewReplacer("$__rate_interval", "30s", "$model", ".*").Replace(q.expr)
		if res := api.query(expr); len(res) == 0 && emptyPanels[q.where] == "" {
			t.Errorf("%s: no series\n  expr: %s", q.where, expr)
		}
	}
	// Every alert expression is valid PromQL (rules that do not fire
	// return nothing, so only validity is asked here).
	for _, q := range ruleQueries(rg) {
		api.query(q.expr)
	}
	// The induced faults fire their alerts: the endpoint answering 500s is
	// ejected, the broken model's errors pass the ratio, and the in-place
	// restarts that timed out fell back to recreating.
	// The burst overflows the fair queue: it sheds.
	want := []string{"HalyardEndpointEjected", "HalyardRouterErrorRatio", "HalyardInPlaceRecoveryFellBack", "HalyardAdmissionShedding"}
	deadline = time.Now().Add(20 * time.Second)
	for {
		firing := api.firing()
		missing := []string{}
		for _, a := range want {
			if !firing[a] {
				missing = append(missing, a)
			}
		}
		if len(missing) == 0 {
			if firing["HalyardPrefixHitDrift"] || firing["HalyardTTFTBudgetBurnFast"] {
				t.Errorf("alerts fire that this healthy load must not fire: %v", firing)
			}
			// "broken", the only endpoint of its pool, answers only 500s: it
			// is ejected (and stays in rotation, the pool's last endpoint).
			// "bad" shares its pool with healthy engines, so how often the
			// picker sends it enough requests in a row to eject it varies;
			// the healthy engines are never ejected.
			ej := api.query(`(sum by (endpoint) (increase(halyard_router_outlier_ejections_total[5m])) > 0) or (sum by (endpoint) (halyard_router_outlier_ejections_total unless halyard_router_outlier_ejections_total offset 5m) > 0)`)
			names := map[string]bool{}
			for _, e := range ej {
				names[e.Metric["endpoint"]] = true
			}
			if !names["broken"] || names["e0"] || names["e1"] || names["p0"] || names["d0"] {
				t.Errorf("ejected endpoints = %v, want broken and no healthy engine", names)
			}
			break
		}
		if time.Now().After(deadline) {
			resp, err := http.Get(api.base + "/api/v1/rules")
			var rules []byte
			if err == nil {
				rules, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			var vals strings.Builder
			for _, q := range ruleQueries(rg) {
				fmt.Fprintf(&vals, "%s => %v\n", q.expr, api.query(q.expr))
			}
			fmt.Fprintf(&vals, "raw ejections => %v\nraw recoveries => %v\n", api.query(`halyard_router_outlier_ejections_total`), api.query(`halyard_controller_group_recoveries_total`))
			t.Fatalf("alerts %v not firing after 20s (firing: %v)\nexpressions now:\n%s\nrules: %.3000s\nprometheus log:\n%s", missing, firing, vals.String(), rules, promLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// waitReady waits until the router can serve every route.
func waitReady(t *testing.T, r *router.Router) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ok, missing := r.Ready()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("router not ready: %v", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue sums a metric's series on a /metrics page.
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+"{") || strings.HasPrefix(line, name+" ") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// promAPI queries Prometheus's HTTP API.
type promAPI struct {
	t    *testing.T
	base string
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (p *promAPI) ready() bool {
	resp, err := http.Get(p.base + "/-/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// query evaluates expr at now; an invalid expression fails the test.
func (p *promAPI) query(expr string) []sample {
	p.t.Helper()
	resp, err := http.PostForm(p.base+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string   `json:"resultType"`
			Result     []sample `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		p.t.Fatalf("query %s: %v", expr, err)
	}
	if out.Status != "success" {
		p.t.Errorf("query %s: %s", expr, out.Error)
		return nil
	}
	return out.Data.Result
}

func (p *promAPI) scalar(expr string) float64 {
	res := p.query(expr)
	if len(res) == 0 {
		return 0
	}
	var v float64
	s, _ := res[0].Value[1].(string)
	_, _ = fmt.Sscan(s, &v)
	return v
}

// firing returns the names of the alerts firing now.
func (p *promAPI) firing() map[string]bool {
	p.t.Helper()
	resp, err := http.Get(p.base + "/api/v1/alerts")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		p.t.Fatal(err)
	}
	f := map[string]bool{}
	for _, a := range out.Data.Alerts {
		if a.State == "firing" {
			f[a.Labels["alertname"]] = true
		}
	}
	return f
}

// syncBuffer is a bytes buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
