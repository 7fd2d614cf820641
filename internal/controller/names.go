package controller

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// member identifies one pod of a group.
type member struct {
	role     string
	instance int32
	worker   int32 // 0 is the leader
}

func podName(ms string, group int32, m member) string {
	if m.worker == 0 {
		return fmt.Sprintf("%s-%d-%s-%d", ms, group, m.role, m.instance)
	}
	return fmt.Sprintf("%s-%d-%s-%d-%d", ms, group, m.role, m.instance, m.worker)
}

func serviceName(ms string, group int32, role string) string {
	return fmt.Sprintf("%s-%d-%s", ms, group, role)
}

func podGroupName(ms string, group int32) string { return fmt.Sprintf("%s-%d", ms, group) }

// members lists a group's pods in a stable order: roles as in the spec, then
// instance, then worker.
func members(roles []servingv1.RoleSpec) []member {
	var out []member
	for _, r := range roles {
		for i := int32(0); i < roleReplicas(r); i++ {
			for w := int32(0); w <= r.Workers; w++ {
				out = append(out, member{role: r.Name, instance: i, worker: w})
			}
		}
	}
	return out
}

func roleReplicas(r servingv1.RoleSpec) int32 {
	if r.Replicas < 1 {
		return 1
	}
	return r.Replicas
}

func groupLabels(ms string, group int32) map[string]string {
	return map[string]string{
		servingv1.LabelModelServing: ms,
		servingv1.LabelGroup:        strconv.Itoa(int(group)),
	}
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

func containerNames(lists ...[]corev1.Container) []string {
	var out []string
	for _, l := range lists {
		for _, c := range l {
			out = append(out, c.Name)
		}
	}
	return out
}
