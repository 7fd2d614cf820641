package placement

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

const zone = "topology.kubernetes.io/zone"

func rl(kv ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[corev1.ResourceName(kv[i])] = resource.MustParse(kv[i+1])
	}
	return l
}

// str renders a ResourceList for comparison (Quantity has unexported state).
func str(l corev1.ResourceList) map[string]string {
	out := map[string]string{}
	for r, q := range l {
		out[string(r)] = q.String()
	}
	return out
}

type domainView struct {
	Name  string
	Nodes int
	Free  map[string]string
}

func TestDomains(t *testing.T) {
	node := func(name, z string, sched bool, alloc, req corev1.ResourceList) Node {
		labels := map[string]string{}
		if z != "" {
			labels[zone] = z
		}
		return Node{Name: name, Labels: labels, Allocatable: alloc, Requested: req, Schedulable: sched}
	}
	tests := []struct {
		name  string
		nodes []Node
		want  []domainView
	}{
		{name: "no nodes", want: []domainView{}},
		{
			name: "two zones sum free resources",
			nodes: []Node{
				node("a1", "zone-a", true, rl("cpu", "8", "nvidia.com/gpu", "8"), rl("cpu", "2", "nvidia.com/gpu", "8")),
				node("a2", "zone-a", true, rl("cpu", "8", "nvidia.com/gpu", "8"), nil),
				node("b1", "zone-b", true, rl("cpu", "4"), rl("cpu", "1")),
			},
			want: []domainView{
				{Name: "zone-a", Nodes: 2, Free: map[string]string{"cpu": "14", "nvidia.com/gpu": "8"}},
				{Name: "zone-b", Nodes: 1, Free: map[string]string{"cpu": "3"}},
			},
		},
		{
			name: "unlabelled and unschedulable nodes are left out",
			nodes: []Node{
				node("x", "", true, rl("cpu", "8"), nil),
				node("c1", "zone-c", false, rl("cpu", "8"), nil),
				node("b1", "zone-b", true, rl("cpu", "4"), nil),
			},
			want: []domainView{{Name: "zone-b", Nodes: 1, Free: map[string]string{"cpu": "4"}}},
		},
		{
			name:  "overcommitted node counts as zero, not negative",
			nodes: []Node{node("a1", "zone-a", true, rl("cpu", "2"), rl("cpu", "3"))},
			want:  []domainView{{Name: "zone-a", Nodes: 1, Free: map[string]string{"cpu": "0"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := []domainView{}
			for _, d := range Domains(tt.nodes, zone) {
				got = append(got, domainView{Name: d.Name, Nodes: d.Nodes, Free: str(d.Free)})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Domains() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestChooseDomain(t *testing.T) {
	two := []Domain{
		{Name: "zone-a", Nodes: 2, Free: rl("cpu", "16", "nvidia.com/gpu", "4")},
		{Name: "zone-b", Nodes: 2, Free: rl("cpu", "8", "nvidia.com/gpu", "16")},
	}
	tests := []struct {
		name    string
		c       Choice
		want    string
		wantErr error
	}{
		{name: "most free cpu wins a tie on groups", c: Choice{Domains: two, Demand: rl("cpu", "2")}, want: "zone-a"},
		{name: "spread: fewer groups of this serving wins", c: Choice{Domains: two, Demand: rl("cpu", "2"), Groups: map[string]int{"zone-a": 1}}, want: "zone-b"},
		{name: "demand must fit", c: Choice{Domains: two, Demand: rl("nvidia.com/gpu", "8")}, want: "zone-b"},
		{name: "resource missing in a domain does not fit", c: Choice{Domains: []Domain{{Name: "z", Nodes: 1, Free: rl("cpu", "4")}}, Demand: rl("nvidia.com/gpu", "1")}, wantErr: ErrNoDomain},
		{name: "zero demand of a missing resource fits", c: Choice{Domains: []Domain{{Name: "z", Nodes: 1, Free: rl("cpu", "4")}}, Demand: rl("nvidia.com/gpu", "0")}, want: "z"},
		{name: "avoided domain is skipped", c: Choice{Domains: two, Demand: rl("cpu", "2"), Avoid: map[string]bool{"zone-a": true}}, want: "zone-b"},
		{name: "avoided domain is used when nothing else fits", c: Choice{Domains: two, Demand: rl("cpu", "12"), Avoid: map[string]bool{"zone-a": true}}, want: "zone-a"},
		{name: "nothing fits", c: Choice{Domains: two, Demand: rl("cpu", "100")}, wantErr: ErrNoDomain},
		{name: "no domains", c: Choice{}, wantErr: ErrNoDomain},
		{name: "equal domains: first by name", c: Choice{Domains: []Domain{{Name: "b", Nodes: 1, Free: rl("cpu", "1")}, {Name: "a", Nodes: 1, Free: rl("cpu", "1")}}}, want: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseDomain(tt.c)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ChooseDomain() error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ChooseDomain() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPodRequestsAndDemand(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	spec := corev1.PodSpec{
		InitContainers: []corev1.Container{
			{Name: "fetch", Resources: corev1.ResourceRequirements{Requests: rl("cpu", "4", "memory", "1Gi")}},
			{Name: "agent", RestartPolicy: &always, Resources: corev1.ResourceRequirements{Requests: rl("cpu", "100m")}},
		},
		Containers: []corev1.Container{
			{Name: "engine", Resources: corev1.ResourceRequirements{Requests: rl("cpu", "2", "memory", "8Gi")}},
		},
	}
	if diff := cmp.Diff(map[string]string{"cpu": "4", "memory": "8Gi"}, str(PodRequests(&spec))); diff != "" {
		t.Errorf("PodRequests() mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"cpu": "8", "memory": "16Gi"}, str(Demand([]corev1.PodSpec{spec, spec}))); diff != "" {
		t.Errorf("Demand() mismatch (-want +got):\n%s", diff)
	}
}
