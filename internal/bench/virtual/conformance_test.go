package virtual

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/bench/report"
)

// conformance is one scaled-down routing-quality scenario and the policy
// whose quality it gates.
type conformance struct {
	name, yaml string
	// lrShare is the share of least-request's goodput predicted-latency
	// and default-v2 must keep; 0 means 0.99.
	lrShare float64
	// oracleTTFT holds the default to a TTFT p90 within 1.25× of the
	// oracle's (the gate on the Mooncake trace).
	oracleTTFT bool
}

// The policy-conformance suite: scaled-down versions of the routing-quality
// scenarios of docs/benchmarks.md (shared-prefix, the head of the Mooncake
// and Azure traces, long prompts; a few minutes of virtual time, seconds
// of wall time each), run in parallel, with gates as assertions. The
// default is held to the gates: at least 97 % of the oracle's
// goodput everywhere, a TTFT p90 within 1.25× of the oracle's on the
// Mooncake trace, and no worse a TTFT p90 than least-request's.
// predicted-latency and default-v2, which minimise TTFT without the
// default's slack, are held to more: a TTFT p90 within 1.25× of the
// oracle's everywhere and at least 99 % of least-request's goodput (the
// rest is the noise of a short run's end; 97 % on long prompts, whose TPOT
// objective sits at the median TPOT, where the TTFT-minimising policies
// give up a few per cent of goodput to count balance: docs/benchmarks.md,
// "a fourth attempt"). A failure prints the table that broke.
func TestPolicyConformance(t *testing.T) {
	gated := []string{PolicyDefault, PolicyPredicted, PolicyDefaultV2}
	suite := []conformance{
		{"shared-prefix-8 at 60 req/s", `
fleet: {engines: 8, profile: h100-llama3-8b}
workload: {kind: shared-prefix, groups: 40, usersPerGroup: 5, systemTokens: 6000, questionTokens: 1200, outputTokens: 100}
arrival: {rates: [60]}
maxRequests: 160
slo: ttft=500ms,tpot=50ms
seed: 3
policies: [least-request, default-v1, default, predicted-latency, default-v2, oracle]
`, 0, false},
		{"shared-prefix-4 at 30 req/s, long answers", `
fleet: {engines: 4, profile: h100-llama3-8b}
workload: {kind: shared-prefix, groups: 20, usersPerGroup: 4, systemTokens: 3000, questionTokens: 2000, outputTokens: 300}
arrival: {rates: [30]}
maxRequests: 200
slo: ttft=1s,tpot=60ms
seed: 5
policies: [least-request, default-v1, default, predicted-latency, default-v2, oracle]
`, 0, false},
		{"Mooncake trace ×4, its first 1,000 requests", `
fleet: {engines: 8, profile: h100-llama3-8b}
workload: {kind: mooncake, trace: ../../../traces/conversation_trace.jsonl}
arrival: {trace: true, timeScale: 4}
maxRequests: 1000
slo: ttft=2s,tpot=100ms
seed: 1
policies: [least-request, default-v1, default, predicted-latency, default-v2, oracle]
`, 0, true},
		{"Azure conversation trace ×18, its first 2,000 requests", `
fleet: {engines: 4, profile: h100-llama3-8b}
workload: {kind: azure, trace: ../../../traces/AzureLLMInferenceTrace_conv.csv}
arrival: {trace: true, timeScale: 18}
maxRequests: 2000
slo: ttft=500ms,tpot=50ms
seed: 1
policies: [least-request, default-v1, default, predicted-latency, default-v2, oracle]
`, 0, false},
		{"long prompts (8,000 tokens) at 10 req/s", `
fleet: {engines: 4, profile: h100-llama3-8b}
workload: {kind: shared-prefix, groups: 120, usersPerGroup: 1, systemTokens: 7900, questionTokens: 100, outputTokens: 256}
arrival: {rates: [10]}
maxRequests: 120
slo: ttft=1s,tpot=15ms
seed: 1
policies: [least-request, default-v1, default, predicted-latency, default-v2, oracle]
`, 0.97, false},
	}
	for _, c := range suite {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			rep, err := Run(context.Background(), mustParse(t, c.yaml), quiet())
			if err != nil {
				t.Fatal(err)
			}
			by := map[string]report.Run{}
			for _, r := range rep.Runs {
				by[r.Policy] = r
			}
			o, lr := by[PolicyOracle], by[PolicyLeastRequest]
			for _, policy := range gated {
				g := by[policy]
				var failed []string
				check := func(ok bool, format string, args ...any) {
					if !ok {
						failed = append(failed, fmt.Sprintf(format, args...))
					}
				}
				strict := policy != PolicyDefault
				check(g.RequestGoodput >= 0.97*o.RequestGoodput, "goodput %.2f below 97%% of the oracle's %.2f", g.RequestGoodput, o.RequestGoodput)
				if strict || c.oracleTTFT {
					check(g.P90TTFTMs <= 1.25*o.P90TTFTMs, "TTFT p90 %.1f ms above 1.25× the oracle's %.1f ms", g.P90TTFTMs, o.P90TTFTMs)
				}
				if strict {
					share := c.lrShare
					if share == 0 {
						share = 0.99
					}
					check(g.RequestGoodput >= share*lr.RequestGoodput, "goodput %.2f below %.0f%% of least-request's %.2f", g.RequestGoodput, 100*share, lr.RequestGoodput)
				}
				check(g.P90TTFTMs <= lr.P90TTFTMs, "TTFT p90 %.1f ms above least-request's %.1f ms", g.P90TTFTMs, lr.P90TTFTMs)
				if len(failed) > 0 {
					t.Errorf("%s fails its gates:\n  %s\n%s", policy, strings.Join(failed, "\n  "), conformanceTable(rep))
				}
			}
		})
	}
}

func conformanceTable(rep *report.Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-18s %9s %9s %9s %9s %9s %8s\n", "policy", "TTFT p50", "p90", "p99", "TPOT p50", "p99", "goodput")
	for _, r := range rep.Runs {
		fmt.Fprintf(&b, "%-18s %9.1f %9.1f %9.1f %9.1f %9.1f %8.2f\n", r.Policy, r.MedianTTFTMs, r.P90TTFTMs, r.P99TTFTMs, r.MedianTPOTMs, r.P99TPOTMs, r.RequestGoodput)
	}
	return b.String()
}

// scaleDownConformance is the cache-aware scale-down gate, scaled down
// from docs/benchmarks.md ("Which group goes"): six engines with small KV
// caches (32k tokens each) behind prefix-aware routing, 40 system prompts
// of 2,000 tokens at 20 req/s; two engines are drained at 10 s, 20 s and
// 30 s, and 5 s after each two fresh engines are asked for (ready 3 s
// later). A few seconds of wall time per seed. The routing is default-v1,
// the default the gate was measured under: under today's default
// cache-aware ties newest here (90.55 % against 90.56 % over the seeds;
// docs/benchmarks.md, "Switching the default: the slack").
const scaleDownConformance = `
fleet: {engines: 1, profile: h100-llama3-8b, numGPUBlocks: 2000}
workload: {kind: shared-prefix, groups: 40, usersPerGroup: 20, systemTokens: 2000, questionTokens: 100, outputTokens: 20}
arrival: {rates: [20]}
slo: ttft=1s,tpot=100ms
seed: %d
policies: [default-v1]
autoscaling:
  policies: [drain-cache-aware, drain-random, drain-newest]
  peakEngines: 6
  coldStart: 3s
  hitHalfLife: 10s
  scaleDown: {at: 10s, groups: 2, window: 5s, every: 10s, count: 3, restoreAfter: 5s}
`

// TestCacheAwareScaleDownConformance gates the claim that
// removing the groups with the least unique hot cache keeps a higher
// prefix hit rate after a scale-down than removing random or the newest
// groups, over seeds 1-3 (deterministic: virtual time): the hit rate of
// the requests sent in the windows after the scale-downs, averaged over
// the seeds, is at least random's plus 3 points and at least newest's,
// with a TTFT p90 after them no worse than random's; and at the first
// scale-down, when every engine is as old as the others (so newest is an
// arbitrary pick), cache-aware is at least as good as both on every seed.
// No request may fail. A failure prints the table.
func TestCacheAwareScaleDownConformance(t *testing.T) {
	rules := []string{FleetDrainCacheAware, FleetDrainRandom, FleetDrainNewest}
	mean := map[string]float64{}
	meanP90 := map[string]float64{}
	var failed []string
	var table strings.Builder
	fmt.Fprintf(&table, "%-4s %-18s %9s %9s %s\n", "seed", "victim rule", "hit after", "TTFT p90", "per scale-down: at s, hit rate, removed")
	const seeds = 3
	for seed := 1; seed <= seeds; seed++ {
		runs := runByFleet(t, fmt.Sprintf(scaleDownConformance, seed))
		first := map[string]float64{}
		for _, f := range rules {
			r := runs[f]
			if r.Failed != 0 || r.HitRateAfterScaleDown == nil || len(r.ScaleDowns) != 3 {
				t.Fatalf("seed %d, %s: %d failed (%v), %d scale-downs; want none failed and 3", seed, f, r.Failed, r.Errors, len(r.ScaleDowns))
			}
			mean[f] += *r.HitRateAfterScaleDown / seeds
			meanP90[f] += r.P90TTFTAfterScaleDownMs / seeds
			first[f] = r.ScaleDowns[0].HitRate
			fmt.Fprintf(&table, "%-4d %-18s %8.2f%% %7.1fms", seed, f, 100**r.HitRateAfterScaleDown, r.P90TTFTAfterScaleDownMs)
			for _, w := range r.ScaleDowns {
				fmt.Fprintf(&table, "  %.0f: %.2f%% %v", w.At, 100*w.HitRate, w.Removed)
			}
			table.WriteByte('\n')
		}
		for _, f := range rules[1:] {
			if first[FleetDrainCacheAware] < first[f] {
				failed = append(failed, fmt.Sprintf("seed %d, first scale-down: cache-aware %.2f%% below %s's %.2f%%", seed, 100*first[FleetDrainCacheAware], f, 100*first[f]))
			}
		}
	}
	ca, rnd, nw := mean[FleetDrainCacheAware], mean[FleetDrainRandom], mean[FleetDrainNewest]
	if ca < rnd+0.03 {
		failed = append(failed, fmt.Sprintf("mean hit rate after scale-downs: cache-aware %.2f%% not 3 points above random's %.2f%%", 100*ca, 100*rnd))
	}
	if ca < nw {
		failed = append(failed, fmt.Sprintf("mean hit rate after scale-downs: cache-aware %.2f%% below newest's %.2f%%", 100*ca, 100*nw))
	}
	if meanP90[FleetDrainCacheAware] > meanP90[FleetDrainRandom] {
		failed = append(failed, fmt.Sprintf("mean TTFT p90 after scale-downs: cache-aware %.1f ms above random's %.1f ms", meanP90[FleetDrainCacheAware], meanP90[FleetDrainRandom]))
	}
	if len(failed) > 0 {
		t.Errorf("cache-aware scale-down fails its gates:\n  %s\n%s", strings.Join(failed, "\n  "), table.String())
	} else {
		t.Logf("means over seeds 1-%d: hit rate after scale-downs cache-aware %.2f%%, random %.2f%%, newest %.2f%%\n%s", seeds, 100*ca, 100*rnd, 100*nw, table.String())
	}
}

// pdConformance is the PD gate: the first 1,000 requests of the Mooncake
// trace at ×3 on 8 engines, 4 prefill and 4 decode, under the pd policy
// with the pool's profiles given by %s (the shipped presets, or the
// presets before issue 14's seventh session).
const pdConformance = `
fleet: {engines: 8, profile: h100-llama3-8b}
api: completions
workload: {kind: mooncake, trace: ../../../traces/conversation_trace.jsonl}
arrival: {trace: true, timeScale: 3}
maxRequests: 1000
slo: ttft=2s,tpot=100ms
seed: 1
policies: [pd]
pd: {prefill: 4, transferPerToken: 5us%s}
`

// TestPDConformance gates the PD presets' claim (docs/benchmarks.md, "PD
// pools on the same estimates"): picking the pair by the latency model's
// estimates (the shipped prefill and decode presets) gives a TTFT p90 at
// least 10 % under the presets before (prefill-v1, decode-v1; 30 % under
// when measured) and no less goodput. A failure prints both runs.
func TestPDConformance(t *testing.T) {
	t.Parallel()
	run := func(profiles string) report.Run {
		t.Helper()
		rep, err := Run(context.Background(), mustParse(t, fmt.Sprintf(pdConformance, profiles)), quiet())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Runs) != 1 || rep.Runs[0].Failed != 0 {
			t.Fatalf("runs %d, failed %v", len(rep.Runs), rep.Runs)
		}
		return rep.Runs[0]
	}
	shipped, v1 := run(""), run(", prefillProfile: prefill-v1, decodeProfile: decode-v1")
	if shipped.P90TTFTMs > 0.9*v1.P90TTFTMs || shipped.RequestGoodput < v1.RequestGoodput {
		t.Errorf("the shipped PD presets: TTFT p90 %.1f ms (want at most 0.9× prefill-v1/decode-v1's %.1f), goodput %.2f (want at least %.2f)\n%s",
			shipped.P90TTFTMs, v1.P90TTFTMs, shipped.RequestGoodput, v1.RequestGoodput,
			conformanceTable(&report.Report{Runs: []report.Run{withPolicy(shipped, "pd (shipped)"), withPolicy(v1, "pd (v1)")}}))
	}
}

func withPolicy(r report.Run, policy string) report.Run {
	r.Policy = policy
	return r
}
