package leastrequest_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/leastrequest"
)

func ep(name string, inflight int64, waiting int) *plugintest.Endpoint {
	return plugintest.NewEndpoint(name).WithInFlight(inflight, 0).WithMetrics(framework.Metrics{WaitingRequests: waiting})
}

func TestScore(t *testing.T) {
	tests := []struct {
		name string
		eps  []*plugintest.Endpoint
		want []float64
	}{
		{"one endpoint", []*plugintest.Endpoint{ep("a", 3, 0)}, []float64{1}},
		{"all equal", []*plugintest.Endpoint{ep("a", 2, 0), ep("b", 2, 0)}, []float64{1, 1}},
		{"fewest wins, linear between", []*plugintest.Endpoint{ep("a", 8, 0), ep("b", 0, 0), ep("c", 2, 0)}, []float64{0, 1, 0.75}},
		{"scraped queues are ignored", []*plugintest.Endpoint{ep("a", 1, 100), ep("b", 2, 0)}, []float64{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := plugintest.Build[*leastrequest.Scorer](t, leastrequest.Factory, "", plugintest.NewHandle())
			got := plugintest.Score(s, nil, &framework.Request{}, plugintest.Endpoints(tt.eps...))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFactoryRejectsParams(t *testing.T) {
	if _, err := leastrequest.Factory("l", []byte(`{"x":1}`), plugintest.NewHandle()); err == nil {
		t.Error("unknown param accepted")
	}
}
