package k8s

import (
	"context"
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// No kubelet runs in these tests: the helpers below play its part (and the
// scheduler's) by writing node and pod status, as the API server allows.

// createNode creates a Ready node with the given labels.
func (k *cluster) createNode(t *testing.T, name string, labels map[string]string) *corev1.Node {
	t.Helper()
	ctx := context.Background()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := k.c.Create(ctx, n); err != nil {
		t.Fatalf("create node: %v", err)
	}
	n.Status = corev1.NodeStatus{
		Capacity:    corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourcePods: resource.MustParse("110")},
		Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourcePods: resource.MustParse("110")},
		Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
	}
	if err := k.c.Status().Update(ctx, n); err != nil {
		t.Fatalf("node status: %v", err)
	}
	return n
}

// bind schedules a pod onto a node through the binding subresource.
func (k *cluster) bind(t *testing.T, pod *corev1.Pod, node string) {
	t.Helper()
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace}, Target: corev1.ObjectReference{Kind: "Node", Name: node}}
	if err := k.c.SubResource("binding").Create(context.Background(), pod, b); err != nil {
		t.Fatalf("bind %s: %v", pod.Name, err)
	}
}

// markRunning writes the status of a running, ready pod whose containers
// have restarted `restarts` times.
func (k *cluster) markRunning(t *testing.T, pod *corev1.Pod, restarts int32, ready bool) {
	t.Helper()
	ctx := context.Background()
	cur := &corev1.Pod{}
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
		t.Fatalf("get %s: %v", pod.Name, err)
	}
	now := metav1.Now()
	readyStatus := corev1.ConditionFalse
	if ready {
		readyStatus = corev1.ConditionTrue
	}
	cur.Status.Phase = corev1.PodRunning
	if cur.Status.PodIP == "" {
		cur.Status.PodIP = podIP(cur.Name)
		cur.Status.PodIPs = []corev1.PodIP{{IP: cur.Status.PodIP}}
	}
	cur.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: readyStatus, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: readyStatus, LastTransitionTime: now},
	}
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}
	started := true
	cur.Status.InitContainerStatuses = nil
	for _, c := range cur.Spec.InitContainers {
		cur.Status.InitContainerStatuses = append(cur.Status.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: &started, State: running, RestartCount: restarts,
		})
	}
	cur.Status.ContainerStatuses = nil
	for _, c := range cur.Spec.Containers {
		cur.Status.ContainerStatuses = append(cur.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: ready, Started: &started, State: running, RestartCount: restarts,
		})
	}
	if err := k.c.Status().Update(ctx, cur); err != nil {
		t.Fatalf("status of %s: %v", pod.Name, err)
	}
}

// setAllRestarting writes the kubelet's AllContainersRestarting condition.
func (k *cluster) setAllRestarting(t *testing.T, pod *corev1.Pod, on bool) {
	t.Helper()
	ctx := context.Background()
	cur := &corev1.Pod{}
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
		t.Fatalf("get %s: %v", pod.Name, err)
	}
	s := corev1.ConditionFalse
	if on {
		s = corev1.ConditionTrue
	}
	found := false
	for i := range cur.Status.Conditions {
		if cur.Status.Conditions[i].Type == "AllContainersRestarting" {
			cur.Status.Conditions[i].Status = s
			found = true
		}
	}
	if !found {
		cur.Status.Conditions = append(cur.Status.Conditions, corev1.PodCondition{Type: "AllContainersRestarting", Status: s, LastTransitionTime: metav1.Now()})
	}
	if err := k.c.Status().Update(ctx, cur); err != nil {
		t.Fatalf("status of %s: %v", pod.Name, err)
	}
}

// restartingAll writes what a 1.35 kubelet reports while it restarts every
// container of a pod in place (RestartAllContainers), as observed on a real
// kubelet (test/integration/kubelet, docs/kubernetes.md): condition
// AllContainersRestarting True, phase Pending, not ready, every container,
// the agent included, waiting with its restart count one up and lastState
// empty (a restart-all leaves no terminated record, unlike a single
// container's restart).
func (k *cluster) restartingAll(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	cur := &corev1.Pod{}
	if err := k.c.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
		t.Fatalf("get %s: %v", pod.Name, err)
	}
	now := metav1.Now()
	cur.Status.Phase = corev1.PodPending
	conds := []corev1.PodCondition{{Type: "AllContainersRestarting", Status: corev1.ConditionTrue, LastTransitionTime: now}}
	for _, c := range cur.Status.Conditions {
		switch c.Type {
		case "AllContainersRestarting":
		case corev1.PodReady, corev1.ContainersReady:
			c.Status = corev1.ConditionFalse
			conds = append(conds, c)
		default:
			conds = append(conds, c)
		}
	}
	cur.Status.Conditions = conds
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
	for _, list := range [][]corev1.ContainerStatus{cur.Status.InitContainerStatuses, cur.Status.ContainerStatuses} {
		for i := range list {
			list[i].RestartCount++
			list[i].State = waiting
			list[i].LastTerminationState = corev1.ContainerState{}
			list[i].Ready = false
			started := false
			list[i].Started = &started
		}
	}
	if err := k.c.Status().Update(ctx, cur); err != nil {
		t.Fatalf("status of %s: %v", pod.Name, err)
	}
}

// startAll binds every unscheduled pod of a ModelServing to node and marks
// every pod running and ready; it returns how many pods it touched.
func (k *cluster) startAll(t *testing.T, ns, ms, node string) int {
	t.Helper()
	n := 0
	for i := range k.pods(t, ns, ms) {
		p := k.pods(t, ns, ms)[i]
		if p.DeletionTimestamp != nil {
			continue
		}
		if p.Spec.NodeName == "" {
			k.bind(t, &p, node)
		}
		if p.Status.Phase != corev1.PodRunning {
			k.markRunning(t, &p, 0, true)
			n++
		}
	}
	return n
}

// reapTerminating plays the kubelet's part in graceful deletion until the
// test ends: a pod being deleted in ns is removed at once.
func (k *cluster) reapTerminating(t *testing.T, ns string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var list corev1.PodList
			if err := k.c.List(ctx, &list, client.InNamespace(ns)); err == nil {
				for i := range list.Items {
					p := &list.Items[i]
					if p.DeletionTimestamp != nil {
						_ = k.c.Delete(ctx, p, client.GracePeriodSeconds(0), client.Preconditions{UID: &p.UID})
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// podIP gives a pod a stable fake address derived from its name.
func podIP(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	v := h.Sum32()
	return fmt.Sprintf("10.%d.%d.%d", 100+v%100, (v>>8)%250+1, (v>>16)%250+1)
}
