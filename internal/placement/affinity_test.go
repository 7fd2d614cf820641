package placement

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestAffinity(t *testing.T) {
	group := map[string]string{"serving.halyard.dev/model-serving": "m", "serving.halyard.dev/group": "0"}
	pair := map[string]string{"serving.halyard.dev/model-serving": "m", "serving.halyard.dev/group": "0", "serving.halyard.dev/instance": "1"}
	inZoneA := corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: zone, Operator: corev1.NodeSelectorOpIn, Values: []string{"zone-a"}}}}
	pairTerm := corev1.WeightedPodAffinityTerm{Weight: PairWeight, PodAffinityTerm: corev1.PodAffinityTerm{
		LabelSelector: &metav1.LabelSelector{MatchLabels: pair}, TopologyKey: "kubernetes.io/hostname",
	}}
	tests := []struct {
		name string
		pod  Pod
		want *corev1.Affinity
	}{
		{name: "no topology: no affinity", pod: Pod{GroupLabels: group}, want: nil},
		{
			name: "required domain",
			pod:  Pod{TopologyKey: zone, Domain: "zone-a", Required: true, GroupLabels: group},
			want: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{inZoneA}},
			}},
		},
		{
			name: "preferred domain",
			pod:  Pod{TopologyKey: zone, Domain: "zone-a", GroupLabels: group},
			want: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: DomainWeight, Preference: inZoneA}},
			}},
		},
		{
			name: "no domain chosen: follow the group",
			pod:  Pod{TopologyKey: zone, Required: true, GroupLabels: group},
			want: &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
					LabelSelector: &metav1.LabelSelector{MatchLabels: group}, TopologyKey: zone,
				}},
			}},
		},
		{
			name: "pairing alone",
			pod:  Pod{PairTopologyKey: "kubernetes.io/hostname", PairLabels: pair},
			want: &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
				PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{pairTerm},
			}},
		},
		{
			name: "domain and pairing",
			pod:  Pod{TopologyKey: zone, Domain: "zone-a", Required: true, GroupLabels: group, PairTopologyKey: "kubernetes.io/hostname", PairLabels: pair},
			want: &corev1.Affinity{
				NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{inZoneA}}},
				PodAffinity:  &corev1.PodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{pairTerm}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Affinity(tt.pod)); diff != "" {
				t.Errorf("Affinity() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	gpu := corev1.NodeSelectorRequirement{Key: "gpu", Operator: corev1.NodeSelectorOpExists}
	h100 := corev1.NodeSelectorRequirement{Key: "model", Operator: corev1.NodeSelectorOpIn, Values: []string{"h100"}}
	inZoneA := corev1.NodeSelectorRequirement{Key: zone, Operator: corev1.NodeSelectorOpIn, Values: []string{"zone-a"}}
	ours := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{inZoneA}}},
	}}}
	anti := &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: "x"}}}}
	tests := []struct {
		name      string
		base, add *corev1.Affinity
		want      *corev1.Affinity
	}{
		{name: "both nil", want: nil},
		{name: "only ours", add: ours, want: ours},
		{name: "only the template's", base: &corev1.Affinity{PodAntiAffinity: anti}, want: &corev1.Affinity{PodAntiAffinity: anti}},
		{
			name: "required terms are ANDed into every template term",
			base: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{gpu}}, {MatchExpressions: []corev1.NodeSelectorRequirement{h100}}},
			}}, PodAntiAffinity: anti},
			add: ours,
			want: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{
					{MatchExpressions: []corev1.NodeSelectorRequirement{gpu, inZoneA}},
					{MatchExpressions: []corev1.NodeSelectorRequirement{h100, inZoneA}},
				},
			}}, PodAntiAffinity: anti},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before *corev1.Affinity
			if tt.base != nil {
				before = tt.base.DeepCopy()
			}
			if diff := cmp.Diff(tt.want, Merge(tt.base, tt.add)); diff != "" {
				t.Errorf("Merge() mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, tt.base); diff != "" {
				t.Errorf("Merge() modified its argument (-before +after):\n%s", diff)
			}
		})
	}
}
