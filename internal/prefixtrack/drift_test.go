package prefixtrack

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDriftRatio(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	type step struct {
		predict int     // tokens predicted before the scrape
		hits    float64 // the engine's counter at the scrape
	}
	tests := []struct {
		name  string
		steps []step
		want  DriftStatus
	}{
		{"agreement", []step{{0, 100}, {4000, 4100}, {4000, 8100}, {2000, 10100}},
			DriftStatus{PredictedTotal: 10000, ReportedTotal: 10000, Predicted: 10000, Reported: 10000, Ratio: 1, OK: true}},
		{"router predicts, engine never hits (prefix caching off)", []step{{0, 0}, {4000, 0}, {4000, 0}},
			DriftStatus{PredictedTotal: 8000, Predicted: 8000, Ratio: 0, OK: true}},
		{"engine hits, router predicts none (tokenizers disagree)", []step{{0, 0}, {0, 3000}, {16, 6000}},
			DriftStatus{PredictedTotal: 16, ReportedTotal: 6000, Predicted: 16, Reported: 6000, Ratio: 16.0 / 6000, OK: true}},
		{"too little to compare", []step{{0, 0}, {100, 90}},
			DriftStatus{PredictedTotal: 100, ReportedTotal: 90, Predicted: 100, Reported: 90}},
		{"a restarted engine's counter starts over", []step{{0, 5000}, {2000, 7000}, {2000, 1500}},
			DriftStatus{PredictedTotal: 4000, ReportedTotal: 3500, Predicted: 4000, Reported: 3500, Ratio: 3500.0 / 4000, OK: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewDrift(DriftConfig{Window: time.Minute, MinTokens: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				d.Predicted("e0", s.predict)
				d.ObserveEngine("e0", s.hits, t0.Add(time.Duration(i)*time.Second))
			}
			got := d.Status("e0")
			if math.Abs(got.Ratio-tt.want.Ratio) > 1e-9 {
				t.Errorf("ratio %v, want %v", got.Ratio, tt.want.Ratio)
			}
			got.Ratio = tt.want.Ratio
			if got != tt.want {
				t.Errorf("status %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDriftWindowSlides: only the last window counts, so a ratio that
// collapsed recovers once the disagreement is older than the window.
func TestDriftWindowSlides(t *testing.T) {
	d, err := NewDrift(DriftConfig{Window: 10 * time.Second, MinTokens: 100})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_000_000, 0)
	hits := 0.0
	d.ObserveEngine("e0", hits, t0)
	// 20 s of disagreement: predicted hits the engine never has.
	for i := 1; i <= 200; i++ {
		d.Predicted("e0", 50)
		d.ObserveEngine("e0", hits, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	if st := d.Status("e0"); !st.OK || st.Ratio != 0 {
		t.Fatalf("after disagreement: %+v, want ratio 0", st)
	}
	// Then 20 s of agreement.
	for i := 201; i <= 400; i++ {
		d.Predicted("e0", 50)
		hits += 50
		d.ObserveEngine("e0", hits, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	st := d.Status("e0")
	if !st.OK || st.Ratio < 0.95 {
		t.Fatalf("after 20 s of agreement in a 10 s window: %+v, want ratio near 1", st)
	}
	// The window spans about 10 s: about 100 observations of 50 tokens.
	if st.Predicted < 4500 || st.Predicted > 5600 {
		t.Errorf("window holds %v predicted tokens, want about 5,000", st.Predicted)
	}
	d.mu.Lock()
	n := len(d.eps["e0"].samples)
	d.mu.Unlock()
	if n > driftSlots+2 {
		t.Errorf("%d samples kept, want at most %d", n, driftSlots+2)
	}
}

func TestDriftMetrics(t *testing.T) {
	d, err := NewDrift(DriftConfig{Window: time.Minute, MinTokens: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_000_000, 0)
	d.ObserveEngine("e0", 0, t0)
	d.Predicted("e0", 2000)
	d.ObserveEngine("e0", 1000, t0.Add(time.Second))
	d.ObserveEngine("idle", 0, t0)
	want := `
# HELP halyard_router_prefix_engine_hit_tokens_total Prefix-cache hit tokens the endpoint's engine reported (increases of vllm:prefix_cache_hits_total) since the router first scraped it.
# TYPE halyard_router_prefix_engine_hit_tokens_total counter
halyard_router_prefix_engine_hit_tokens_total{endpoint="e0"} 1000
halyard_router_prefix_engine_hit_tokens_total{endpoint="idle"} 0
# HELP halyard_router_prefix_hit_drift_ratio Agreement of predicted and engine-reported prefix-cache hit tokens over the drift window: min/max of the two, 1 when they match, near 0 when the router and the engine disagree (see the two totals for which way). Absent while the window holds too few hits to compare.
# TYPE halyard_router_prefix_hit_drift_ratio gauge
halyard_router_prefix_hit_drift_ratio{endpoint="e0"} 0.5
# HELP halyard_router_prefix_predicted_hit_tokens_total Prompt tokens the router expected cached at the endpoint it picked, summed over requests sent.
# TYPE halyard_router_prefix_predicted_hit_tokens_total counter
halyard_router_prefix_predicted_hit_tokens_total{endpoint="e0"} 2000
halyard_router_prefix_predicted_hit_tokens_total{endpoint="idle"} 0
`
	reg := prometheus.NewRegistry()
	reg.MustRegister(d)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
