package virtual

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/bench/report"
)

// sloHeadersScenario is pd-long-prompt scaled down, at a rate where
// predicted TPOT crosses the objective, so that the objectives change
// where predicted-latency sends requests. v2slo is default-v2 with the
// scenario's objectives as predicted-latency's params, its picker seeded
// as the preset's (seed+1).
const sloHeadersScenario = `
model: llama-3-8b
fleet: {engines: 4, profile: h100-llama3-8b}
api: completions
workload: {kind: shared-prefix, groups: 60, usersPerGroup: 1, systemTokens: 7900, questionTokens: 100, outputTokens: 256}
arrival: {rates: [10]}
maxRequests: 60
slo: ttft=1s,tpot=15ms
seed: 1
policies: [default-v1, default-v2, v2slo]
profiles:
  v2slo:
    scorers:
    - {type: prefix-cache, weight: 3}
    - {type: kthena-least-request, weight: 1}
    - {type: kv-utilization, weight: 1}
    - {type: predicted-latency, weight: 6, params: {ttftObjectiveMs: 1000, tpotObjectiveMs: 15}}
    picker: {type: max-score, params: {seed: 2}}
`

// TestSLOHeadersDeclareTheObjectives: with sloHeaders every request
// carries the scenario's SLO as x-halyard-slo-* headers, which the
// predicted-latency scorer reads as the router hands them over: default-v2
// then places every request as default-v2 with the objectives in its
// params does, and differently from default-v2 without them; the old
// default (default-v1), which has no scorer reading them, places them as
// without.
func TestSLOHeadersDeclareTheObjectives(t *testing.T) {
	runs := func(headers bool) map[string]report.Run {
		y := sloHeadersScenario
		if headers {
			y += "sloHeaders: true\n"
		}
		rep, err := Run(context.Background(), mustParse(t, y), quiet())
		if err != nil {
			t.Fatal(err)
		}
		by := map[string]report.Run{}
		for _, r := range rep.Runs {
			if r.Completed != 60 {
				t.Fatalf("headers %v, %s: completed %d of 60", headers, r.Label, r.Completed)
			}
			by[r.Label] = r
		}
		return by
	}
	off, on := runs(false), runs(true)
	same := cmpopts.IgnoreFields(report.Run{}, "Label", "Policy", "WallSeconds")
	if diff := cmp.Diff(off["v2slo"], on["default-v2"], same); diff != "" {
		t.Errorf("default-v2 with the headers differs from default-v2 with the objectives as params (-params +headers):\n%s", diff)
	}
	if diff := cmp.Diff(off["v2slo"], on["v2slo"], same); diff != "" {
		t.Errorf("headers equal to the params' objectives changed v2slo (-without +with):\n%s", diff)
	}
	if diff := cmp.Diff(off["default-v1"], on["default-v1"], same); diff != "" {
		t.Errorf("the old default, which reads no objectives, changed with the headers (-without +with):\n%s", diff)
	}
	if cmp.Equal(off["default-v2"], on["default-v2"], same) {
		t.Errorf("default-v2 placed every request the same with and without the objectives: the headers did not reach the scorer (per endpoint %v, goodput %.3f)",
			on["default-v2"].RequestsPerEndpoint, on["default-v2"].RequestGoodput)
	}
}

// unmeetableScenario is a small shared-prefix load past its fleet's capacity
// behind admission, with the SLO declared in headers: under
// unmeetable: shed some requests are predicted to miss it everywhere.
const unmeetableScenario = `
model: llama-3-8b
fleet: {engines: 2, profile: h100-llama3-8b}
api: completions
workload: {kind: shared-prefix, groups: 40, usersPerGroup: 2, systemTokens: 6000, questionTokens: 2000, outputTokens: 64}
arrival: {rates: [30]}
maxRequests: 80
slo: ttft=300ms,tpot=50ms
sloHeaders: true
seed: 1
policies: [default]
admission:
  queue: {endpointConcurrency: 64, maxWait: 10s, prefillTokens: -1}
`

// unmeetablePDScenario is long prompts past the prefill side's capacity of
// a disaggregated pool (2 prefill + 2 decode engines) behind admission,
// with the SLO declared in headers.
const unmeetablePDScenario = `
model: llama-3-8b
fleet: {engines: 4, profile: h100-llama3-8b}
api: completions
workload: {kind: shared-prefix, groups: 60, usersPerGroup: 1, systemTokens: 7900, questionTokens: 100, outputTokens: 64}
arrival: {rates: [30]}
maxRequests: 60
slo: ttft=1s,tpot=50ms
sloHeaders: true
seed: 1
policies: [pd]
pd: {prefill: 2, transferPerToken: 5us}
admission:
  queue: {endpointConcurrency: 64, maxWait: 10s, prefillTokens: -1}
`

// TestAdmissionShedsUnmeetableRequestsInVirtualTime: with
// router.admission.unmeetable: shed the virtual fleet refuses, through
// the same decision code as the router, the admitted requests no endpoint
// is predicted to meet the objectives of (429 slo_unmeetable, counted as
// refused, never sent to an engine), which leaves a larger share of the
// requests within the SLO; with serve, the default, it sends them all;
// every request is accounted for either way. A disaggregated pool's
// requests pass the admission stage too, and there the pair the planner
// picks is handed back when no prefill endpoint is predicted to meet the
// TTFT objective.
func TestAdmissionShedsUnmeetableRequestsInVirtualTime(t *testing.T) {
	for _, tc := range []struct {
		name, scenario, label string
		requests              int
	}{
		{"co-located", unmeetableScenario, "default admission=on", 80},
		{"disaggregated", unmeetablePDScenario, "pd admission=on", 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := func(y string) report.Run {
				t.Helper()
				rep, err := Run(context.Background(), mustParse(t, y), quiet())
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rep.Runs {
					if r.Label == tc.label {
						return r
					}
				}
				t.Fatalf("no run %q among %d", tc.label, len(rep.Runs))
				return report.Run{}
			}
			serve := run(tc.scenario)
			shed := run(strings.Replace(tc.scenario, "admission:\n", "admission:\n  unmeetable: shed\n", 1))
			if n := serve.Errors["429 "+string(admission.ShedUnmeetable)]; n != 0 {
				t.Errorf("unmeetable: serve shed %d requests as unmeetable", n)
			}
			n := shed.Errors["429 "+string(admission.ShedUnmeetable)]
			if n == 0 || shed.Completed == 0 {
				t.Fatalf("unmeetable: shed refused %d as unmeetable, completed %d; the scenario should make some, not all, unmeetable (errors %v)", n, shed.Completed, shed.Errors)
			}
			if serve.GoodShare == nil || shed.GoodShare == nil || *shed.GoodShare <= *serve.GoodShare {
				t.Errorf("shed: good share %v, want above serve's %v", shed.GoodShare, serve.GoodShare)
			}
			for _, r := range []report.Run{serve, shed} {
				failed := 0
				for _, k := range r.Errors {
					failed += k
				}
				if r.Completed+r.Failed != tc.requests || failed != r.Failed {
					t.Errorf("%s: %d completed + %d failed (%d by reason), want %d accounted for (errors %v)", r.Label, r.Completed, r.Failed, failed, tc.requests, r.Errors)
				}
			}
			t.Logf("serve: %d completed, TTFT p90 %.0fms, good share %.2f; shed: %d completed, TTFT p90 %.0fms, good share %.2f, errors %v",
				serve.Completed, serve.P90TTFTMs, *serve.GoodShare, shed.Completed, shed.P90TTFTMs, *shed.GoodShare, shed.Errors)
		})
	}
}
