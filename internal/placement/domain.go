package placement

import (
	"errors"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// ErrNoDomain is returned when no domain can hold a group.
var ErrNoDomain = errors.New("no topology domain can hold the group")

// Node is what placement needs to know about a node.
type Node struct {
	Name   string
	Labels map[string]string
	// Allocatable is the node's allocatable resources.
	Allocatable corev1.ResourceList
	// Requested sums the requests of the pods already on the node that the
	// caller knows about.
	Requested corev1.ResourceList
	// Schedulable is false for cordoned or not-ready nodes.
	Schedulable bool
}

// Domain is one value of a topology key and what its schedulable nodes
// offer.
type Domain struct {
	// Name is the label value.
	Name string
	// Nodes is the number of schedulable nodes in the domain.
	Nodes int
	// Free is allocatable minus requested, summed over the domain's
	// schedulable nodes.
	Free corev1.ResourceList
}

// Domains groups the schedulable nodes carrying key by the key's value,
// sorted by name. Nodes without the label belong to no domain.
func Domains(nodes []Node, key string) []Domain {
	byName := map[string]*Domain{}
	for _, n := range nodes {
		v, ok := n.Labels[key]
		if !ok || !n.Schedulable {
			continue
		}
		d := byName[v]
		if d == nil {
			d = &Domain{Name: v, Free: corev1.ResourceList{}}
			byName[v] = d
		}
		d.Nodes++
		for r, q := range n.Allocatable {
			free := q.DeepCopy()
			if used, ok := n.Requested[r]; ok {
				free.Sub(used)
			}
			if free.Sign() < 0 {
				free = resource.Quantity{}
			}
			sum := d.Free[r]
			sum.Add(free)
			d.Free[r] = sum
		}
	}
	out := make([]Domain, 0, len(byName))
	for _, d := range byName {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Choice is the input of ChooseDomain.
type Choice struct {
	// Domains to choose from (see Domains).
	Domains []Domain
	// Demand sums the requests of every pod of the group.
	Demand corev1.ResourceList
	// Pods is the number of pods in the group; a domain needs at least
	// one node, and Demand must fit in its free resources.
	Pods int
	// Groups counts, per domain, the groups of the same ModelServing
	// already placed there; fewer is better, so groups spread over domains
	// and one domain's loss takes as few groups as possible.
	Groups map[string]int
	// Avoid lists domains where this group recently failed to start.
	Avoid map[string]bool
}

// ChooseDomain picks the domain for a new group: among domains whose free
// resources cover the demand, the one with the fewest groups of this
// ModelServing, then the most free CPU, then the first by name. Avoided
// domains are used only when nothing else fits.
func ChooseDomain(c Choice) (string, error) {
	best, ok := choose(c, false)
	if !ok {
		best, ok = choose(c, true)
	}
	if !ok {
		return "", fmt.Errorf("%w: %d domains, demand %s", ErrNoDomain, len(c.Domains), formatList(c.Demand))
	}
	return best, nil
}

func choose(c Choice, allowAvoided bool) (string, bool) {
	var (
		best    *Domain
		bestCPU resource.Quantity
	)
	for i := range c.Domains {
		d := &c.Domains[i]
		if d.Nodes == 0 || (!allowAvoided && c.Avoid[d.Name]) || !fits(c.Demand, d.Free) {
			continue
		}
		cpu := d.Free[corev1.ResourceCPU]
		if best == nil || better(c.Groups[d.Name], c.Groups[best.Name], cpu, bestCPU) {
			best, bestCPU = d, cpu
		}
	}
	if best == nil {
		return "", false
	}
	return best.Name, true
}

// better reports whether a domain with groups g and free CPU cpu beats the
// current best; equal ones keep the earlier (by name) domain.
func better(g, bestG int, cpu, bestCPU resource.Quantity) bool {
	if g != bestG {
		return g < bestG
	}
	return cpu.Cmp(bestCPU) > 0
}

func fits(demand, free corev1.ResourceList) bool {
	for r, q := range demand {
		f, ok := free[r]
		if !ok {
			if q.IsZero() {
				continue
			}
			return false
		}
		if f.Cmp(q) < 0 {
			return false
		}
	}
	return true
}

// Demand sums the requests of pod specs: per pod, the larger of the sum of
// its containers and restartable init containers and of its largest
// ordinary init container, as the scheduler counts it.
func Demand(specs []corev1.PodSpec) corev1.ResourceList {
	total := corev1.ResourceList{}
	for i := range specs {
		for r, q := range PodRequests(&specs[i]) {
			sum := total[r]
			sum.Add(q)
			total[r] = sum
		}
	}
	return total
}

// PodRequests is the scheduler's view of one pod's requests.
func PodRequests(spec *corev1.PodSpec) corev1.ResourceList {
	sum := corev1.ResourceList{}
	add := func(l corev1.ResourceList) {
		for r, q := range l {
			s := sum[r]
			s.Add(q)
			sum[r] = s
		}
	}
	for _, c := range spec.Containers {
		add(c.Resources.Requests)
	}
	initMax := corev1.ResourceList{}
	for _, c := range spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			add(c.Resources.Requests)
			continue
		}
		for r, q := range c.Resources.Requests {
			if m, ok := initMax[r]; !ok || q.Cmp(m) > 0 {
				initMax[r] = q.DeepCopy()
			}
		}
	}
	for r, q := range initMax {
		if s, ok := sum[r]; !ok || q.Cmp(s) > 0 {
			sum[r] = q
		}
	}
	return sum
}

func formatList(l corev1.ResourceList) string {
	names := make([]string, 0, len(l))
	for r := range l {
		names = append(names, string(r))
	}
	sort.Strings(names)
	s := "{"
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		q := l[corev1.ResourceName(n)]
		s += n + ": " + q.String()
	}
	return s + "}"
}
