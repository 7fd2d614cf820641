package controller

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
)

func TestActiveGroups(t *testing.T) {
	for _, tt := range []struct {
		replicas int32
		retired  []int32
		want     []int32
	}{
		{0, nil, []int32{}},
		{3, nil, []int32{0, 1, 2}},
		{3, []int32{1}, []int32{0, 2, 3}},
		{2, []int32{0, 1, 5}, []int32{2, 3}},
	} {
		if got := ActiveGroups(tt.replicas, tt.retired); !slices.Equal(got, tt.want) {
			t.Errorf("ActiveGroups(%d, %v) = %v, want %v", tt.replicas, tt.retired, got, tt.want)
		}
	}
}

// planScale: the victim is the group whose cache is worth least, not the
// highest index; it drains until the routers report it drained with
// nothing in flight (or grace), then is retired; scaling up cancels drains
// before taking retired indices back.
func TestPlanScale(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	grace := 5 * time.Minute
	ms := func(replicas int32, retired ...int32) *servingv1.ModelServing {
		m := &servingv1.ModelServing{}
		m.Spec.Replicas = ptr.To(replicas)
		m.Spec.RetiredGroups = retired
		return m
	}
	hot := func(v float64, blocks ...uint64) map[uint64]float64 {
		m := map[uint64]float64{}
		for _, b := range blocks {
			m[b] = v
		}
		return m
	}
	// Group 1 holds nothing unique; 0 and 2 hold hot blocks of their own.
	eps := []autoscale.EndpointLoad{
		{Name: "e0", Group: "0", Hot: hot(5, 1, 2, 3)},
		{Name: "e1", Group: "1", Hot: hot(9, 1)},
		{Name: "e2", Group: "2", Hot: hot(5, 7, 8)},
	}
	drain := func(idx int32, since time.Time) []servingv1.DrainingGroup {
		return []servingv1.DrainingGroup{{Index: idx, Since: metav1.NewTime(since)}}
	}

	t.Run("cold group drains first", func(t *testing.T) {
		p := planScale(ms(3), 2, nil, eps, nil, now, grace)
		if !slices.Equal(p.annotate, []int32{1}) || p.replicas != 3 || len(p.draining) != 1 || p.draining[0].Index != 1 {
			t.Fatalf("plan %+v, want group 1 draining and replicas still 3", p)
		}
	})
	t.Run("without ledgers the newest drains", func(t *testing.T) {
		p := planScale(ms(3), 2, nil, nil, errors.New("no routers"), now, grace)
		if !slices.Equal(p.annotate, []int32{2}) {
			t.Fatalf("annotate %v, want [2]", p.annotate)
		}
	})
	t.Run("in flight keeps it", func(t *testing.T) {
		busy := slices.Clone(eps)
		busy[1].Draining, busy[1].InFlight = true, 2
		p := planScale(ms(3), 2, drain(1, now.Add(-time.Minute)), busy, nil, now, grace)
		if p.replicas != 3 || len(p.draining) != 1 || len(p.annotate) != 0 {
			t.Fatalf("plan %+v, want the drain to go on", p)
		}
	})
	t.Run("a router still sending keeps it", func(t *testing.T) {
		p := planScale(ms(3), 2, drain(1, now.Add(-time.Minute)), eps, nil, now, grace)
		if p.replicas != 3 {
			t.Fatalf("replicas %d: retired while a router does not drain it", p.replicas)
		}
	})
	t.Run("drained is retired", func(t *testing.T) {
		done := slices.Clone(eps)
		done[1].Draining = true
		p := planScale(ms(3), 2, drain(1, now.Add(-time.Minute)), done, nil, now, grace)
		if p.replicas != 2 || !slices.Equal(p.retired, []int32{1}) || len(p.draining) != 0 {
			t.Fatalf("plan %+v, want replicas 2 retired [1]", p)
		}
		if got := ActiveGroups(p.replicas, p.retired); !slices.Equal(got, []int32{0, 2}) {
			t.Errorf("groups %v, want [0 2]", got)
		}
	})
	t.Run("grace over", func(t *testing.T) {
		p := planScale(ms(3), 2, drain(1, now.Add(-grace)), nil, errors.New("down"), now, grace)
		if p.replicas != 2 || !slices.Equal(p.retired, []int32{1}) {
			t.Fatalf("plan %+v, want retired at grace", p)
		}
	})
	t.Run("scale up cancels the drain", func(t *testing.T) {
		p := planScale(ms(3), 3, drain(1, now), eps, nil, now, grace)
		if !slices.Equal(p.undrain, []int32{1}) || p.replicas != 3 || len(p.draining) != 0 {
			t.Fatalf("plan %+v, want group 1 kept", p)
		}
	})
	t.Run("scale up takes retired indices back", func(t *testing.T) {
		p := planScale(ms(2, 1), 4, nil, nil, nil, now, grace)
		if p.replicas != 4 || len(p.retired) != 0 {
			t.Fatalf("plan %+v, want 4 groups, none retired", p)
		}
		if got := ActiveGroups(p.replicas, p.retired); !slices.Equal(got, []int32{0, 1, 2, 3}) {
			t.Errorf("groups %v", got)
		}
	})
	t.Run("retired above the top is dropped", func(t *testing.T) {
		done := []autoscale.EndpointLoad{{Name: "e3", Group: "3", Draining: true}}
		p := planScale(ms(3, 1), 2, drain(3, now.Add(-time.Second)), done, nil, now, grace)
		if p.replicas != 2 || !slices.Equal(p.retired, []int32{1}) {
			t.Fatalf("plan %+v, want replicas 2 retired [1] (3 implicit)", p)
		}
	})
}

// planRoles: growing a role is written at once; shrinking drains the
// highest instances first and lowers replicas only once the routers report
// them drained with nothing in flight (or at grace).
func TestPlanRoles(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	grace := 5 * time.Minute
	ms := &servingv1.ModelServing{}
	ms.Namespace = "ns"
	ms.Spec.Roles = []servingv1.RoleSpec{{Name: "prefill", Replicas: 2}, {Name: "decode", Replicas: 2}}
	pod := func(role string, inst int, drain string) corev1.Pod {
		p := corev1.Pod{}
		p.Namespace, p.Name = "ns", fmt.Sprintf("m-0-%s-%d", role, inst)
		p.Labels = map[string]string{servingv1.LabelRole: role, servingv1.LabelInstance: strconv.Itoa(inst)}
		if drain != "" {
			p.Annotations = map[string]string{servingv1.AnnotationDraining: drain}
		}
		return p
	}
	get := func(rs []roleScale, role string) roleScale {
		for _, r := range rs {
			if r.role == role {
				return r
			}
		}
		t.Fatalf("no plan for %s in %+v", role, rs)
		return roleScale{}
	}
	since := roleDrainPrefix + now.Add(-time.Minute).UTC().Format(time.RFC3339)

	// prefill 2 → 3 at once; decode 2 → 1 begins with a drain of decode-1.
	pods := []corev1.Pod{pod("prefill", 0, ""), pod("prefill", 1, ""), pod("decode", 0, ""), pod("decode", 1, "")}
	rs := planRoles(ms, pods, []int32{0}, autoscale.Decision{Prefill: 3, Decode: 1}, nil, nil, now, grace)
	if p := get(rs, "prefill"); p.replicas != 3 {
		t.Errorf("prefill replicas %d, want 3", p.replicas)
	}
	if d := get(rs, "decode"); d.replicas != 2 || len(d.annotate) != 1 || d.annotate[0].Name != "m-0-decode-1" {
		t.Errorf("decode %+v, want replicas 2 and decode-1 to drain", d)
	}
	// Draining with a request in flight: kept.
	pods[3] = pod("decode", 1, since)
	busy := []autoscale.EndpointLoad{{Name: "ns/m-0-decode-1", Draining: true, InFlight: 1}}
	if d := get(planRoles(ms, pods, []int32{0}, autoscale.Decision{Prefill: 2, Decode: 1}, busy, nil, now, grace), "decode"); d.replicas != 2 {
		t.Errorf("decode replicas %d with a request in flight, want 2", d.replicas)
	}
	// Drained: lowered.
	busy[0].InFlight = 0
	if d := get(planRoles(ms, pods, []int32{0}, autoscale.Decision{Prefill: 2, Decode: 1}, busy, nil, now, grace), "decode"); d.replicas != 1 {
		t.Errorf("decode replicas %d once drained, want 1", d.replicas)
	}
	// Demand back: the drain is cancelled.
	if d := get(planRoles(ms, pods, []int32{0}, autoscale.Decision{Prefill: 2, Decode: 2}, busy, nil, now, grace), "decode"); d.replicas != 2 || len(d.undrain) != 1 {
		t.Errorf("decode %+v, want replicas 2 and decode-1 back", d)
	}

	// Under a pd policy with prefill:decode in [1, 2], a role whose drain
	// ends first is held while the other's runs: both 2 → 1, prefill-1
	// drained, decode-1 with a request in flight.
	ms.Spec.Autoscaling = &servingv1.AutoscalingSpec{PD: &servingv1.AutoscalingPD{MinRatioPercent: ptr.To[int32](100), MaxRatioPercent: ptr.To[int32](200)}}
	pods = []corev1.Pod{pod("prefill", 0, ""), pod("prefill", 1, since), pod("decode", 0, ""), pod("decode", 1, since)}
	eps := []autoscale.EndpointLoad{{Name: "ns/m-0-prefill-1", Draining: true}, {Name: "ns/m-0-decode-1", Draining: true, InFlight: 1}}
	rs = planRoles(ms, pods, []int32{0}, autoscale.Decision{Prefill: 1, Decode: 1}, eps, nil, now, grace)
	if p, d := get(rs, "prefill"), get(rs, "decode"); p.replicas != 2 || d.replicas != 2 {
		t.Errorf("prefill %d decode %d while decode drains, want 2 and 2 (1:2 is below the 1:1 minimum)", p.replicas, d.replicas)
	}
	// Both drained: both lowered in one decision.
	eps[1].InFlight = 0
	rs = planRoles(ms, pods, []int32{0}, autoscale.Decision{Prefill: 1, Decode: 1}, eps, nil, now, grace)
	if p, d := get(rs, "prefill"), get(rs, "decode"); p.replicas != 1 || d.replicas != 1 {
		t.Errorf("prefill %d decode %d once both drained, want 1 and 1", p.replicas, d.replicas)
	}
	// The mirror: decode drained, prefill 4 → 2 still draining, decode
	// 2 → 1 would make 4:1 above the 2:1 maximum: decode held at 2.
	ms.Spec.Roles = []servingv1.RoleSpec{{Name: "prefill", Replicas: 4}, {Name: "decode", Replicas: 2}}
	pods = []corev1.Pod{pod("prefill", 0, ""), pod("prefill", 1, ""), pod("prefill", 2, since), pod("prefill", 3, since), pod("decode", 0, ""), pod("decode", 1, since)}
	eps = []autoscale.EndpointLoad{{Name: "ns/m-0-prefill-2", Draining: true, InFlight: 1}, {Name: "ns/m-0-prefill-3", Draining: true}, {Name: "ns/m-0-decode-1", Draining: true}}
	rs = planRoles(ms, pods, []int32{0}, autoscale.Decision{Prefill: 2, Decode: 1}, eps, nil, now, grace)
	if p, d := get(rs, "prefill"), get(rs, "decode"); p.replicas != 4 || d.replicas != 2 {
		t.Errorf("prefill %d decode %d while prefill drains, want 4 and 2", p.replicas, d.replicas)
	}
}
