package virtual

import (
	"context"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/bench/report"
)

// stepScenario is a small fleet of slow engines (8 sequences each) under a
// step from 4 to 16 req/s at 60 s for 60 s, then 4 req/s until 240 s.
const stepScenario = `
model: llama-3-8b
fleet: {engines: 1, profile: h100-llama3-8b, maxNumSeqs: 8}
api: completions
workload: {kind: shared-prefix, groups: 40, usersPerGroup: 40, systemTokens: 800, questionTokens: 200, outputTokens: 200}
arrival:
  shape: {kind: step, rate: 4, factor: 4, at: 60s, length: 60s, end: 240s}
slo: ttft=1s,tpot=100ms
seed: 1
policies: [default]
autoscaling:
  policies: [static-peak, halyard]
  peakEngines: 6
  initialEngines: 2
  coldStart: 20s
  drainGrace: 10m
  halyard:
    minGroups: 1
    maxGroups: 12
    targets: {runningPerEngine: 6, waitingPerEngine: 2}
    stableWindow: 20s
    panicWindow: 4s
    scaleUp: {maxGroups: 4, period: 5s}
    scaleDown: {stabilizationWindow: 20s, maxGroups: 1, period: 5s}
    coldStart: 20s
`

func runByFleet(t *testing.T, y string) map[string]report.Run {
	t.Helper()
	rep, err := Run(context.Background(), mustParse(t, y), quiet())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]report.Run{}
	for _, r := range rep.Runs {
		out[r.Fleet] = r
	}
	return out
}

func TestAutoscaledFleetFollowsAStep(t *testing.T) {
	runs := runByFleet(t, stepScenario)
	peak, auto := runs[FleetStaticPeak], runs[FleetHalyard]
	if peak.Failed != 0 || auto.Failed != 0 {
		t.Fatalf("failed requests: static %d, autoscaled %d (errors %v); a scale-down must fail none", peak.Failed, auto.Failed, auto.Errors)
	}
	if auto.Completed != peak.Completed {
		t.Errorf("autoscaled fleet completed %d requests, static %d", auto.Completed, peak.Completed)
	}
	// Static: 6 engines for the whole run.
	if want := 6 * peak.Duration / 3600; peak.EngineHours < want*0.999 || peak.EngineHours > want*1.001 {
		t.Errorf("static engine-hours = %.4f, want 6 × %.0f s = %.4f", peak.EngineHours, peak.Duration, want)
	}
	if auto.MaxEngines <= 2 {
		t.Fatalf("the fleet never grew past its 2 initial engines: %+v", auto.ScaleDecisions)
	}
	// Within 5 s of the step (60 s) the fleet asks for at least twice
	// its groups; after the step it shrinks.
	var stepUp, down bool
	for _, d := range auto.ScaleDecisions {
		switch {
		case d.To >= 4 && d.Time >= 60 && d.Time <= 65:
			stepUp = true
		case d.To < d.From && d.Time > 120:
			down = true
		}
	}
	if !stepUp || !down {
		t.Errorf("decisions: 4+ groups within 5 s of the step %v, down after it %v:\n%+v", stepUp, down, auto.ScaleDecisions)
	}
	if auto.EngineHours >= peak.EngineHours {
		t.Errorf("autoscaled engine-hours %.4f not below the static peak fleet's %.4f", auto.EngineHours, peak.EngineHours)
	}
}

func TestDrainRemovesWithoutFailures(t *testing.T) {
	y := strings.Replace(stepScenario, "policies: [static-peak, halyard]", "policies: [drain-newest, drain-cache-aware]\n  scaleDown: {at: 90s, groups: 4}", 1)
	runs := runByFleet(t, y)
	for _, fleet := range []string{FleetDrainNewest, FleetDrainCacheAware} {
		r := runs[fleet]
		if r.Failed != 0 {
			t.Errorf("%s: %d requests failed (%v); draining must fail none", fleet, r.Failed, r.Errors)
		}
		if r.HitRateAfterScaleDown == nil {
			t.Errorf("%s: no hit rate after the scale-down", fleet)
		}
		// 6 engines to 90 s, then 2 (plus the drain) to the end.
		full := 6 * r.Duration / 3600
		if r.EngineHours >= full*0.8 {
			t.Errorf("%s: engine-hours %.4f, want well under the full fleet's %.4f", fleet, r.EngineHours, full)
		}
	}
}

func TestRepeatedScaleDownsRestoreTheFleet(t *testing.T) {
	// Two engines go at 70 s and again at 150 s; 40 s after each, two
	// fresh engines are asked for (ready 20 s later).
	y := strings.Replace(stepScenario, "policies: [static-peak, halyard]",
		"policies: [drain-newest]\n  scaleDown: {at: 70s, groups: 2, window: 30s, every: 80s, count: 2, restoreAfter: 40s}", 1)
	r := runByFleet(t, y)[FleetDrainNewest]
	if r.Failed != 0 {
		t.Fatalf("%d requests failed (%v); draining must fail none", r.Failed, r.Errors)
	}
	if len(r.ScaleDowns) != 2 {
		t.Fatalf("scale-downs = %+v, want 2", r.ScaleDowns)
	}
	// newest first: the two highest of the 6 initial engines, then the
	// two restored ones (sim-6, sim-7), which are now the newest.
	for k, want := range [][]string{{"sim-4", "sim-5"}, {"sim-6", "sim-7"}} {
		w := r.ScaleDowns[k]
		if strings.Join(w.Removed, ",") != strings.Join(want, ",") {
			t.Errorf("scale-down %d removed %v, want %v", k, w.Removed, want)
		}
		if w.Requests == 0 || w.HitRate <= 0 || w.P90TTFTMs <= 0 {
			t.Errorf("scale-down %d window: %+v, want requests, a hit rate and a TTFT p90", k, w)
		}
	}
	if r.ScaleDowns[0].At != 70 || r.ScaleDowns[1].At != 150 {
		t.Errorf("scale-downs at %v and %v s, want 70 and 150", r.ScaleDowns[0].At, r.ScaleDowns[1].At)
	}
	if r.HitRateAfterScaleDown == nil || r.P90TTFTAfterScaleDownMs <= 0 {
		t.Errorf("pooled figures missing: hit %v, TTFT p90 %v", r.HitRateAfterScaleDown, r.P90TTFTAfterScaleDownMs)
	}
}

func TestAutoscalingScenarioErrors(t *testing.T) {
	base := "workload: {kind: shared-prefix}\n"
	for _, tc := range []struct{ yaml, want string }{
		{"autoscaling: {policies: [static-peak]}\n", "autoscaling.peakEngines"},
		{"autoscaling: {policies: [magic], peakEngines: 2}\n", `unknown fleet policy "magic"`},
		{"autoscaling: {policies: [halyard], peakEngines: 2}\n", "needs autoscaling.halyard"},
		{"autoscaling: {policies: [drain-random], peakEngines: 2}\n", "autoscaling.scaleDown"},
		{"autoscaling: {policies: [drain-random], peakEngines: 4, scaleDown: {at: 1m, groups: 1, count: 3, every: 1m}}\n", "needs every > 0 and 0 < restoreAfter < every"},
		{"autoscaling: {policies: [drain-random], peakEngines: 4, hitCredit: all, scaleDown: {at: 1m, groups: 1}}\n", "autoscaling.hitCredit"},
		{"autoscaling: {policies: [halyard], peakEngines: 2, halyard: {maxGroups: 2, targets: {}}}\n", "at least one load target"},
		{"arrival: {shape: {kind: wave}}\n", "arrival.shape.kind"},
		{"arrival: {shape: {kind: step, rate: 1}}\n", "step needs"},
	} {
		_, err := Parse([]byte(base + tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.want)
		}
	}
}
