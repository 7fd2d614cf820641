package ejection_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/ejection"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
)

// ejectedEndpoint is a test endpoint its host has ejected until a time.
type ejectedEndpoint struct {
	*plugintest.Endpoint
	until time.Time
}

func (e ejectedEndpoint) Ejected(now time.Time) bool { return now.Before(e.until) }

func TestFilter(t *testing.T) {
	h := plugintest.NewHandle()
	now := h.Now()
	ej := func(name string) framework.Endpoint {
		return ejectedEndpoint{Endpoint: plugintest.NewEndpoint(name), until: now.Add(time.Second)}
	}
	past := func(name string) framework.Endpoint {
		return ejectedEndpoint{Endpoint: plugintest.NewEndpoint(name), until: now.Add(-time.Second)}
	}
	plain := func(name string) framework.Endpoint { return plugintest.NewEndpoint(name) }
	tests := []struct {
		name string
		in   []framework.Endpoint
		want []string
	}{
		{"none ejected", []framework.Endpoint{plain("a"), past("b")}, []string{"a", "b"}},
		{"one ejected", []framework.Endpoint{ej("a"), plain("b"), past("c")}, []string{"b", "c"}},
		{"all ejected keeps all", []framework.Endpoint{ej("a"), ej("b")}, []string{"a", "b"}},
		{"empty", nil, nil},
	}
	f := ejection.New("e", h)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range f.Filter(context.Background(), nil, &framework.Request{}, tt.in) {
				got = append(got, e.Metadata().Name)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
		})
	}
	if r := f.Reason(nil, ej("a")); r != "ejected after consecutive 5xx" {
		t.Errorf("Reason = %q", r)
	}
	if _, err := ejection.Factory("e", []byte(`{"x":1}`), h); err == nil {
		t.Error("Factory accepted unknown params")
	}
}
