package k8s

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// TestAutoscalingSpecValidation checks spec.autoscaling's CEL rules and
// bounds on the real API server (dry runs: nothing is stored).
func TestAutoscalingSpecValidation(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "autoscaling-cel")
	valid := func() *servingv1.AutoscalingSpec {
		return &servingv1.AutoscalingSpec{
			MinGroups: ptr.To[int32](0), MaxGroups: 4,
			Targets:      &servingv1.AutoscalingTargets{WaitingPerEngine: ptr.To[int32](4), KVUsagePercent: ptr.To[int32](70)},
			StableWindow: &metav1.Duration{Duration: time.Minute},
			PanicWindow:  &metav1.Duration{Duration: 6 * time.Second},
		}
	}
	pd := func() *servingv1.AutoscalingPD {
		return &servingv1.AutoscalingPD{
			Prefill:         servingv1.AutoscalingTargets{PrefillTokensPerEngine: ptr.To[int32](8000)},
			Decode:          servingv1.AutoscalingTargets{KVUsagePercent: ptr.To[int32](70)},
			MinRatioPercent: ptr.To[int32](50), MaxRatioPercent: ptr.To[int32](200),
		}
	}
	tests := []struct {
		name   string
		mutate func(*servingv1.ModelServing)
		want   string // "" = accepted
	}{
		{"valid with targets", func(*servingv1.ModelServing) {}, ""},
		{"valid with pd", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.Targets, m.Spec.Autoscaling.PD = nil, pd() }, ""},
		{"min above max", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.MinGroups = ptr.To[int32](5) }, "minGroups must not exceed maxGroups"},
		{"max 0", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.MaxGroups = 0 }, "spec.autoscaling.maxGroups"},
		{"no load target", func(m *servingv1.ModelServing) {
			m.Spec.Autoscaling.Targets = &servingv1.AutoscalingTargets{AttainmentPercent: ptr.To[int32](95)}
		}, "at least one of waitingPerEngine"},
		{"kv above 100", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.Targets.KVUsagePercent = ptr.To[int32](120) }, "kvUsagePercent"},
		{"panic window beyond stable", func(m *servingv1.ModelServing) {
			m.Spec.Autoscaling.PanicWindow = &metav1.Duration{Duration: 2 * time.Minute}
		}, "panicWindow must not exceed stableWindow"},
		{"targets and pd", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.PD = pd() }, "give either targets or pd"},
		{"neither targets nor pd", func(m *servingv1.ModelServing) { m.Spec.Autoscaling.Targets = nil }, "give either targets or pd"},
		{"pd ratio inverted", func(m *servingv1.ModelServing) {
			m.Spec.Autoscaling.Targets, m.Spec.Autoscaling.PD = nil, pd()
			m.Spec.Autoscaling.PD.MinRatioPercent = ptr.To[int32](300)
		}, "minRatioPercent must not exceed maxRatioPercent"},
		{"pd without prefill and decode roles", func(m *servingv1.ModelServing) {
			m.Spec.Autoscaling.Targets, m.Spec.Autoscaling.PD = nil, pd()
			m.Spec.Roles = m.Spec.Roles[:1]
			m.Spec.Roles[0].Name = "worker"
		}, "autoscaling.pd needs roles named prefill and decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := pdServing(ns, "scaled", 1)
			ms.Spec.Autoscaling = valid()
			tt.mutate(ms)
			err := k.c.Create(context.Background(), ms, client.DryRunAll)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("create (dry run): %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("create succeeded, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}
