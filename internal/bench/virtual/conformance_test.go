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
}

// The policy-conformance suite: scaled-down versions of the routing-quality
// scenarios of docs/benchmarks.md (a few minutes of virtual time, seconds
// of wall time), with the gates as assertions: the gated policy
// keeps at least 97 % of the oracle's goodput, a TTFT p90 within 1.25× of
// the oracle's, and at least 99 % of least-request's goodput (the rest
// is the noise of a short run's end) and no worse a TTFT p90. A failure prints the table that broke.
func TestPolicyConformance(t *testing.T) {
	const gated = PolicyPredicted
	suite := []conformance{
		{"shared-prefix-8 at 60 req/s", `
fleet: {engines: 8, profile: h100-llama3-8b}
workload: {kind: shared-prefix, groups: 40, usersPerGroup: 5, systemTokens: 6000, questionTokens: 1200, outputTokens: 100}
arrival: {rates: [60]}
maxRequests: 160
slo: ttft=500ms,tpot=50ms
seed: 3
policies: [least-request, default, predicted-latency, oracle]
`},
		{"shared-prefix-4 at 30 req/s, long answers", `
fleet: {engines: 4, profile: h100-llama3-8b}
workload: {kind: shared-prefix, groups: 20, usersPerGroup: 4, systemTokens: 3000, questionTokens: 2000, outputTokens: 300}
arrival: {rates: [30]}
maxRequests: 200
slo: ttft=1s,tpot=60ms
seed: 5
policies: [least-request, default, predicted-latency, oracle]
`},
	}
	for _, c := range suite {
		t.Run(c.name, func(t *testing.T) {
			rep, err := Run(context.Background(), mustParse(t, c.yaml), quiet())
			if err != nil {
				t.Fatal(err)
			}
			by := map[string]report.Run{}
			for _, r := range rep.Runs {
				by[r.Policy] = r
			}
			g, o, lr := by[gated], by[PolicyOracle], by[PolicyLeastRequest]
			var failed []string
			check := func(ok bool, format string, args ...any) {
				if !ok {
					failed = append(failed, fmt.Sprintf(format, args...))
				}
			}
			check(g.RequestGoodput >= 0.97*o.RequestGoodput, "goodput %.2f below 97%% of the oracle's %.2f", g.RequestGoodput, o.RequestGoodput)
			check(g.P90TTFTMs <= 1.25*o.P90TTFTMs, "TTFT p90 %.1f ms above 1.25× the oracle's %.1f ms", g.P90TTFTMs, o.P90TTFTMs)
			check(g.RequestGoodput >= 0.99*lr.RequestGoodput, "goodput %.2f below 99%% of least-request's %.2f", g.RequestGoodput, lr.RequestGoodput)
			check(g.P90TTFTMs <= lr.P90TTFTMs, "TTFT p90 %.1f ms above least-request's %.1f ms", g.P90TTFTMs, lr.P90TTFTMs)
			if len(failed) > 0 {
				t.Errorf("%s fails its gates:\n  %s\n%s", gated, strings.Join(failed, "\n  "), conformanceTable(rep))
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
