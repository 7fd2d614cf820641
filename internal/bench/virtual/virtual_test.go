package virtual

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/halyard-dev/halyard/internal/bench/report"
)

func quiet() Options { return Options{Log: slog.New(slog.DiscardHandler)} }

func mustParse(t *testing.T, y string) *Scenario {
	t.Helper()
	sc, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestParseDefaults(t *testing.T) {
	sc := mustParse(t, "workload: {kind: multi-turn}\n")
	if sc.Model != "llama-3-8b" || sc.Fleet.Engines != 1 || sc.API != "chat" || sc.ScrapeInterval.String() != "100ms" {
		t.Errorf("defaults: %+v", sc)
	}
	if diff := cmp.Diff(BuiltinPolicies(), sc.Policies); diff != "" {
		t.Errorf("default policies (-want +got):\n%s", diff)
	}
	if sc.Workload.Sessions != 32 || sc.Workload.Turns != 5 {
		t.Errorf("workload defaults: %+v", sc.Workload)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown field", "workload: {kind: shared-prefix}\nfleet: {engines: 2, gpus: 3}\n", `unknown field "gpus"`},
		{"engines", "workload: {kind: shared-prefix}\nfleet: {engines: -1}\n", "fleet.engines"},
		{"profile", "workload: {kind: shared-prefix}\nfleet: {profile: tpu-v9}\n", "fleet: profile"},
		{"kind", "workload: {kind: poetry}\n", "workload.kind"},
		{"api", "workload: {kind: shared-prefix}\napi: responses\n", "api: want chat or completions"},
		{"rates", "workload: {kind: shared-prefix}\narrival: {rates: [1, -2]}\n", "arrival.rates[1]"},
		{"two arrivals", "workload: {kind: shared-prefix}\narrival: {rates: [1], concurrency: 2}\n", "only one of"},
		{"slo", "workload: {kind: shared-prefix}\nslo: fast\n", "slo:"},
		{"policy", "workload: {kind: shared-prefix}\npolicies: [random, psychic]\n", `policies[1]: unknown policy "psychic"`},
		{"duplicate policy", "workload: {kind: shared-prefix}\npolicies: [random, random]\n", "policies[1]: \"random\" appears twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

const small = `
fleet: {engines: 4, profile: h100-llama3-8b}
workload: {kind: shared-prefix, groups: 12, usersPerGroup: 5, systemTokens: 3000, questionTokens: 200, outputTokens: 30}
arrival: {rates: [20]}
slo: ttft=300ms
seed: 3
`

func TestDeterministic(t *testing.T) {
	a, err := Run(context.Background(), mustParse(t, small), quiet())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(context.Background(), mustParse(t, small), quiet())
	if err != nil {
		t.Fatal(err)
	}
	ignore := cmpopts.IgnoreFields(report.Run{}, "WallSeconds")
	if diff := cmp.Diff(a.Runs, b.Runs, ignore); diff != "" {
		t.Errorf("two runs of one scenario differ (-first +second):\n%s", diff)
	}
	if len(a.Runs) != len(BuiltinPolicies()) {
		t.Fatalf("%d runs, want one per policy", len(a.Runs))
	}
	for _, r := range a.Runs {
		if r.Completed != 60 || r.Failed != 0 {
			t.Errorf("%s: completed %d failed %d", r.Policy, r.Completed, r.Failed)
		}
		total := 0
		for _, n := range r.RequestsPerEndpoint {
			total += n
		}
		if total != 60 || r.EngineMetrics == nil || len(r.EngineMetrics.Engines) != 4 {
			t.Errorf("%s: per endpoint %v", r.Policy, r.RequestsPerEndpoint)
		}
	}
}

func TestPoliciesBehave(t *testing.T) {
	rep, err := Run(context.Background(), mustParse(t, small), quiet())
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]report.Run{}
	for _, r := range rep.Runs {
		by[r.Policy] = r
	}
	// Round-robin spreads 60 requests over 4 engines exactly.
	if rr := by[PolicyRoundRobin]; rr.LoadImbalance != 1 {
		t.Errorf("round-robin imbalance %v, want 1 (%v)", rr.LoadImbalance, rr.RequestsPerEndpoint)
	}
	// The oracle, which knows where each system prompt is cached, hits the
	// cache at least as often as any policy, has a lower median TTFT than
	// the load-only policies, and a p90 TTFT within 5% of the best.
	o := by[PolicyOracle]
	for name, run := range by {
		if name == PolicyOracle {
			continue
		}
		if *o.PrefixCacheHitRate < *run.PrefixCacheHitRate-0.005 {
			t.Errorf("oracle hit rate %.3f below %s's %.3f", *o.PrefixCacheHitRate, name, *run.PrefixCacheHitRate)
		}
		if o.P90TTFTMs > 1.05*run.P90TTFTMs {
			t.Errorf("oracle p90 TTFT %.1f ms above %s's %.1f ms", o.P90TTFTMs, name, run.P90TTFTMs)
		}
	}
	for _, name := range []string{PolicyRandom, PolicyRoundRobin, PolicyLeastRequest, PolicyLoad} {
		if o.MedianTTFTMs >= by[name].MedianTTFTMs {
			t.Errorf("oracle median TTFT %.1f ms not below %s's %.1f ms", o.MedianTTFTMs, name, by[name].MedianTTFTMs)
		}
	}
}

func TestCustomProfileAndClosedLoop(t *testing.T) {
	sc := mustParse(t, `
fleet: {engines: 3}
workload: {kind: multi-turn, sessions: 6, turns: 3, systemTokens: 200, questionTokens: 50, outputTokens: 10}
arrival: {concurrency: 4}
policies: [mine]
profiles:
  mine:
    filters: [{type: health}]
    scorers: [{type: queue-depth, weight: 2}, {type: least-request}]
`)
	rep, err := Run(context.Background(), sc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Runs[0]
	if r.Label != "mine" || r.Completed != 18 || r.MaxConcurrency != 4 || r.MaxConcurrentRequests > 4 {
		t.Errorf("run %+v", r)
	}
}

func TestDurationLimit(t *testing.T) {
	sc := mustParse(t, `
workload: {kind: shared-prefix, groups: 100, usersPerGroup: 1, systemTokens: 100, questionTokens: 10, outputTokens: 5}
arrival: {rates: [10]}
duration: 2s
policies: [random]
`)
	rep, err := Run(context.Background(), sc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	// About 20 of the 100 requests arrive within 2 s at 10/s.
	if n := rep.Runs[0].Completed; n < 5 || n > 50 {
		t.Errorf("completed %d within a 2 s limit at 10/s, want about 20", n)
	}
}

func BenchmarkVirtualSharedPrefix(b *testing.B) {
	sc, err := Parse([]byte(small))
	if err != nil {
		b.Fatal(err)
	}
	sc.Policies = []string{PolicyLeastRequest}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Run(context.Background(), sc, quiet()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestShippedScenarios checks that the scenarios behind docs/benchmarks.md
// (scenarios/ and scenarios/autoscaling/) parse and validate.
func TestShippedScenarios(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("scenarios", "*.yaml"))
	nested, err2 := filepath.Glob(filepath.Join("scenarios", "autoscaling", "*.yaml"))
	files = append(files, nested...)
	if err = errors.Join(err, err2); err != nil || len(files) == 0 || len(nested) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			if _, err := Load(f); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestScenarioRelativePaths: a scenario's trace and profile paths are
// relative to the scenario file, not to the working directory.
func TestScenarioRelativePaths(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "scen")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	trace := `{"timestamp": 0, "input_length": 100, "output_length": 3, "hash_ids": [0]}
{"timestamp": 50, "input_length": 100, "output_length": 3, "hash_ids": [0]}
`
	prof, err := os.ReadFile(filepath.Join("..", "..", "simulator", "profiles", "zero.yaml"))
	if err != nil {
		t.Fatalf("the zero profile (internal/simulator/profiles/zero.yaml) is part of the repository: %v", err)
	}
	for name, data := range map[string][]byte{"data/t.jsonl": []byte(trace), "data/p.yaml": prof, "s.yaml": []byte(`
fleet: {engines: 1, profile: data/p.yaml}
api: completions
workload: {kind: mooncake, trace: data/t.jsonl}
arrival: {trace: true}
policies: [round-robin]
`)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sc, err := Load(filepath.Join(dir, "s.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "data", "t.jsonl"); sc.Workload.Trace != want {
		t.Errorf("trace %q, want %q", sc.Workload.Trace, want)
	}
	rep, err := Run(context.Background(), sc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Runs[0]; r.Completed != 2 {
		t.Errorf("completed %d of the trace's 2 requests", r.Completed)
	}
}

func TestMooncakeCompletions(t *testing.T) {
	dir := t.TempDir()
	tr := filepath.Join(dir, "trace.jsonl")
	lines := `{"timestamp": 0, "input_length": 700, "output_length": 5, "hash_ids": [0, 1]}
{"timestamp": 100, "input_length": 600, "output_length": 0, "hash_ids": [0, 2]}
{"timestamp": 300, "input_length": 1100, "output_length": 7, "hash_ids": [0, 1, 3]}
{"timestamp": 400, "input_length": 200000, "output_length": 7, "hash_ids": [` + strings.Repeat("9, ", 390) + `9]}
`
	if err := os.WriteFile(tr, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	sc := mustParse(t, `
fleet: {engines: 1}
api: completions
workload: {kind: mooncake, trace: `+tr+`}
arrival: {trace: true, timeScale: 2}
policies: [oracle]
`)
	rep, err := Run(context.Background(), sc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Runs[0]
	// The fourth request is longer than the engine's context: it fails with
	// the engine's reason and the others complete.
	if r.Completed != 3 || r.Failed != 1 || r.TotalInputTokens != 700+600+1100 || r.TotalOutputTokens != 5+1+7 {
		t.Fatalf("completed %d failed %d tokens %d/%d", r.Completed, r.Failed, r.TotalInputTokens, r.TotalOutputTokens)
	}
	for msg := range r.Errors {
		if !strings.Contains(msg, "context length") {
			t.Errorf("error %q does not give the engine's reason", msg)
		}
	}
	// Request 2 shares hash id 0 (512 tokens) with request 1. Request 3
	// shares hash ids 0 and 1 with it, but request 1's prompt held only 188
	// tokens of block 1: 700 tokens in common, 688 of them in whole
	// 16-token blocks.
	if r.TotalCachedTokens != 512+688 {
		t.Errorf("cached tokens %d, want %d", r.TotalCachedTokens, 512+688)
	}
	if r.Arrival != "trace ×2" {
		t.Errorf("arrival %q", r.Arrival)
	}
}

// TestPrecisePrefixPolicies: the precise index fed by the engines' own
// events finds the cached system prompts as well as the oracle does; when
// the events arrive late and no pending claims bridge the gap, hits are
// lost.
func TestPrecisePrefixPolicies(t *testing.T) {
	hitRate := func(kv string, policies ...string) map[string]float64 {
		t.Helper()
		sc := mustParse(t, small+kv+"policies: ["+strings.Join(policies, ", ")+"]\n")
		rep, err := Run(context.Background(), sc, quiet())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, r := range rep.Runs {
			if r.Completed != 60 || r.Failed != 0 {
				t.Errorf("%s: completed %d failed %d", r.Policy, r.Completed, r.Failed)
			}
			out[r.Policy] = *r.PrefixCacheHitRate
		}
		return out
	}
	base := hitRate("", PolicyPrecisePrefix, PolicyPreciseDefault, PolicyOracle)
	t.Logf("hit rates: %v", base)
	for _, p := range []string{PolicyPrecisePrefix, PolicyPreciseDefault} {
		if base[p] < base[PolicyOracle]-0.02 {
			t.Errorf("%s hit rate %.3f, more than 2 points below the oracle's %.3f", p, base[p], base[PolicyOracle])
		}
	}
	late := hitRate("kvEvents: {delay: 20s, pendingTTL: 0s}\n", PolicyPrecisePrefix)
	t.Logf("events 20 s late, no pending claims: %v", late)
	if late[PolicyPrecisePrefix] > base[PolicyPrecisePrefix]-0.1 {
		t.Errorf("events 20 s late: hit rate %.3f, want well below the prompt events' %.3f", late[PolicyPrecisePrefix], base[PolicyPrecisePrefix])
	}
	if _, err := Parse([]byte("workload: {kind: shared-prefix}\nkvEvents: {delay: -1s}\n")); err == nil || !strings.Contains(err.Error(), "kvEvents.delay") {
		t.Errorf("negative delay: error = %v", err)
	}
}

// TestRoutersShareWhatEnginesReport: behind four routers, each request's
// router knows only what it routed itself under the approximate index, but
// every router follows every engine's events under the precise one.
func TestRoutersShareWhatEnginesReport(t *testing.T) {
	sc := mustParse(t, small+"routers: 4\npolicies: [prefix-cache, precise-prefix, oracle]\n")
	rep, err := Run(context.Background(), sc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	hit := map[string]float64{}
	for _, r := range rep.Runs {
		if r.Completed != 60 || r.Failed != 0 {
			t.Errorf("%s: completed %d failed %d", r.Policy, r.Completed, r.Failed)
		}
		hit[r.Policy] = *r.PrefixCacheHitRate
	}
	t.Logf("hit rates behind 4 routers: %v", hit)
	if hit[PolicyPrecisePrefix] < hit[PolicyOracle]-0.02 {
		t.Errorf("precise-prefix %.3f, more than 2 points below the oracle's %.3f", hit[PolicyPrecisePrefix], hit[PolicyOracle])
	}
	if hit[PolicyPrefixCache] > hit[PolicyPrecisePrefix]-0.05 {
		t.Errorf("prefix-cache %.3f behind 4 routers, want clearly below precise-prefix's %.3f", hit[PolicyPrefixCache], hit[PolicyPrecisePrefix])
	}
	if _, err := Parse([]byte("workload: {kind: shared-prefix}\nrouters: 0\n")); err != nil {
		t.Errorf("routers 0 (default): %v", err)
	}
	if _, err := Parse([]byte("workload: {kind: shared-prefix}\nrouters: 65\n")); err == nil || !strings.Contains(err.Error(), "routers") {
		t.Errorf("routers 65: error = %v", err)
	}
}
