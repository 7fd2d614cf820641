package virtual

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/bench/report"
)

// TestAdmissionKeepsTheLightTenantServed runs the fairness scenario's
// fleet, shortened, at 1.5x its capacity: with the router's admission
// stage (the same package and capacity gate as the router) the light
// tenant is served as if nearly alone and the heavy tenant's excess is
// refused on arrival; without it, both drown in the engines' queues.
func TestAdmissionKeepsTheLightTenantServed(t *testing.T) {
	data, err := os.ReadFile("scenarios/fairness-2-tenants.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(data), "rates: [66, 132]", "rates: [66]", 1)
	y = strings.Replace(y, "duration: 60s", "duration: 20s", 1)
	// The vendored trace, from this package's folder.
	y = strings.Replace(y, "azureTrace: conv", "trace: ../../../traces/AzureLLMInferenceTrace_conv.csv", 1)
	sc := mustParse(t, y)
	rep, err := Run(context.Background(), sc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]report.Run{}
	for _, r := range rep.Runs {
		runs[r.Admission] = r
	}
	tenant := func(variant, name string) report.TenantRun {
		for _, tr := range runs[variant].Tenants {
			if tr.Name == name {
				return tr
			}
		}
		t.Fatalf("run %q has no tenant %q: %+v", variant, name, runs[variant].Tenants)
		return report.TenantRun{}
	}
	on, off, alone := tenant("on", "light"), tenant("off", "light"), tenant("alone:light", "light")
	heavy := tenant("on", "heavy")
	t.Logf("light TTFT p90: alone %.1fms, admission on %.1fms (%.2fx), off %.1fms (%.2fx); heavy refused %d of %d, p99 time to refusal %.1fms",
		alone.P90TTFTMs, on.P90TTFTMs, on.P90TTFTVsAlone, off.P90TTFTMs, off.P90TTFTVsAlone, heavy.Refused, heavy.Sent, heavy.P99RefusalMs)
	if on.AloneP90TTFTMs != alone.P90TTFTMs {
		t.Errorf("the on run's alone p90 %.1f is not the alone run's %.1f", on.AloneP90TTFTMs, alone.P90TTFTMs)
	}
	if on.P90TTFTVsAlone > 1.5 {
		t.Errorf("with admission light's TTFT p90 is %.2fx its p90 alone", on.P90TTFTVsAlone)
	}
	if off.P90TTFTVsAlone < 10 {
		t.Errorf("without admission light's TTFT p90 is only %.2fx alone: the scenario does not overload the fleet", off.P90TTFTVsAlone)
	}
	if on.Refused != 0 || on.GoodputShare < 0.95 {
		t.Errorf("light: %d refused, goodput %.3f of demand; want none refused and at least 0.95", on.Refused, on.GoodputShare)
	}
	if heavy.Refused == 0 || heavy.P99RefusalMs >= 50 {
		t.Errorf("heavy: %d refused, p99 time to refusal %.1fms; want refusals on arrival (under 50ms)", heavy.Refused, heavy.P99RefusalMs)
	}
}
