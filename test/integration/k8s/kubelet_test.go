package k8s

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
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
	k.updateStatus(t, pod, func(cur *corev1.Pod) {
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
	})
}

// updateStatus changes a pod's status as the kubelet would, reading the pod
// again when the controller changed it meanwhile (its annotations).
func (k *cluster) updateStatus(t *testing.T, pod *corev1.Pod, change func(*corev1.Pod)) {
	t.Helper()
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &corev1.Pod{}
		if err := k.c.Get(ctx, client.ObjectKeyFromObject(pod), cur); err != nil {
			return err
		}
		change(cur)
		return k.c.Status().Update(ctx, cur)
	})
	if err != nil {
		t.Fatalf("status of %s: %v", pod.Name, err)
	}
}

// The kubelet's steps below are what a real 1.35.4 kubelet reported, in this
// order, when one engine was killed and the agents then exited 88
// (test/integration/kubelet, docs/kubernetes.md "A real kubelet"):
//
//  1. containerExited(engine, 137): the engine terminated, the pod not Ready.
//  2. containerRestarted(engine): the kubelet restarts the failed engine on
//     its own (the pod's restartPolicy), count one up, lastState the
//     termination; this may come before or after the agents hear of the
//     restart, and the controller must not take it for the in-place restart.
//  3. containerExited(agent, 88): AllContainersRestarting True, the other
//     containers still running.
//  4. restartAllRemoved: every container removed, each waiting
//     (RestartingAllContainers) with its count one up and lastState
//     terminated(137, RestartingAllContainers); AllContainersRestarting is
//     False again although nothing runs.
//  5. agentStarted: the agent runs again (lastState empty) and the engines
//     wait (PodInitializing) for its startup probe; phase Pending.
//  6. enginesStarted: the engines run, counts unchanged, lastState empty.

// setReady writes the pod's Ready and ContainersReady conditions.
func setReady(p *corev1.Pod, ready bool) {
	s := corev1.ConditionFalse
	if ready {
		s = corev1.ConditionTrue
	}
	setCondition(p, corev1.PodReady, s)
	setCondition(p, corev1.ContainersReady, s)
}

func setCondition(p *corev1.Pod, typ corev1.PodConditionType, s corev1.ConditionStatus) {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == typ {
			if p.Status.Conditions[i].Status != s {
				p.Status.Conditions[i].Status, p.Status.Conditions[i].LastTransitionTime = s, metav1.Now()
			}
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: typ, Status: s, LastTransitionTime: metav1.Now()})
}

// containerStatus returns the status of the named container (init or main).
func containerStatus(t *testing.T, p *corev1.Pod, name string) *corev1.ContainerStatus {
	t.Helper()
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	t.Fatalf("pod %s has no container %s", p.Name, name)
	return nil
}

// containerExited: the container's process exited with code. An exit that
// matches a RestartAllContainers rule of the container (the agent's 88)
// sets AllContainersRestarting.
func (k *cluster) containerExited(t *testing.T, pod *corev1.Pod, container string, code int32) {
	t.Helper()
	k.updateStatus(t, pod, func(p *corev1.Pod) {
		s := containerStatus(t, p, container)
		started := metav1.Now()
		if s.State.Running != nil {
			started = s.State.Running.StartedAt
		}
		s.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: "Error", StartedAt: started, FinishedAt: metav1.Now(),
		}}
		s.Ready = false
		setReady(p, false)
		for _, c := range p.Spec.InitContainers {
			if c.Name != container {
				continue
			}
			for _, r := range c.RestartPolicyRules {
				if r.Action == corev1.ContainerRestartRuleActionRestartAllContainers && r.ExitCodes != nil &&
					r.ExitCodes.Operator == corev1.ContainerRestartRuleOnExitCodesOpIn && slices.Contains(r.ExitCodes.Values, code) {
					setCondition(p, "AllContainersRestarting", corev1.ConditionTrue)
				}
			}
		}
	})
}

// containerRestarted: the kubelet restarted one exited container by itself.
func (k *cluster) containerRestarted(t *testing.T, pod *corev1.Pod, container string) {
	t.Helper()
	k.updateStatus(t, pod, func(p *corev1.Pod) {
		s := containerStatus(t, p, container)
		s.LastTerminationState = s.State
		s.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
		s.RestartCount++
	})
}

// restartAllRemoved: the kubelet removed every container of the pod for
// RestartAllContainers.
func (k *cluster) restartAllRemoved(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	k.updateStatus(t, pod, func(p *corev1.Pod) {
		setCondition(p, "AllContainersRestarting", corev1.ConditionFalse)
		setReady(p, false)
		for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for i := range list {
				list[i].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
					Reason: "RestartingAllContainers", Message: "The container is removed because RestartAllContainers in place",
				}}
				list[i].LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 137, Reason: "RestartingAllContainers", Message: "The container is removed because RestartAllContainers in place",
				}}
				list[i].RestartCount++
				list[i].Ready = false
				list[i].Started = ptr.To(false)
			}
		}
	})
}

// agentStarted: after the removal, the kubelet started the init containers
// (the agent) again; the engines wait for the agent's startup probe.
func (k *cluster) agentStarted(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	k.updateStatus(t, pod, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodPending
		for i := range p.Status.InitContainerStatuses {
			s := &p.Status.InitContainerStatuses[i]
			s.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
			s.LastTerminationState = corev1.ContainerState{}
			s.Started = ptr.To(true)
		}
		for i := range p.Status.ContainerStatuses {
			p.Status.ContainerStatuses[i].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
		}
	})
}

// enginesStarted: the agent's startup probe passed (the barrier released)
// and the main containers run and are ready.
func (k *cluster) enginesStarted(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	k.updateStatus(t, pod, func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
			for i := range list {
				if list[i].State.Running == nil {
					list[i].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
				}
				list[i].LastTerminationState = corev1.ContainerState{}
				list[i].Ready, list[i].Started = true, ptr.To(true)
			}
		}
		setReady(p, true)
	})
}

// startAll binds every unscheduled pod of a ModelServing to node and marks
// every pod running and ready; it returns how many pods it touched.
func (k *cluster) startAll(t *testing.T, ns, ms, node string) int {
	t.Helper()
	n := 0
	pods := k.pods(t, ns, ms) // one list: pods may come and go meanwhile
	for i := range pods {
		p := pods[i]
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
