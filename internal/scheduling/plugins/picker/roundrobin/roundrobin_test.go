package roundrobin_test

import (
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/roundrobin"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
)

func scored(names ...string) []framework.ScoredEndpoint {
	out := make([]framework.ScoredEndpoint, len(names))
	for i, n := range names {
		out[i] = framework.ScoredEndpoint{Endpoint: plugintest.NewEndpoint(n), Score: float64(i)}
	}
	return out
}

func TestPickSequence(t *testing.T) {
	tests := []struct {
		name   string
		params string
		rounds [][]string // candidates of each pick, in arrival order
		want   [][]string
	}{
		{
			"turns by name whatever the order",
			"",
			[][]string{{"c", "a", "b"}, {"b", "c", "a"}, {"a", "b", "c"}, {"c", "b", "a"}},
			[][]string{{"a"}, {"b"}, {"c"}, {"a"}},
		},
		{
			"endpoint leaves and returns",
			"",
			[][]string{{"a", "b", "c"}, {"a", "c"}, {"a", "c"}, {"a", "b", "c"}},
			[][]string{{"a"}, {"c"}, {"a"}, {"b"}},
		},
		{
			"count takes the next ones in turn",
			`{"count":2}`,
			[][]string{{"c", "a", "b"}, {"b", "a", "c"}, {"a", "b", "c"}},
			[][]string{{"a", "b"}, {"b", "c"}, {"c", "a"}},
		},
		{
			"no candidates",
			"",
			[][]string{{}},
			[][]string{nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := plugintest.Build[*roundrobin.Picker](t, roundrobin.Factory, tt.params, plugintest.NewHandle())
			var got [][]string
			for _, r := range tt.rounds {
				picked := p.Pick(t.Context(), nil, nil, scored(r...))
				if len(picked) == 0 {
					got = append(got, nil)
					continue
				}
				got = append(got, plugintest.Names(picked))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("picks (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEvenUnderConcurrency(t *testing.T) {
	p := plugintest.Build[*roundrobin.Picker](t, roundrobin.Factory, "", plugintest.NewHandle())
	cands := scored("a", "b", "c", "d")
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 250; i++ {
				n := p.Pick(t.Context(), nil, nil, cands)[0].Metadata().Name
				mu.Lock()
				counts[n]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if diff := cmp.Diff(map[string]int{"a": 250, "b": 250, "c": 250, "d": 250}, counts); diff != "" {
		t.Errorf("1000 picks over 4 endpoints are not exactly even (-want +got):\n%s", diff)
	}
}

func TestFactoryValidates(t *testing.T) {
	for _, params := range []string{`{"count":0}`, `{"seed":1}`} {
		if _, err := roundrobin.Factory("r", []byte(params), plugintest.NewHandle()); err == nil {
			t.Errorf("params %s accepted", params)
		}
	}
}
