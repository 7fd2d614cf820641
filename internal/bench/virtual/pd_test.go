package virtual

import (
	"context"
	"strings"
	"testing"
)

const pdScenario = `
fleet: {engines: 4, profile: h100-llama3-8b}
api: completions
workload: {kind: shared-prefix, groups: 60, usersPerGroup: 1, systemTokens: 7900, questionTokens: 100, outputTokens: 128}
arrival: {rates: [10]}
maxRequests: 60
seed: 2
policies: [least-request, pd]
pd: {prefill: 2}
`

// TestPDRunsThePlanner runs the PD policy: every request is prefilled on a
// prefill engine (one token each) and decoded on a decode engine, and with
// 8k-token prompts at a load where co-located engines interleave prefills
// with decodes, disaggregation lowers the time per output token and costs
// time to first token.
func TestPDRunsThePlanner(t *testing.T) {
	rep, err := Run(context.Background(), mustParse(t, pdScenario), quiet())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 2 {
		t.Fatalf("%d runs", len(rep.Runs))
	}
	co, pd := rep.Runs[0], rep.Runs[1]
	if pd.Policy != "pd" || pd.Completed != 60 || pd.Failed != 0 || co.Completed != 60 {
		t.Fatalf("runs: %s %d/%d, %s %d", pd.Policy, pd.Completed, pd.Failed, co.Policy, co.Completed)
	}
	var prefillReqs, decodeReqs, prefillPrompt, decodePrompt float64
	for _, e := range pd.EngineMetrics.Engines {
		switch {
		case strings.Contains(e.URL, "prefill"):
			prefillReqs += e.Requests
			prefillPrompt += e.PromptTokens
		case strings.Contains(e.URL, "decode"):
			decodeReqs += e.Requests
			decodePrompt += e.PromptTokens
		default:
			t.Errorf("engine %s has no role in its name", e.URL)
		}
	}
	if prefillReqs != 60 || decodeReqs != 60 {
		t.Errorf("prefill engines served %v requests and decode engines %v, want 60 each", prefillReqs, decodeReqs)
	}
	if pd.TotalOutputTokens != 60*128 {
		t.Errorf("output tokens %d, want %d (the prefill's token is not the client's)", pd.TotalOutputTokens, 60*128)
	}
	if pd.MeanTPOTMs > 0.9*co.MeanTPOTMs {
		t.Errorf("mean TPOT: pd %.2f ms, co-located %.2f ms; want pd at least 10%% lower", pd.MeanTPOTMs, co.MeanTPOTMs)
	}
	// The prefill of 8k tokens plus its transfer (8,000 × 5µs = 40ms) comes
	// before the decode engine's first token.
	if pd.MedianTTFTMs < co.MedianTTFTMs+20 {
		t.Errorf("median TTFT: pd %.1f ms, co-located %.1f ms; want pd later by the transfer", pd.MedianTTFTMs, co.MedianTTFTMs)
	}
}

// TestPDDecodeFirstInVirtualTime: with prompts that share a long system
// prompt, requests whose decode engine holds it skip the remote prefill.
func TestPDDecodeFirstInVirtualTime(t *testing.T) {
	sc := mustParse(t, `
fleet: {engines: 3, profile: h100-llama3-8b}
api: completions
workload: {kind: shared-prefix, groups: 2, usersPerGroup: 10, systemTokens: 4000, questionTokens: 50, outputTokens: 8}
arrival: {concurrency: 1}
seed: 4
policies: [pd]
profiles:
  affine: {scorers: [{type: prefix-cache, weight: 2}, {type: kv-utilization}]}
pd: {prefill: 1, decodeProfile: affine}
`)
	rep, err := Run(context.Background(), sc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	run := rep.Runs[0]
	var prefillReqs float64
	for _, e := range run.EngineMetrics.Engines {
		if strings.Contains(e.URL, "prefill") {
			prefillReqs += e.Requests
		}
	}
	// One prefill per group: every later request finds its group's
	// system prompt on the decode engine that served the first.
	if run.Completed != 20 || prefillReqs != 2 {
		t.Errorf("completed %d, remote prefills %v; want 20 and 2", run.Completed, prefillReqs)
	}
}

func TestPDScenarioErrors(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"workload: {kind: shared-prefix}\npolicies: [pd]\n", `"pd" needs a pd block`},
		{"workload: {kind: shared-prefix}\nfleet: {engines: 2}\npd: {prefill: 2}\n", "pd.prefill: must be 1 to fleet.engines-1"},
		{"workload: {kind: shared-prefix}\nfleet: {engines: 2}\npd: {prefill: 1, decodeProfile: nope}\n", `pd.decodeProfile: "nope"`},
		{"workload: {kind: shared-prefix}\nfleet: {engines: 2}\npd: {prefill: 1, decodeFirst: {minHeldShare: 2}}\n", "pd.decodeFirst.minHeldShare"},
	} {
		if _, err := Parse([]byte(tt.yaml)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.yaml, err, tt.want)
		}
	}
}
