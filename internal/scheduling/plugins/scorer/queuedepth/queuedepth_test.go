package queuedepth_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/queuedepth"
)

func ep(name string, waiting int, inflight int64) *plugintest.Endpoint {
	return plugintest.NewEndpoint(name).WithMetrics(framework.Metrics{WaitingRequests: waiting}).WithInFlight(inflight, 0)
}

func TestScore(t *testing.T) {
	tests := []struct {
		name string
		eps  []*plugintest.Endpoint
		want []float64
	}{
		{"one endpoint", []*plugintest.Endpoint{ep("a", 5, 1)}, []float64{1}},
		{"all equal", []*plugintest.Endpoint{ep("a", 2, 0), ep("b", 0, 2), ep("c", 1, 1)}, []float64{1, 1, 1}},
		{"linear between shallowest and deepest", []*plugintest.Endpoint{ep("a", 0, 0), ep("b", 4, 0), ep("c", 6, 2)}, []float64{1, 0.5, 0}},
		{"in-flight counts before the next scrape", []*plugintest.Endpoint{ep("a", 0, 3), ep("b", 0, 0)}, []float64{0, 1}},
		{"engine queue counts for other routers' load", []*plugintest.Endpoint{ep("a", 10, 0), ep("b", 0, 5)}, []float64{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := plugintest.Build[*queuedepth.Scorer](t, queuedepth.Factory, "", plugintest.NewHandle())
			got := plugintest.Score(s, framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(tt.eps...))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFactoryRejectsParams(t *testing.T) {
	if _, err := queuedepth.Factory("q", []byte(`{"weight":2}`), plugintest.NewHandle()); err == nil {
		t.Error("unknown param accepted")
	}
	s, err := queuedepth.Factory("q", []byte(`{}`), plugintest.NewHandle())
	if err != nil || s.TypedName() != (framework.TypedName{Type: queuedepth.Type, Name: "q"}) {
		t.Errorf("Factory = %v, %v", s, err)
	}
}

func TestEngineOnlyIgnoresInFlight(t *testing.T) {
	s := plugintest.Build[*queuedepth.Scorer](t, queuedepth.Factory, `{"engineOnly":true}`, plugintest.NewHandle())
	// a has 3 requests in flight from this router that the last scrape has
	// not seen: an engine-only queue score cannot tell, so both score 1.
	got := plugintest.Score(s, framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(ep("a", 0, 3), ep("b", 0, 0)))
	if diff := cmp.Diff([]float64{1, 1}, got); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
	got = plugintest.Score(s, framework.NewCycleState(), &framework.Request{}, plugintest.Endpoints(ep("a", 4, 0), ep("b", 0, 9)))
	if diff := cmp.Diff([]float64{0, 1}, got); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
}
