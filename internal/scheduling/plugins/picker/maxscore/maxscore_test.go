package maxscore_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
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
		name   string
		params string
		scores []float64
		want   []string
	}{
		{"no candidates", "", nil, nil},
		{"single best", "", []float64{0.2, 3, 1}, []string{"b"}},
		{"best despite order", "", []float64{5, 1, 4.9}, []string{"a"}},
		{"count returns best first", `{"count":2}`, []float64{1, 3, 2}, []string{"b", "c"}},
		{"count beyond candidates", `{"count":5}`, []float64{1, 3}, []string{"b", "a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := plugintest.Build[*maxscore.Picker](t, maxscore.Factory, tt.params, plugintest.NewHandle())
			got := p.Pick(t.Context(), nil, &framework.Request{}, scored(tt.scores...))
			if diff := cmp.Diff(tt.want, namesOrNil(got)); diff != "" {
				t.Errorf("picked (-want +got):\n%s", diff)
			}
		})
	}
}

func namesOrNil(eps []framework.Endpoint) []string {
	if len(eps) == 0 {
		return nil
	}
	return plugintest.Names(eps)
}

// TestTiesSpread checks that equal scores do not herd on one endpoint: over
// many picks among four tied endpoints (and one worse), each tied endpoint
// gets a fair share and the worse one none.
func TestTiesSpread(t *testing.T) {
	for _, params := range []string{"", `{"seed":7}`, `{"count":2}`} {
		t.Run(params, func(t *testing.T) {
			p := plugintest.Build[*maxscore.Picker](t, maxscore.Factory, params, plugintest.NewHandle())
			cands := scored(1, 1, 0.5, 1, 1)
			counts := map[string]int{}
			const n = 4000
			for i := 0; i < n; i++ {
				counts[p.Pick(t.Context(), nil, nil, cands)[0].Metadata().Name]++
			}
			if counts["c"] != 0 {
				t.Errorf("the worse endpoint was picked %d times", counts["c"])
			}
			for _, name := range []string{"a", "b", "d", "e"} {
				// Fair share is n/4 = 1000; a binomial sd is about 27.
				if c := counts[name]; c < 800 || c > 1200 {
					t.Errorf("tied endpoint %s picked %d of %d times, want about %d", name, c, n, n/4)
				}
			}
		})
	}
}

func TestSeedReproduces(t *testing.T) {
	run := func() []string {
		p := plugintest.Build[*maxscore.Picker](t, maxscore.Factory, `{"seed":42}`, plugintest.NewHandle())
		var out []string
		for i := 0; i < 20; i++ {
			out = append(out, p.Pick(t.Context(), nil, nil, scored(1, 1, 1, 1))[0].Metadata().Name)
		}
		return out
	}
	if a, b := run(), run(); !cmp.Equal(a, b) {
		t.Errorf("same seed, different picks: %v vs %v", a, b)
	}
}

func TestFactoryValidates(t *testing.T) {
	for _, params := range []string{`{"count":0}`, `{"count":-1}`, `{"cnt":1}`, `{"count":"1"}`} {
		if _, err := maxscore.Factory("m", []byte(params), plugintest.NewHandle()); err == nil {
			t.Errorf("params %s accepted", params)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	p, _ := maxscore.New("m", maxscore.Params{Count: 1})
	cands := scored(make([]float64, 100)...)
	for i := range cands {
		cands[i].Score = float64(i % 7)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Pick(b.Context(), nil, nil, cands)
	}
}
