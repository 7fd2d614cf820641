package controller

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// PodGroupGVK is Volcano's PodGroup; Halyard writes it as an unstructured
// object, so it needs no Volcano dependency.
var PodGroupGVK = schema.GroupVersionKind{Group: "scheduling.volcano.sh", Version: "v1beta1", Kind: "PodGroup"}

// VolcanoDetector reports whether the PodGroup CRD is served, asking
// discovery at most once per TTL.
type VolcanoDetector struct {
	Discovery discovery.DiscoveryInterface
	TTL       time.Duration
	Now       func() time.Time

	mu      sync.Mutex
	checked time.Time
	present bool
}

// Present reports whether scheduling.volcano.sh/v1beta1 serves podgroups.
func (d *VolcanoDetector) Present(context.Context) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.Now()
	if !d.checked.IsZero() && now.Sub(d.checked) < d.TTL {
		return d.present
	}
	d.checked = now
	d.present = false
	list, err := d.Discovery.ServerResourcesForGroupVersion(PodGroupGVK.GroupVersion().String())
	if err != nil {
		return false
	}
	for _, r := range list.APIResources {
		if r.Name == "podgroups" {
			d.present = true
		}
	}
	return d.present
}

// buildPodGroup renders the Volcano PodGroup of one group: minMember is the
// whole group (all or nothing), one subGroupPolicy per role whose subgroups
// are the role's instances (a leader and its workers), and a network
// topology constraint when the group is packed.
func buildPodGroup(ms *servingv1.ModelServing, group int32, required bool) *unstructured.Unstructured {
	total := int64(0)
	var subs []any
	for _, r := range ms.Spec.Roles {
		size := int64(r.Workers) + 1
		total += size * int64(roleReplicas(r))
		subs = append(subs, map[string]any{
			"name":         r.Name,
			"subGroupSize": size,
			"minSubGroups": int64(roleReplicas(r)),
			"labelSelector": map[string]any{"matchLabels": map[string]any{
				servingv1.LabelModelServing: ms.Name,
				servingv1.LabelGroup:        itoa(group),
				servingv1.LabelRole:         r.Name,
			}},
			"matchLabelKeys": []any{servingv1.LabelInstance},
		})
	}
	spec := map[string]any{"minMember": total, "subGroupPolicy": subs}
	v := ms.Spec.Placement.Volcano
	if v != nil && v.Queue != "" {
		spec["queue"] = v.Queue
	}
	if ms.Spec.Placement.TopologyKey != "" || (v != nil && v.HighestTierAllowed != nil) {
		tier := int64(1)
		if v != nil && v.HighestTierAllowed != nil {
			tier = int64(*v.HighestTierAllowed)
		}
		mode := "hard"
		if !required {
			mode = "soft"
		}
		spec["networkTopology"] = map[string]any{"mode": mode, "highestTierAllowed": tier}
	}
	u := &unstructured.Unstructured{Object: map[string]any{"spec": spec}}
	u.SetGroupVersionKind(PodGroupGVK)
	u.SetName(podGroupName(ms.Name, group))
	u.SetNamespace(ms.Namespace)
	u.SetLabels(groupLabels(ms.Name, group))
	return u
}
