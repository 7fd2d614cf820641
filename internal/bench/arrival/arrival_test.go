package arrival

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/bench/trace"
	"github.com/halyard-dev/halyard/internal/bench/workload"
)

func synthetic(t *testing.T, n int) workload.Workload {
	t.Helper()
	w, err := workload.NewSharedPrefix(workload.SharedPrefix{Groups: n, UsersPerGroup: 1, QuestionTokens: 1, OutputTokens: 1, Turns: 1})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestPoissonRate(t *testing.T) {
	const n, rate = 20000, 8.0
	s, err := Schedule(Spec{Kind: Poisson, Rate: rate, Seed: 3}, synthetic(t, n))
	if err != nil {
		t.Fatal(err)
	}
	if s[0] != 0 {
		t.Errorf("first offset %v, want 0", s[0])
	}
	for i := 1; i < n; i++ {
		if s[i] < s[i-1] {
			t.Fatalf("offset %d goes back", i)
		}
	}
	got := float64(n-1) / s[n-1].Seconds()
	if math.Abs(got-rate)/rate > 0.05 {
		t.Errorf("measured rate %.2f/s, want %.1f ± 5%%", got, rate)
	}
	// Exponential gaps: the coefficient of variation is 1.
	var sum, sq float64
	for i := 1; i < n; i++ {
		g := (s[i] - s[i-1]).Seconds()
		sum += g
		sq += g * g
	}
	mean := sum / float64(n-1)
	cv := math.Sqrt(sq/float64(n-1)-mean*mean) / mean
	if math.Abs(cv-1) > 0.1 {
		t.Errorf("gap coefficient of variation %.2f, want 1 ± 0.1", cv)
	}
	again, _ := Schedule(Spec{Kind: Poisson, Rate: rate, Seed: 3}, synthetic(t, n))
	if !cmp.Equal(s, again) {
		t.Error("same seed gave a different schedule")
	}
}

func TestInfiniteRateSendsAtOnce(t *testing.T) {
	s, err := Schedule(Spec{Kind: Poisson, Rate: math.Inf(1)}, synthetic(t, 5))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(make([]time.Duration, 5), s); diff != "" {
		t.Error(diff)
	}
}

func TestTraceSchedule(t *testing.T) {
	w := &workload.Azure{Entries: []trace.AzureEntry{
		{At: 0, ContextTokens: 1, GeneratedTokens: 1},
		{At: time.Second, ContextTokens: 1, GeneratedTokens: 1},
		{At: 3 * time.Second, ContextTokens: 1, GeneratedTokens: 1},
	}}
	tests := []struct {
		scale float64
		want  []time.Duration
	}{
		{0, []time.Duration{0, time.Second, 3 * time.Second}},
		{1, []time.Duration{0, time.Second, 3 * time.Second}},
		{2, []time.Duration{0, 500 * time.Millisecond, 1500 * time.Millisecond}},
		{0.5, []time.Duration{0, 2 * time.Second, 6 * time.Second}},
	}
	for _, tt := range tests {
		s, err := Schedule(Spec{Kind: Trace, TimeScale: tt.scale}, w)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, s); diff != "" {
			t.Errorf("scale %v (-want +got):\n%s", tt.scale, diff)
		}
	}
	if _, err := Schedule(Spec{Kind: Trace}, synthetic(t, 2)); !errors.Is(err, ErrNotTimed) {
		t.Errorf("trace arrivals on a synthetic workload: %v, want ErrNotTimed", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		spec  Spec
		field string
	}{
		{Spec{Kind: Poisson}, "rate"},
		{Spec{Kind: Poisson, Rate: -1}, "rate"},
		{Spec{Kind: Trace, TimeScale: -2}, "time scale"},
		{Spec{Kind: Concurrency}, "concurrency"},
		{Spec{Kind: "gamma"}, "arrival"},
	}
	for _, tt := range tests {
		err := tt.spec.Validate()
		if err == nil || err.Error()[:len(tt.field)] != tt.field {
			t.Errorf("Validate(%+v) = %v, want an error naming %q", tt.spec, err, tt.field)
		}
	}
	if s, err := Schedule(Spec{Kind: Concurrency, Concurrency: 4}, synthetic(t, 3)); err != nil || s != nil {
		t.Errorf("concurrency schedule = %v, %v; want nil, nil", s, err)
	}
}
