package health_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/health"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
)

func TestFilter(t *testing.T) {
	h := plugintest.NewHandle()
	now := h.Now()
	ep := func(name string, age time.Duration) *plugintest.Endpoint {
		var m framework.Metrics
		if age >= 0 {
			m.UpdateTime = now.Add(-age)
		}
		return plugintest.NewEndpoint(name).WithMetrics(m)
	}
	eps := []*plugintest.Endpoint{ep("fresh", 100*time.Millisecond), ep("edge", 5*time.Second), ep("stale", 6*time.Second), ep("unscraped", -1)}
	tests := []struct {
		params string
		want   []string
	}{
		{"", []string{"fresh", "edge", "unscraped"}},
		{`{"maxMetricsAge":"1s"}`, []string{"fresh", "unscraped"}},
		{`{"maxMetricsAge":"1m","dropUnscraped":true}`, []string{"fresh", "edge", "stale"}},
	}
	for _, tt := range tests {
		t.Run(tt.params, func(t *testing.T) {
			f := plugintest.Build[*health.Filter](t, health.Factory, tt.params, h)
			got := f.Filter(t.Context(), nil, nil, plugintest.Endpoints(eps...))
			if diff := cmp.Diff(tt.want, plugintest.Names(got)); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFilterFollowsTheHandleClock(t *testing.T) {
	h := plugintest.NewHandle()
	e := plugintest.NewEndpoint("e").WithMetrics(framework.Metrics{UpdateTime: h.Now()})
	f := plugintest.Build[*health.Filter](t, health.Factory, `{"maxMetricsAge":"2s"}`, h)
	if got := f.Filter(t.Context(), nil, nil, plugintest.Endpoints(e)); len(got) != 1 {
		t.Fatal("fresh endpoint removed")
	}
	h.Clock.Advance(3 * time.Second)
	if got := f.Filter(t.Context(), nil, nil, plugintest.Endpoints(e)); len(got) != 0 {
		t.Error("endpoint kept after its metrics went stale on the handle's clock")
	}
}

func TestFactoryValidates(t *testing.T) {
	for _, params := range []string{`{"maxMetricsAge":"soon"}`, `{"maxMetricsAge":"-1s"}`, `{"maxAge":"1s"}`} {
		if _, err := health.Factory("h", []byte(params), plugintest.NewHandle()); err == nil {
			t.Errorf("params %s accepted", params)
		}
	}
}
