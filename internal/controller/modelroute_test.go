package controller

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	configv1alpha1 "github.com/halyard-dev/halyard/api/config/v1alpha1"
	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

func TestCheckRoute(t *testing.T) {
	tests := []struct {
		name, spec, wantErr string
	}{
		{name: "plain", spec: `{"model":"m","targets":[{"pool":"a"}]}`},
		{name: "exact header", spec: `{"model":"m","rules":[{"headers":[{"name":"x","value":"(("}],"targets":[{"pool":"a"}]}],"targets":[{"pool":"a"}]}`},
		{name: "good regex", spec: `{"model":"m","rules":[{"headers":[{"name":"x","value":"^v[0-9]+$","type":"RegularExpression"}],"targets":[{"pool":"a"}]}],"targets":[{"pool":"a"}]}`},
		{
			name:    "bad regex names the field",
			spec:    `{"model":"m","rules":[{"headers":[{"name":"x","value":"a"},{"name":"y","value":"((","type":"RegularExpression"}],"targets":[{"pool":"a"}]}],"targets":[{"pool":"a"}]}`,
			wantErr: "spec.rules[0].headers[1].value: invalid regular expression",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s servingv1.ModelRouteSpec
			if err := json.Unmarshal([]byte(tt.spec), &s); err != nil {
				t.Fatal(err)
			}
			err := CheckRoute(&s)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("CheckRoute() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestRoutePools(t *testing.T) {
	s := configv1alpha1.RouteSpec{
		Targets:  []configv1alpha1.TargetSpec{{Pool: "b"}, {Pool: "a"}},
		Fallback: []configv1alpha1.TargetSpec{{Pool: "ext"}},
		Rules:    []configv1alpha1.RouteRule{{Targets: []configv1alpha1.TargetSpec{{Pool: "a"}, {Pool: "canary"}}}},
	}
	if diff := cmp.Diff([]string{"a", "b", "canary", "ext"}, routePools(&s)); diff != "" {
		t.Errorf("routePools() (-want +got):\n%s", diff)
	}
}

// FuzzCheckRoute: any decodable route is checked without a panic, and an
// error always names a field path.
func FuzzCheckRoute(f *testing.F) {
	f.Add([]byte(`{"model":"m","rules":[{"headers":[{"name":"x","value":"((","type":"RegularExpression"}]}],"targets":[{"pool":"a"}]}`))
	f.Add([]byte(`{"model":"m","targets":[{"pool":"a","weight":3}],"endpoints":[{"url":"http://x","model":"m"}]}`))
	for _, base := range []string{`{"model":"m","targets":[{"pool":"a","weight":`, `{"model":"m","rules":[{"headers":[{"name":"x","type":"RegularExpression","value":`, `{"model":`} {
		for _, d := range fuzzseed.JSONDocuments(base) {
			f.Add(d)
		}
	}
	f.Add([]byte(`{"model":"m","rules":[{"headers":[{"name":"x","value":"` + strings.Repeat("(a*)*", 2000) + `","type":"RegularExpression"}]}],"targets":[{"pool":"a"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s servingv1.ModelRouteSpec
		if json.Unmarshal(b, &s) != nil {
			return
		}
		if err := CheckRoute(&s); err != nil && !strings.HasPrefix(err.Error(), "spec.") {
			t.Errorf("error without a field path: %v", err)
		}
		_ = routePools(&s.RouteSpec)
	})
}
