package loraaffinity_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/loraaffinity"
)

func ep(name string, m framework.Metrics) *plugintest.Endpoint {
	return plugintest.NewEndpoint(name).WithMetrics(m)
}

func TestScore(t *testing.T) {
	eps := []*plugintest.Endpoint{
		ep("running", framework.Metrics{MaxLoRA: 2, RunningAdapters: []string{"x", "sql"}}),
		ep("waiting", framework.Metrics{MaxLoRA: 2, RunningAdapters: []string{"x", "y"}, WaitingAdapters: []string{"sql"}}),
		ep("room", framework.Metrics{MaxLoRA: 2, RunningAdapters: []string{"x"}}),
		ep("unknown", framework.Metrics{}),
		ep("full", framework.Metrics{MaxLoRA: 2, RunningAdapters: []string{"x", "y"}}),
	}
	tests := []struct {
		adapter string
		want    []float64
	}{
		{"sql", []float64{1, 0.8, 0.5, 0.5, 0}},
		{"x", []float64{1, 1, 1, 0.5, 1}},
		{"", []float64{1, 1, 1, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.adapter, func(t *testing.T) {
			s := plugintest.Build[*loraaffinity.Scorer](t, loraaffinity.Factory, "", plugintest.NewHandle())
			got := plugintest.Score(s, nil, &framework.Request{Adapter: tt.adapter}, plugintest.Endpoints(eps...))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFactoryRejectsParams(t *testing.T) {
	if _, err := loraaffinity.Factory("l", []byte(`{"running":1}`), plugintest.NewHandle()); err == nil {
		t.Error("unknown param accepted")
	}
}
