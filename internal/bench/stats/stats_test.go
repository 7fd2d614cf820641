package stats

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestPercentile(t *testing.T) {
	tests := []struct {
		name   string
		values []float64
		p      float64
		want   float64
	}{
		{"empty", nil, 50, 0},
		{"single", []float64{7}, 99, 7},
		{"median odd", []float64{1, 2, 3}, 50, 2},
		{"median even interpolates", []float64{1, 2, 3, 4}, 50, 2.5},
		{"p90 of 1..11", []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 90, 10},
		// numpy.percentile(range(1,101), 99) == 99.01
		{"p99 of 1..100", seq(1, 100), 99, 99.01},
		{"p0 is min", []float64{3, 4}, 0, 3},
		{"p100 is max", []float64{3, 4}, 100, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Percentile(tt.values, tt.p)
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.values, tt.p, got, tt.want)
			}
		})
	}
}

func seq(a, b int) []float64 {
	var out []float64
	for i := a; i <= b; i++ {
		out = append(out, float64(i))
	}
	return out
}

func TestDistribution(t *testing.T) {
	got := Distribution([]float64{4, 1, 3, 2})
	want := Dist{Mean: 2.5, Std: math.Sqrt(1.25), Median: 2.5, P90: 3.7, P99: 3.97}
	if diff := cmp.Diff(want, got, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("Distribution mismatch (-want +got):\n%s", diff)
	}
}

func TestTPOT(t *testing.T) {
	tests := []struct {
		name   string
		rec    Record
		want   time.Duration
		wantOK bool
	}{
		{"ten tokens", Record{TTFT: 100 * time.Millisecond, E2E: 1000 * time.Millisecond, OutputTokens: 10}, 100 * time.Millisecond, true},
		{"two tokens", Record{TTFT: 50 * time.Millisecond, E2E: 80 * time.Millisecond, OutputTokens: 2}, 30 * time.Millisecond, true},
		{"one token undefined", Record{TTFT: 50 * time.Millisecond, E2E: 50 * time.Millisecond, OutputTokens: 1}, 0, false},
		{"no token undefined", Record{E2E: 50 * time.Millisecond}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.rec.TPOT()
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("TPOT() = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestSLOMet(t *testing.T) {
	slo := SLO{TTFT: 200 * time.Millisecond, TPOT: 50 * time.Millisecond}
	tests := []struct {
		name string
		rec  Record
		want bool
	}{
		{"meets both", Record{TTFT: 200 * time.Millisecond, E2E: 200*time.Millisecond + 9*50*time.Millisecond, OutputTokens: 10}, true},
		{"ttft too slow", Record{TTFT: 201 * time.Millisecond, E2E: 300 * time.Millisecond, OutputTokens: 10}, false},
		{"tpot too slow", Record{TTFT: 100 * time.Millisecond, E2E: 100*time.Millisecond + 9*51*time.Millisecond, OutputTokens: 10}, false},
		{"single token ignores tpot", Record{TTFT: 100 * time.Millisecond, E2E: 5 * time.Second, OutputTokens: 1}, true},
		{"failed never meets", Record{TTFT: time.Millisecond, E2E: time.Millisecond, OutputTokens: 3, Err: "boom"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := slo.Met(&tt.rec); got != tt.want {
				t.Errorf("Met = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseSLO(t *testing.T) {
	tests := []struct {
		in      string
		want    SLO
		wantErr bool
	}{
		{"", SLO{}, false},
		{"ttft=500ms,tpot=50ms", SLO{TTFT: 500 * time.Millisecond, TPOT: 50 * time.Millisecond}, false},
		{"ttft=250, e2el=10s", SLO{TTFT: 250 * time.Millisecond, E2E: 10 * time.Second}, false},
		{"TTFT=1.5s", SLO{TTFT: 1500 * time.Millisecond}, false},
		{"ttft", SLO{}, true},
		{"ttft=-1", SLO{}, true},
		{"ttft=0s", SLO{}, true},
		{"speed=3ms", SLO{}, true},
		{"ttft=fast", SLO{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSLO(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseSLO(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseSLO(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			if err == nil && got != (SLO{}) {
				again, err := ParseSLO(got.String())
				if err != nil || again != got {
					t.Errorf("round trip of %q: %+v, %v", got.String(), again, err)
				}
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	recs := []Record{
		{ID: "a", Endpoint: "e0", Start: 0, TTFT: 100 * time.Millisecond, E2E: 1100 * time.Millisecond, ITL: []time.Duration{500 * time.Millisecond, 500 * time.Millisecond}, PromptTokens: 100, OutputTokens: 3, CachedTokens: 64},
		{ID: "b", Endpoint: "e1", Start: 500 * time.Millisecond, TTFT: 300 * time.Millisecond, E2E: 700 * time.Millisecond, ITL: []time.Duration{400 * time.Millisecond}, PromptTokens: 50, OutputTokens: 2},
		{ID: "c", Endpoint: "e0", Start: 600 * time.Millisecond, E2E: 10 * time.Millisecond, Err: "HTTP 503"},
		{ID: "d", Endpoint: "e0", Start: 2 * time.Second, TTFT: 10 * time.Millisecond, E2E: 10 * time.Millisecond, PromptTokens: 10, OutputTokens: 1},
	}
	got := Summarize(recs, 2*time.Second, SLO{TTFT: 200 * time.Millisecond})
	want := Summary{
		Duration:             2 * time.Second,
		Completed:            3,
		Failed:               1,
		Good:                 2,        // a and d meet ttft<=200ms; b does not
		GoodShare:            ptr(0.5), // 2 good of 4 sent: the refusal counts
		TotalInput:           160,
		TotalOutput:          6,
		CachedTokens:         64,
		RequestThroughput:    1.5,
		RequestGoodput:       1, // 2 good over 2 s
		OutputThroughput:     3,
		TotalTokenThroughput: 83,
		MaxConcurrent:        3, // a, b and c overlap at 600ms
		TTFT:                 Dist{Mean: 410.0 / 3, Median: 100, P90: 260, P99: 296},
		// TPOT: a = 1000/2 = 500ms, b = 400/1 = 400ms; d has one token.
		TPOT:        Dist{Mean: 450, Std: 50, Median: 450, P90: 490, P99: 499},
		ITL:         Dist{Mean: 1400.0 / 3, Median: 500, P90: 500, P99: 500},
		E2E:         Dist{Mean: 1810.0 / 3, Median: 700, P90: 1020, P99: 1092},
		Errors:      map[string]int{"HTTP 503": 1},
		PerEndpoint: map[string]int{"e0": 2, "e1": 1},
	}
	opts := cmp.Options{cmpopts.EquateApprox(0, 1e-6), cmpopts.IgnoreFields(Dist{}, "Std")}
	if diff := cmp.Diff(want, got, opts); diff != "" {
		t.Errorf("Summarize mismatch (-want +got):\n%s", diff)
	}
	if math.Abs(got.TPOT.Std-50) > 1e-9 {
		t.Errorf("TPOT std = %v, want 50", got.TPOT.Std)
	}
}

func TestSummarizeNoSLOGivesNoGoodput(t *testing.T) {
	recs := []Record{{TTFT: time.Millisecond, E2E: time.Millisecond, OutputTokens: 1}}
	if got := Summarize(recs, time.Second, SLO{}); got.RequestGoodput != 0 {
		t.Errorf("goodput without SLO = %v, want 0", got.RequestGoodput)
	}
}

func TestImbalance(t *testing.T) {
	tests := []struct {
		name   string
		counts []float64
		want   float64
	}{
		{"none", nil, 0},
		{"all zero", []float64{0, 0}, 0},
		{"even", []float64{5, 5, 5, 5}, 1},
		{"one hot", []float64{8, 0, 0, 0}, 4},
		{"skewed", []float64{3, 1}, 1.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Imbalance(tt.counts); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Imbalance(%v) = %v, want %v", tt.counts, got, tt.want)
			}
		})
	}
}

func BenchmarkSummarize(b *testing.B) {
	recs := make([]Record, 10000)
	for i := range recs {
		itl := make([]time.Duration, 99)
		for j := range itl {
			itl[j] = time.Duration(5+j%7) * time.Millisecond
		}
		recs[i] = Record{Start: time.Duration(i) * time.Millisecond, TTFT: time.Duration(20+i%50) * time.Millisecond,
			E2E: time.Second, ITL: itl, PromptTokens: 1000, OutputTokens: 100}
	}
	b.ReportAllocs()
	for b.Loop() {
		Summarize(recs, time.Minute, SLO{TTFT: 50 * time.Millisecond})
	}
}

func ptr[T any](v T) *T { return &v }
