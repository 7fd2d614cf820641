package loracapable_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/loracapable"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
)

func TestFilter(t *testing.T) {
	eps := []*plugintest.Endpoint{
		plugintest.NewEndpoint("declared").WithAdapters("sql", "chat"),
		plugintest.NewEndpoint("running").WithMetrics(framework.Metrics{RunningAdapters: []string{"sql"}}),
		plugintest.NewEndpoint("waiting").WithMetrics(framework.Metrics{WaitingAdapters: []string{"sql"}}),
		plugintest.NewEndpoint("other").WithAdapters("chat"),
		plugintest.NewEndpoint("plain"),
	}
	tests := []struct {
		adapter string
		want    []string
	}{
		{"", []string{"declared", "running", "waiting", "other", "plain"}},
		{"sql", []string{"declared", "running", "waiting"}},
		{"chat", []string{"declared", "other"}},
		{"unknown", nil},
	}
	for _, tt := range tests {
		t.Run(tt.adapter, func(t *testing.T) {
			f := plugintest.Build[*loracapable.Filter](t, loracapable.Factory, "", plugintest.NewHandle())
			got := f.Filter(t.Context(), nil, &framework.Request{Adapter: tt.adapter}, plugintest.Endpoints(eps...))
			names := plugintest.Names(got)
			if len(names) == 0 {
				names = nil
			}
			if diff := cmp.Diff(tt.want, names); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFactoryRejectsParams(t *testing.T) {
	if _, err := loracapable.Factory("l", []byte(`{"adapter":"x"}`), plugintest.NewHandle()); err == nil {
		t.Error("unknown param accepted")
	}
}
