package discovery

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

func mroute(ns, name string, age time.Duration, model string, pools ...string) servingv1.ModelRoute {
	mr := servingv1.ModelRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		CreationTimestamp: metav1.NewTime(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).Add(-age))}}
	mr.Spec.Model = model
	for _, p := range pools {
		mr.Spec.Targets = append(mr.Spec.Targets, config.TargetSpec{Pool: p})
	}
	return mr
}

func TestResolveModelRoutes(t *testing.T) {
	withEndpoint := mroute("team-a", "qwen", time.Hour, "qwen", "hosted", "qwen-ms")
	withEndpoint.Spec.Fallback = []config.TargetSpec{{Pool: "spare"}}
	withEndpoint.Spec.Rules = []config.RouteRule{{Headers: []config.HeaderMatch{{Name: "x-canary", Value: "1"}}, Targets: []config.TargetSpec{{Pool: "hosted"}}}}
	withEndpoint.Spec.Endpoints = []config.EndpointSpec{{URL: "http://10.0.0.1:8000/", Model: "qwen3-8b", Pool: "hosted", Labels: map[string]string{"zone": "a"}}}
	badRegexp := mroute("team-a", "bad", 2*time.Hour, "bad", "x")
	badRegexp.Spec.Rules = []config.RouteRule{{Headers: []config.HeaderMatch{{Name: "x", Value: "(", Type: "RegularExpression"}}, Targets: []config.TargetSpec{{Pool: "x"}}}}
	badURL := mroute("team-a", "badurl", time.Hour, "badurl", "x")
	badURL.Spec.Endpoints = []config.EndpointSpec{{URL: "ftp://h", Model: "m"}}

	got := ResolveModelRoutes([]servingv1.ModelRoute{
		mroute("team-b", "llama-new", time.Minute, "llama", "llama"), // younger: loses
		withEndpoint,
		mroute("team-a", "llama-old", time.Hour, "llama", "llama"),
		badRegexp,
		badURL,
		mroute("team-a", "twin", time.Hour, "llama", "other"), // same age as llama-old, later name: loses
	})
	want := RouteSet{
		Routes: []Route{
			{Origin: "ModelRoute team-a/llama-old", Spec: config.RouteSpec{Model: "llama", Targets: []config.TargetSpec{{Pool: "team-a/llama"}}}},
			{Origin: "ModelRoute team-a/qwen", Spec: config.RouteSpec{
				Model:    "qwen",
				Targets:  []config.TargetSpec{{Pool: "team-a/hosted"}, {Pool: "team-a/qwen-ms"}},
				Fallback: []config.TargetSpec{{Pool: "team-a/spare"}},
				Rules:    []config.RouteRule{{Headers: []config.HeaderMatch{{Name: "x-canary", Value: "1"}}, Targets: []config.TargetSpec{{Pool: "team-a/hosted"}}}},
			}},
		},
		Endpoints: []datastore.EndpointSpec{{Pool: "team-a/hosted", Metadata: framework.EndpointMetadata{
			Name: "team-a/qwen/10.0.0.1:8000", Address: "http://10.0.0.1:8000", Model: "qwen3-8b", Role: framework.RoleBoth, Labels: map[string]string{"zone": "a"},
		}}},
		Skipped: []SkippedRoute{
			{Origin: "ModelRoute team-a/bad", Model: "bad", Reason: SkipInvalid, Message: "spec.rules[0].headers[0].value: invalid regular expression: error parsing regexp: missing closing ): `(`"},
			{Origin: "ModelRoute team-a/badurl", Model: "badurl", Reason: SkipInvalid, Message: `spec.endpoints[0].url: must be an http or https URL, got "ftp://h"`},
			{Origin: "ModelRoute team-a/twin", Model: "llama", Reason: SkipConflict, Message: `model "llama" is routed by the older ModelRoute team-a/llama-old`},
			{Origin: "ModelRoute team-b/llama-new", Model: "llama", Reason: SkipConflict, Message: `model "llama" is routed by the older ModelRoute team-a/llama-old`},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ResolveModelRoutes (-want +got):\n%s", diff)
	}
	// The input is not modified (pools stay bare in the objects).
	if withEndpoint.Spec.Targets[0].Pool != "hosted" || withEndpoint.Spec.Endpoints[0].Pool != "hosted" {
		t.Errorf("input modified: %+v", withEndpoint.Spec)
	}
}

func TestResolveModelRoutesEmpty(t *testing.T) {
	got := ResolveModelRoutes(nil)
	if diff := cmp.Diff(RouteSet{Routes: []Route{}, Endpoints: []datastore.EndpointSpec{}}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
