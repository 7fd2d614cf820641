package placement

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Weights of the preferred terms Halyard adds; the scheduler sums them per
// node, so the group's domain (when preferred) outweighs the pairing.
const (
	DomainWeight = 100
	PairWeight   = 50
)

// Pod says where one pod of a group should go.
type Pod struct {
	// TopologyKey is the node label that defines domains; empty: no
	// packing.
	TopologyKey string
	// Domain is the domain chosen for the group. When it is empty but
	// TopologyKey is set (no node carries the label yet, or the choice is
	// left to the scheduler), the pod is instead attracted to the other
	// pods of its group on TopologyKey.
	Domain string
	// Required makes the domain a hard constraint; otherwise a preference.
	Required bool
	// GroupLabels select every pod of the group.
	GroupLabels map[string]string
	// PairTopologyKey is a finer node label; the pods selected by
	// PairLabels (the same instance index in the other roles) prefer one
	// domain of it.
	PairTopologyKey string
	// PairLabels select the pod's pair partners.
	PairLabels map[string]string
}

// Affinity returns the affinity that places the pod, or nil when it needs
// none.
func Affinity(p Pod) *corev1.Affinity {
	a := &corev1.Affinity{}
	switch {
	case p.TopologyKey != "" && p.Domain != "":
		req := corev1.NodeSelectorRequirement{Key: p.TopologyKey, Operator: corev1.NodeSelectorOpIn, Values: []string{p.Domain}}
		a.NodeAffinity = &corev1.NodeAffinity{}
		if p.Required {
			a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{req}}},
			}
		} else {
			a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution = []corev1.PreferredSchedulingTerm{{
				Weight: DomainWeight, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{req}},
			}}
		}
	case p.TopologyKey != "" && len(p.GroupLabels) > 0:
		term := corev1.PodAffinityTerm{
			LabelSelector: &metav1.LabelSelector{MatchLabels: copyLabels(p.GroupLabels)},
			TopologyKey:   p.TopologyKey,
		}
		a.PodAffinity = &corev1.PodAffinity{}
		if p.Required {
			a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution = []corev1.PodAffinityTerm{term}
		} else {
			a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution = []corev1.WeightedPodAffinityTerm{{Weight: DomainWeight, PodAffinityTerm: term}}
		}
	}
	if p.PairTopologyKey != "" && len(p.PairLabels) > 0 {
		if a.PodAffinity == nil {
			a.PodAffinity = &corev1.PodAffinity{}
		}
		a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution,
			corev1.WeightedPodAffinityTerm{Weight: PairWeight, PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: copyLabels(p.PairLabels)},
				TopologyKey:   p.PairTopologyKey,
			}})
	}
	if a.NodeAffinity == nil && a.PodAffinity == nil {
		return nil
	}
	return a
}

// Merge combines the template's affinity with Halyard's. Required node
// terms are ANDed: Halyard's expressions join every term of the template
// (node selector terms are ORed, so each must carry them). Everything else
// is appended. Neither argument is modified.
func Merge(base, add *corev1.Affinity) *corev1.Affinity {
	if add == nil {
		if base == nil {
			return nil
		}
		return base.DeepCopy()
	}
	if base == nil {
		return add.DeepCopy()
	}
	out := base.DeepCopy()
	add = add.DeepCopy()
	if na := add.NodeAffinity; na != nil {
		if out.NodeAffinity == nil {
			out.NodeAffinity = &corev1.NodeAffinity{}
		}
		if r := na.RequiredDuringSchedulingIgnoredDuringExecution; r != nil {
			cur := out.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
			if cur == nil || len(cur.NodeSelectorTerms) == 0 {
				out.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = r
			} else {
				var exprs []corev1.NodeSelectorRequirement
				for _, t := range r.NodeSelectorTerms {
					exprs = append(exprs, t.MatchExpressions...)
				}
				for i := range cur.NodeSelectorTerms {
					cur.NodeSelectorTerms[i].MatchExpressions = append(cur.NodeSelectorTerms[i].MatchExpressions, exprs...)
				}
			}
		}
		out.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(out.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution, na.PreferredDuringSchedulingIgnoredDuringExecution...)
	}
	if pa := add.PodAffinity; pa != nil {
		if out.PodAffinity == nil {
			out.PodAffinity = &corev1.PodAffinity{}
		}
		out.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution = append(out.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution, pa.RequiredDuringSchedulingIgnoredDuringExecution...)
		out.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(out.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution, pa.PreferredDuringSchedulingIgnoredDuringExecution...)
	}
	if aa := add.PodAntiAffinity; aa != nil {
		if out.PodAntiAffinity == nil {
			out.PodAntiAffinity = &corev1.PodAntiAffinity{}
		}
		out.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution = append(out.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution, aa.RequiredDuringSchedulingIgnoredDuringExecution...)
		out.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution = append(out.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution, aa.PreferredDuringSchedulingIgnoredDuringExecution...)
	}
	return out
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
