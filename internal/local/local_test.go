package local

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes and reads of
// a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

// startRun starts Run with the config doc and opts (Config, Registry,
// PresetProfiles and Out are filled in here) and returns its output, the
// channel of its result and the cancel that stops it (Ctrl-C).
func startRun(t *testing.T, doc string, opts Options) (*syncBuffer, <-chan error, context.CancelFunc) {
	t.Helper()
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	opts.Config, opts.Registry, opts.PresetProfiles, opts.Out = cfg, reg, presets.Specs(), out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, opts) }()
	return out, done, cancel
}

// waitUntil polls cond every 10 ms until it holds; it fails the test if Run
// returns first or deadline fires (what names the awaited step).
func waitUntil(t *testing.T, out *syncBuffer, done <-chan error, deadline <-chan time.Time, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v\n%s", err, out)
		case <-deadline:
			t.Fatalf("%s:\n%s", what, out)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestRunDemoThenStop(t *testing.T) {
	out, done, cancel := startRun(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {listen: "127.0.0.1:0"}
engines: [{model: m, replicas: 2, profile: zero}]
routes: [{model: m, targets: [{pool: m}]}]
`, Options{Demo: true, DemoRequests: 40})
	deadline := time.After(time.Minute)
	waitUntil(t, out, done, deadline, "demo did not finish within a minute", func() bool { return strings.Contains(out.String(), "Still serving") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancel")
	}
	got := out.String()
	for _, want := range []string{"2 simulated engine(s)", "curl -s http://127.0.0.1:", "Demo report (40 requests, 0 failed", "per engine  m-0:", "prefix-cache hit ratio"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

func TestRunRefusesEngineArgs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Engines[0].Args = []string{"--max-num-seqs=4"}
	err := Run(context.Background(), Options{Config: cfg})
	if err == nil || !strings.Contains(err.Error(), "engines[0].args") {
		t.Errorf("err = %v, want it to name engines[0].args", err)
	}
}

// TestRunPDDemo runs local mode with a disaggregated pool (one prefill and
// one decode engine, SGLang's bootstrap exchange on free ports): the demo's
// requests all succeed.
func TestRunPDDemo(t *testing.T) {
	out, done, cancel := startRun(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {listen: "127.0.0.1:0"}
engines:
  - {model: m, role: prefill, profile: zero}
  - {model: m, role: decode, profile: zero}
routes: [{model: m, targets: [{pool: m}]}]
pools: [{name: m, pd: {mode: sglang}}]
`, Options{Demo: true, DemoRequests: 20})
	deadline := time.After(time.Minute)
	waitUntil(t, out, done, deadline, "demo did not finish within a minute", func() bool { return strings.Contains(out.String(), "Still serving") })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if got := out.String(); !strings.Contains(got, "Demo report (20 requests, 0 failed") {
		t.Errorf("output:\n%s", got)
	}
}

// TestRunNeverReadyStopsCleanly: with a route no endpoint can serve, Run
// says what it waits for, and a cancel (Ctrl-C) during the wait is a clean
// stop, not an error.
func TestRunNeverReadyStopsCleanly(t *testing.T) {
	out, done, cancel := startRun(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {listen: "127.0.0.1:0"}
engines: [{model: m, profile: zero}]
routes: [{model: sql, adapter: sql-lora, targets: [{pool: m}]}]
`, Options{ReadyTimeout: time.Minute})
	deadline := time.After(30 * time.Second)
	waitUntil(t, out, done, deadline, "no progress message within 30s", func() bool {
		return strings.Contains(out.String(), "Waiting up to 1m0s for the engines to be ready (models not ready yet: sql)")
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel during the wait: %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancel")
	}
}

// TestDemoInterrupted: a demo cut short reports only the requests that ran,
// never counting unsent ones as successes.
func TestDemoInterrupted(t *testing.T) {
	const n = 1000000
	out, done, cancel := startRun(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {listen: "127.0.0.1:0"}
engines: [{model: m, replicas: 2, profile: zero}]
routes: [{model: m, targets: [{pool: m}]}]
`, Options{Demo: true, DemoRequests: n})
	deadline := time.After(time.Minute)
	waitUntil(t, out, done, deadline, "the load did not start within a minute", func() bool { return strings.Contains(out.String(), "Running a short load") })
	// Interrupt once some requests have completed, so that the engines
	// have counted prompt tokens the report must show.
	metricsURL := adminURL(t, out.String()) + "/metrics"
	waitUntil(t, out, done, deadline, "no request completed within a minute", func() bool { return servedSome(metricsURL) })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancel")
	}
	got := out.String()
	var ran, failed int
	i := strings.Index(got, "Demo report (")
	if i < 0 || !strings.Contains(got, "Interrupted: ") {
		t.Fatalf("no interrupted report:\n%s", got)
	}
	// The engines' counters are read after the interruption too.
	if !strings.Contains(got[i:], "prefix-cache hit ratio (engines' counters)") {
		t.Errorf("interrupted report lacks the engines' prefix-cache hit ratio:\n%s", got[i:])
	}
	if _, err := fmt.Sscanf(got[i:], "Demo report (%d requests, %d failed", &ran, &failed); err != nil {
		t.Fatalf("report header: %v\n%s", err, got)
	}
	if ran >= n || failed != 0 {
		t.Errorf("report counts %d requests, %d failed; want fewer than %d and none failed", ran, failed, n)
	}
}

// adminURL is the router's admin base URL from Run's "Admin: " line.
func adminURL(t *testing.T, out string) string {
	t.Helper()
	const marker = "Admin: "
	i := strings.Index(out, marker)
	if i < 0 {
		t.Fatalf("no admin address in:\n%s", out)
	}
	url, _, _ := strings.Cut(out[i+len(marker):], " ")
	return url
}

// servedSome reports whether the router at metricsURL has answered at least
// one request with 200 besides the demo's first chat request.
func servedSome(metricsURL string) bool {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var n float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "halyard_router_requests_total{") && strings.Contains(line, `code="200"`) {
			var v float64
			if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
				n += v
			}
		}
	}
	return n >= 2
}
