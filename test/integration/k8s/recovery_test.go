package k8s

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
)

// runningGroup creates a one-group ModelServing, schedules and starts its
// pods, and waits until the group is Running.
func runningGroup(t *testing.T, k *cluster, ns, name string, mutate func(*servingv1.ModelServing)) map[string]corev1.Pod {
	t.Helper()
	ms := pdServing(ns, name, 1)
	if mutate != nil {
		mutate(ms)
	}
	create(t, k, ms)
	eventually(t, waitLong, "3 pods", func() (bool, string) {
		n := len(k.pods(t, ns, name))
		return n == 3, fmt.Sprintf("%d pods", n)
	})
	node := k.createNode(t, name+"-node", nil)
	k.startAll(t, ns, name, node.Name)
	eventually(t, waitLong, "group running", func() (bool, string) {
		g := group(k.get(t, ns, name), 0)
		return g != nil && g.Phase == servingv1.GroupRunning && g.Barrier == 0, fmt.Sprintf("%+v", g)
	})
	out := map[string]corev1.Pod{}
	for _, p := range k.pods(t, ns, name) {
		out[p.Name] = p
	}
	return out
}

// runningGroupWithAgents is runningGroup plus a real agent process per pod,
// each past its barrier (generation 0, barrier 0).
func runningGroupWithAgents(t *testing.T, k *cluster, ns, name string) (map[string]corev1.Pod, map[string]*agentProc) {
	t.Helper()
	before := runningGroup(t, k, ns, name, nil)
	agents := map[string]*agentProc{}
	for pod := range before {
		agents[pod] = k.startAgent(t, ns, pod)
	}
	for _, a := range agents {
		a.waitStartup(t, http.StatusOK)
	}
	return before, agents
}

func forceDelete(t *testing.T, k *cluster, ns, name string) {
	t.Helper()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := k.c.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatalf("delete %s: %v", name, err)
	}
}

func (k *cluster) pod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{}
	if err := k.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		return nil
	}
	return p
}

// Deleting one pod of a running group drives the in-place path: the
// agents of the other pods (real `halyard agent` processes) are told and
// exit 88, the lost pod is recreated, the kubelet's restarts (played through
// the pod status) are observed with the same UIDs, and then the barrier is
// released so the restarted agents let their engines start together.
func TestInPlaceGroupRestart(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "inplace")
	before, agents := runningGroupWithAgents(t, k, ns, "ip")

	failed := "ip-0-decode-0"
	survivors := []string{"ip-0-prefill-0", "ip-0-prefill-1"}
	forceDelete(t, k, ns, failed)

	for _, name := range survivors {
		if code := agents[name].waitExit(t); code != servingv1.ExitCodeRestartGroup {
			t.Fatalf("agent of %s exited with %d, want %d", name, code, servingv1.ExitCodeRestartGroup)
		}
	}
	agents[failed].stop()

	eventually(t, waitLong, "group restarting with the lost pod recreated", func() (bool, string) {
		g := group(k.get(t, ns, "ip"), 0)
		p := k.pod(t, ns, failed)
		return g.Phase == servingv1.GroupRestarting && g.RestartGeneration == 1 && p != nil && p.UID != before[failed].UID,
			fmt.Sprintf("phase %s generation %d pod %v", g.Phase, g.RestartGeneration, p != nil)
	})
	for _, name := range append(survivors, failed) {
		p := k.pod(t, ns, name)
		if p.Annotations[servingv1.AnnotationRestartGeneration] != "1" || p.Annotations[servingv1.AnnotationBarrier] == "1" {
			t.Errorf("pod %s annotations %v: want generation 1, barrier not yet 1", name, p.Annotations)
		}
	}
	if got := k.events(t, ns, "ip", controller.ReasonAgentsTold); len(got) == 0 || !strings.Contains(got[0], "told 2 agents") {
		t.Errorf("AgentsTold events %q, want one telling 2 agents", got)
	}
	if got := k.events(t, ns, "ip", controller.ReasonMemberFailed); len(got) == 0 || !strings.Contains(got[0], "pod "+failed) {
		t.Errorf("MemberFailed events %q, want the missing pod named", got)
	}

	// A restarted agent starts under generation 1 and holds its engine
	// back until the barrier is released.
	held := k.startAgent(t, ns, survivors[0])
	held.waitStartup(t, http.StatusServiceUnavailable)

	// The kubelet restarts every container of the survivors in place (the
	// steps in kubelet_test.go); the lost pod's replacement starts its agent.
	// While the survivors' containers are removed, every restart count is up
	// and AllContainersRestarting False again, but no agent runs: the
	// barrier holds.
	node := before[survivors[0]].Spec.NodeName
	for _, name := range survivors {
		k.containerExited(t, k.pod(t, ns, name), servingv1.AgentContainerName, servingv1.ExitCodeRestartGroup)
		k.restartAllRemoved(t, k.pod(t, ns, name))
	}
	fresh := k.pod(t, ns, failed)
	k.bind(t, fresh, node)
	k.markRunning(t, fresh, 0, false)
	k.agentStarted(t, k.pod(t, ns, failed))
	waitMembers(t, k, ns, "ip", failed)
	if g := group(k.get(t, ns, "ip"), 0); g.Barrier == 1 {
		t.Fatalf("barrier released while the survivors' agents were not running: %+v", g)
	}
	for _, name := range survivors {
		k.agentStarted(t, k.pod(t, ns, name))
	}

	eventually(t, waitLong, "barrier released", func() (bool, string) {
		g := group(k.get(t, ns, "ip"), 0)
		return g.Barrier == 1 && g.Phase == servingv1.GroupStarting, fmt.Sprintf("%+v", g)
	})
	held.waitStartup(t, http.StatusOK)
	for _, name := range survivors {
		if p := k.pod(t, ns, name); p.UID != before[name].UID {
			t.Errorf("pod %s was replaced (uid %s, was %s); want an in-place restart", name, p.UID, before[name].UID)
		}
	}
	for _, name := range append(survivors, failed) {
		eventually(t, waitLong, "barrier annotation on "+name, func() (bool, string) {
			p := k.pod(t, ns, name)
			return p.Annotations[servingv1.AnnotationBarrier] == "1", fmt.Sprintf("%v", p.Annotations)
		})
	}
	if len(k.events(t, ns, "ip", controller.ReasonBarrierReleased)) == 0 {
		t.Error("no BarrierReleased event")
	}
	for _, name := range append(survivors, failed) {
		k.enginesStarted(t, k.pod(t, ns, name))
	}
	eventually(t, waitLong, "group running again", func() (bool, string) {
		ms := k.get(t, ns, "ip")
		g := group(ms, 0)
		return g.Phase == servingv1.GroupRunning && g.Restarts == 1 && g.Recreations == 0, fmt.Sprintf("%+v", g)
	})
}

// waitMembers waits until the group's status records the named pods as
// restarted: the controller has then seen every pod status written before
// theirs (one watch, in order).
func waitMembers(t *testing.T, k *cluster, ns, ms string, pods ...string) {
	t.Helper()
	eventually(t, waitLong, fmt.Sprintf("members %v restarted", pods), func() (bool, string) {
		g := group(k.get(t, ns, ms), 0)
		done := map[string]bool{}
		for _, m := range g.Members {
			done[m.Pod] = m.Restarted
		}
		for _, p := range pods {
			if !done[p] {
				return false, fmt.Sprintf("%+v", g.Members)
			}
		}
		return true, ""
	})
}

// An engine that crashes is restarted by the kubelet on its own, possibly
// before its agent exits 88 (as a real kubelet did, docs/kubernetes.md).
// That restart is not the in-place restart: the barrier waits for the
// crashed pod's agent to run again, and once the group runs again the
// restart-all's own restart counts do not start a second restart.
func TestInPlaceRestartAfterEngineCrash(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "crash")
	before, agents := runningGroupWithAgents(t, k, ns, "cr")

	failed := "cr-0-decode-0"
	survivors := []string{"cr-0-prefill-0", "cr-0-prefill-1"}
	k.containerExited(t, k.pod(t, ns, failed), "engine", 137)
	for name, a := range agents {
		if code := a.waitExit(t); code != servingv1.ExitCodeRestartGroup {
			t.Fatalf("agent of %s exited with %d, want %d", name, code, servingv1.ExitCodeRestartGroup)
		}
	}
	// The failed pod's next agent, started under generation 1, holds its
	// engine back until the barrier is released.
	held := k.startAgent(t, ns, failed)
	held.waitStartup(t, http.StatusServiceUnavailable)

	// The kubelet restarts the crashed engine alone, then the survivors
	// restart in place.
	k.containerRestarted(t, k.pod(t, ns, failed), "engine")
	for _, name := range survivors {
		k.containerExited(t, k.pod(t, ns, name), servingv1.AgentContainerName, servingv1.ExitCodeRestartGroup)
		k.restartAllRemoved(t, k.pod(t, ns, name))
		k.agentStarted(t, k.pod(t, ns, name))
	}
	waitMembers(t, k, ns, "cr", survivors...)
	if g := group(k.get(t, ns, "cr"), 0); g.Barrier != 0 || g.Phase != servingv1.GroupRestarting {
		t.Fatalf("group %+v: the barrier was released before %s restarted in place (its engine's own restart taken for it)", g, failed)
	}

	// Now the failed pod's agent exits 88 and the kubelet restarts it in place.
	k.containerExited(t, k.pod(t, ns, failed), servingv1.AgentContainerName, servingv1.ExitCodeRestartGroup)
	k.restartAllRemoved(t, k.pod(t, ns, failed))
	k.agentStarted(t, k.pod(t, ns, failed))
	eventually(t, waitLong, "barrier released", func() (bool, string) {
		g := group(k.get(t, ns, "cr"), 0)
		return g.Barrier == 1 && g.Phase == servingv1.GroupStarting, fmt.Sprintf("%+v", g)
	})
	held.waitStartup(t, http.StatusOK)
	for name := range before {
		k.enginesStarted(t, k.pod(t, ns, name))
	}
	eventually(t, waitLong, "group running again", func() (bool, string) {
		g := group(k.get(t, ns, "cr"), 0)
		return g.Phase == servingv1.GroupRunning, fmt.Sprintf("%+v", g)
	})
	g := group(k.get(t, ns, "cr"), 0)
	if g.Restarts != 1 || g.RestartGeneration != 1 || g.Recreations != 0 {
		t.Errorf("group %+v: want exactly one in-place restart (generation 1), no recreation", g)
	}
	for name, b := range before {
		p := k.pod(t, ns, name)
		if p.UID != b.UID {
			t.Errorf("pod %s was replaced; want an in-place restart", name)
		}
		if p.Annotations[servingv1.AnnotationRestartGeneration] != "1" {
			t.Errorf("pod %s restart generation %q, want 1", name, p.Annotations[servingv1.AnnotationRestartGeneration])
		}
	}
}

// An in-place restart that does not finish within the restart timeout
// recreates the whole group.
func TestRestartTimeoutRecreatesGroup(t *testing.T) {
	k, clock := sharedCluster(t)
	ns := k.namespace(t, "timeout")
	k.reapTerminating(t, ns)
	before := runningGroup(t, k, ns, "to", func(ms *servingv1.ModelServing) {
		ms.Spec.Recovery.RestartTimeout = &metav1.Duration{Duration: time.Minute}
	})
	forceDelete(t, k, ns, "to-0-prefill-1")
	eventually(t, waitLong, "restarting", func() (bool, string) {
		g := group(k.get(t, ns, "to"), 0)
		return g.Phase == servingv1.GroupRestarting, fmt.Sprintf("%+v", g)
	})
	clock.Advance(2 * time.Minute)
	k.poke(t, ns, "to")
	eventually(t, waitLong, "every pod recreated", func() (bool, string) {
		pods := k.pods(t, ns, "to")
		for _, p := range pods {
			if p.UID == before[p.Name].UID {
				return false, "pod " + p.Name + " is the old one"
			}
		}
		return len(pods) == 3, fmt.Sprintf("%d pods", len(pods))
	})
	g := group(k.get(t, ns, "to"), 0)
	if g.Recreations != 1 || g.Reason == "" {
		t.Errorf("group %+v: want one recreation", g)
	}
	if got := k.events(t, ns, "to", controller.ReasonRestartTimedOut); len(got) == 0 || !strings.Contains(got[0], "did not finish within 1m0s") {
		t.Errorf("RestartTimedOut events %q", got)
	}
}

// Where the API server rejects RestartAllContainers (gate off), the
// controller finds out by a dry run, injects the agent without the rule,
// and recovers a failed group by recreating it.
func TestRecreateWhenInPlaceGateIsOff(t *testing.T) {
	k := startCluster(t, "")
	k.runController(t, newFakeClock(), controller.InPlaceAuto)
	ns := k.namespace(t, "gateoff")
	k.reapTerminating(t, ns)
	before := runningGroup(t, k, ns, "off", nil)

	ms := k.get(t, ns, "off")
	if !strings.HasPrefix(ms.Status.InPlaceRestart, "Unavailable: the API server rejects RestartAllContainers") {
		t.Errorf("status.inPlaceRestart %q", ms.Status.InPlaceRestart)
	}
	for _, p := range before {
		if rules := p.Spec.InitContainers[0].RestartPolicyRules; len(rules) != 0 {
			t.Errorf("pod %s agent has restart rules %v with the gate off", p.Name, rules)
		}
	}
	forceDelete(t, k, ns, "off-0-decode-0")
	eventually(t, waitLong, "group recreated", func() (bool, string) {
		pods := k.pods(t, ns, "off")
		for _, p := range pods {
			if p.UID == before[p.Name].UID {
				return false, "pod " + p.Name + " is the old one"
			}
		}
		return len(pods) == 3, fmt.Sprintf("%d pods", len(pods))
	})
	g := group(k.get(t, ns, "off"), 0)
	if g.Recreations != 1 || g.Restarts != 0 {
		t.Errorf("group %+v: want one recreation and no in-place restart", g)
	}
	if got := k.events(t, ns, "off", controller.ReasonInPlaceUnavailable); len(got) == 0 {
		t.Error("no InPlaceUnavailable event")
	}
}
