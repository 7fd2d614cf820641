package random_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
)

func scored(scores ...float64) []framework.ScoredEndpoint {
	out := make([]framework.ScoredEndpoint, len(scores))
	for i, s := range scores {
		out[i] = framework.ScoredEndpoint{Endpoint: plugintest.NewEndpoint(string(rune('a' + i))), Score: s}
	}
	return out
}

func TestPick(t *testing.T) {
	tests := []struct {
		name    string
		params  string
		n       int
		wantLen int
	}{
		{"no candidates", "", 0, 0},
		{"one of one", "", 1, 1},
		{"one of many", "", 5, 1},
		{"count distinct", `{"count":3}`, 5, 3},
		{"count beyond candidates", `{"count":9}`, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := plugintest.Build[*random.Picker](t, random.Factory, tt.params, plugintest.NewHandle())
			got := p.Pick(t.Context(), nil, nil, scored(make([]float64, tt.n)...))
			if len(got) != tt.wantLen {
				t.Fatalf("picked %d endpoints, want %d", len(got), tt.wantLen)
			}
			seen := map[framework.Endpoint]bool{}
			for _, e := range got {
				if seen[e] {
					t.Errorf("endpoint %s picked twice", e.Metadata().Name)
				}
				seen[e] = true
			}
		})
	}
}

// TestUniformIgnoringScores checks that scores do not matter and that every
// endpoint gets about its share.
func TestUniformIgnoringScores(t *testing.T) {
	p := plugintest.Build[*random.Picker](t, random.Factory, "", plugintest.NewHandle())
	cands := scored(100, 0, 0, 0)
	counts := map[string]int{}
	for i := 0; i < 4000; i++ {
		counts[p.Pick(t.Context(), nil, nil, cands)[0].Metadata().Name]++
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		if c := counts[name]; c < 800 || c > 1200 {
			t.Errorf("%s picked %d of 4000 times, want about 1000", name, c)
		}
	}
}

func TestSeedReproduces(t *testing.T) {
	run := func() []string {
		p := plugintest.Build[*random.Picker](t, random.Factory, `{"seed":3}`, plugintest.NewHandle())
		var out []string
		for i := 0; i < 20; i++ {
			out = append(out, p.Pick(t.Context(), nil, nil, scored(0, 0, 0, 0, 0))[0].Metadata().Name)
		}
		return out
	}
	if a, b := run(), run(); !cmp.Equal(a, b) {
		t.Errorf("same seed, different picks: %v vs %v", a, b)
	}
}

func TestFactoryValidates(t *testing.T) {
	for _, params := range []string{`{"count":0}`, `{"seed":-1}`, `{"x":1}`} {
		if _, err := random.Factory("r", []byte(params), plugintest.NewHandle()); err == nil {
			t.Errorf("params %s accepted", params)
		}
	}
}
