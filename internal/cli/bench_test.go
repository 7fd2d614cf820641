package cli

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/bench"
	"github.com/halyard-dev/halyard/internal/bench/benchtest"
	"github.com/halyard-dev/halyard/internal/bench/report"
	"github.com/halyard-dev/halyard/internal/testbin"
)

// buildHalyard returns the halyard binary, built once per test process
// (internal/testbin).
func buildHalyard(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin, err := testbin.Halyard()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestBenchBinary runs the real binary against a fake engine over HTTP and
// checks its table, JSON report and plots.
func TestBenchBinary(t *testing.T) {
	bin := buildHalyard(t)
	eng := (&benchtest.Engine{Name: "e0", TokenDelay: time.Millisecond}).Start(t)
	other := (&benchtest.Engine{Name: "e1", TokenDelay: time.Millisecond}).Start(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "bench.json")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "bench",
		"--target", eng.URL()+","+other.URL(), "--label", "first,second", "--model", "m", "--workload", "shared-prefix",
		"--groups", "2", "--users-per-group", "3", "--system-tokens", "64", "--question-tokens", "16", "--output-tokens", "5",
		"--rates", "50,100", "--slo", "ttft=1m", "--engine-metrics", eng.URL()+"/metrics",
		"--out", out, "--plots", filepath.Join(dir, "plots"), "--seed", "7")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("halyard bench: %v\nstderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "TTFT p50") || !strings.Contains(stdout.String(), "poisson 50/s") {
		t.Errorf("table missing its header or runs:\n%s", stdout.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := report.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 4 || rep.Workload.Requests != 6 || rep.Seed != 7 || rep.Mode != "live" {
		t.Fatalf("report: %d runs, %d requests, seed %d, mode %q", len(rep.Runs), rep.Workload.Requests, rep.Seed, rep.Mode)
	}
	for i, r := range rep.Runs {
		wantLabel, wantTarget := "first", eng.URL()
		if i >= 2 {
			wantLabel, wantTarget = "second", other.URL()
		}
		if r.Label != wantLabel || r.Target != wantTarget || r.Completed != 6 {
			t.Errorf("run %d: label %q target %q completed %d", i, r.Label, r.Target, r.Completed)
		}
		// --engine-metrics names the first engine only: its counters move
		// while the first target runs.
		if i < 2 && (r.PrefixCacheHitRate == nil || *r.PrefixCacheHitRate <= 0) {
			t.Errorf("run %d: hit rate %v", i, r.PrefixCacheHitRate)
		}
	}
	for _, p := range []string{"ttft.png", "tpot.png", "e2el.png", "goodput.png"} {
		if _, err := os.Stat(filepath.Join(dir, "plots", p)); err != nil {
			t.Errorf("plot %s: %v", p, err)
		}
	}
}

func TestBenchFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--model", "m"}, "target: required"},
		{[]string{"bench", "--target", "http://127.0.0.1:1"}, "model: required"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--workload", "sonnet"}, `workload.kind: unknown workload "sonnet"`},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--rates", "1,x"}, `rates: "x"`},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--rate", "2", "--concurrency", "3"}, "only one of"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--slo", "ttft"}, "slo"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--api", "responses"}, "api: want chat or completions"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--workload", "shared-prefix", "--trace-arrivals"}, "has no timestamps"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--workload", "mooncake", "--trace", "/nonexistent.jsonl"}, "no such file"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--groups", "0"}, "--groups: must be at least 1, got 0"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--output-tokens", "0"}, "--output-tokens: must be at least 1, got 0"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--sessions", "-2"}, "--sessions: must be at least 1, got -2"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--time-scale", "0"}, "--time-scale: must be a positive number, got 0"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--max-requests", "-1"}, "--max-requests: must not be negative"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--concurrency", "-4"}, "--concurrency: must not be negative"},
		{[]string{"bench", "--target", "http://127.0.0.1:1", "--model", "m", "--max-error-rate", "1.5"}, "--max-error-rate: must be in [0, 1], got 1.5"},
		{[]string{"bench", "--simulate", "x.yaml", "--max-requests", "-1"}, "--max-requests: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			root := NewRootCommand()
			root.SetArgs(append(tt.args, "--quiet"))
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			err := root.ExecuteContext(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestBenchExitCode: a run where every request fails is an error (the
// command exits 1) after the table and report are written; with some
// failures, --max-error-rate decides.
func TestBenchExitCode(t *testing.T) {
	down := (&benchtest.Engine{Name: "down", Fail: func(int) int { return http.StatusServiceUnavailable }}).Start(t)
	flaky := (&benchtest.Engine{Name: "flaky", Fail: func(seq int) int {
		if seq%3 == 0 {
			return http.StatusInternalServerError
		}
		return 0
	}}).Start(t)
	run := func(t *testing.T, target string, extra ...string) (string, string, error) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "r.json")
		root := NewRootCommand()
		root.SetArgs(append([]string{"bench", "--target", target, "--model", "m", "--workload", "shared-prefix",
			"--groups", "2", "--users-per-group", "6", "--system-tokens", "16", "--question-tokens", "4", "--output-tokens", "2",
			"--concurrency", "1", "--out", out, "--quiet"}, extra...))
		var stdout bytes.Buffer
		root.SetOut(&stdout)
		root.SetErr(&stdout)
		err := root.ExecuteContext(context.Background())
		return stdout.String(), out, err
	}
	t.Run("all failed", func(t *testing.T) {
		table, out, err := run(t, down.URL())
		if !errors.Is(err, bench.ErrRunFailed) || !strings.Contains(err.Error(), "12 of 12 failed") {
			t.Errorf("error = %v, want ErrRunFailed naming 12 of 12", err)
		}
		if !strings.Contains(table, "TTFT p50") {
			t.Errorf("no table printed before failing:\n%s", table)
		}
		if _, serr := os.Stat(out); serr != nil {
			t.Errorf("report not written: %v", serr)
		}
	})
	t.Run("some failed, default threshold", func(t *testing.T) {
		if _, _, err := run(t, flaky.URL()); err != nil {
			t.Errorf("error = %v, want success with the default --max-error-rate 1", err)
		}
	})
	t.Run("some failed, over the threshold", func(t *testing.T) {
		if _, _, err := run(t, flaky.URL(), "--max-error-rate", "0.1"); !errors.Is(err, bench.ErrRunFailed) {
			t.Errorf("error = %v, want ErrRunFailed with a third failing over 0.1", err)
		}
	})
	t.Run("some failed, under the threshold", func(t *testing.T) {
		if _, _, err := run(t, flaky.URL(), "--max-error-rate", "0.5"); err != nil {
			t.Errorf("error = %v, want success with a third failing under 0.5", err)
		}
	})
}

func TestBenchSimulate(t *testing.T) {
	dir := t.TempDir()
	scenario := filepath.Join(dir, "s.yaml")
	if err := os.WriteFile(scenario, []byte(`
fleet: {engines: 2}
workload: {kind: shared-prefix, groups: 3, usersPerGroup: 2, systemTokens: 100, questionTokens: 20, outputTokens: 4}
arrival: {rates: [5, 10]}
policies: [round-robin, default, oracle]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "sim.json")
	root := NewRootCommand()
	root.SetArgs([]string{"bench", "--simulate", scenario, "--policies", "default,oracle", "--out", out, "--plots", filepath.Join(dir, "plots"), "--quiet"})
	var stdout bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stdout)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := report.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "virtual" || len(rep.Runs) != 4 || rep.Runs[0].Policy != "default" || rep.Runs[1].Policy != "oracle" {
		t.Errorf("report: mode %q, %d runs", rep.Mode, len(rep.Runs))
	}
	if _, err := os.Stat(filepath.Join(dir, "plots", "ttft.png")); err != nil {
		t.Error(err)
	}
	root = NewRootCommand()
	root.SetArgs([]string{"bench", "--simulate", scenario, "--policies", "psychic", "--quiet"})
	root.SetOut(&stdout)
	root.SetErr(&stdout)
	if err := root.ExecuteContext(context.Background()); err == nil || !strings.Contains(err.Error(), `policies[0]: unknown policy "psychic"`) {
		t.Errorf("unknown policy: %v", err)
	}
}
