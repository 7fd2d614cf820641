package kvutilization_test

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/kvutilization"
)

func ep(name string, usage float64) *plugintest.Endpoint {
	return plugintest.NewEndpoint(name).WithMetrics(framework.Metrics{KVCacheUsage: usage})
}

func TestScore(t *testing.T) {
	tests := []struct {
		name string
		eps  []*plugintest.Endpoint
		want []float64
	}{
		{"free cache scores", []*plugintest.Endpoint{ep("a", 0), ep("b", 0.25), ep("c", 1)}, []float64{1, 0.75, 0}},
		{"absolute, not normalised", []*plugintest.Endpoint{ep("a", 0.5), ep("b", 0.6)}, []float64{0.5, 0.4}},
		{"out of range is clamped", []*plugintest.Endpoint{ep("a", 1.5), ep("b", -1), ep("c", math.NaN())}, []float64{0, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := plugintest.Build[*kvutilization.Scorer](t, kvutilization.Factory, "", plugintest.NewHandle())
			got := plugintest.Score(s, nil, &framework.Request{}, plugintest.Endpoints(tt.eps...))
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateApprox(0, 1e-12)); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFactoryRejectsParams(t *testing.T) {
	if _, err := kvutilization.Factory("k", []byte(`{"threshold":0.8}`), plugintest.NewHandle()); err == nil {
		t.Error("unknown param accepted")
	}
}
