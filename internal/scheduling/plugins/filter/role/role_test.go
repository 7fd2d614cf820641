package role_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/role"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
)

func TestFilter(t *testing.T) {
	eps := []*plugintest.Endpoint{
		plugintest.NewEndpoint("p").WithRole(framework.RolePrefill),
		plugintest.NewEndpoint("d").WithRole(framework.RoleDecode),
		plugintest.NewEndpoint("b").WithRole(framework.RoleBoth),
		plugintest.NewEndpoint("unset").WithRole(""),
	}
	tests := []struct {
		params string
		want   []string
	}{
		{`{"role":"prefill"}`, []string{"p", "b", "unset"}},
		{`{"role":"decode"}`, []string{"d", "b", "unset"}},
		{`{"role":"both"}`, []string{"b", "unset"}},
	}
	for _, tt := range tests {
		t.Run(tt.params, func(t *testing.T) {
			f := plugintest.Build[*role.Filter](t, role.Factory, tt.params, plugintest.NewHandle())
			got := f.Filter(t.Context(), nil, nil, plugintest.Endpoints(eps...))
			if diff := cmp.Diff(tt.want, plugintest.Names(got)); diff != "" {
				t.Errorf("kept (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFactoryValidates(t *testing.T) {
	tests := []struct{ params, want string }{
		{``, `params.role: must be prefill, decode or both, got ""`},
		{`{"role":"encode"}`, `params.role: must be prefill, decode or both, got "encode"`},
		{`{"role":"prefill","extra":1}`, `params: json: unknown field "extra"`},
	}
	for _, tt := range tests {
		_, err := role.Factory("r", []byte(tt.params), plugintest.NewHandle())
		if err == nil || err.Error() != tt.want {
			t.Errorf("Factory(%s) error = %v, want %q", tt.params, err, tt.want)
		}
	}
}
