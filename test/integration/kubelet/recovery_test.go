package kubelet

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

const modelName = "kubelet-sim"

// engineTemplate runs `halyard sim` on 127.0.0.1:port in a host-network
// pod bound to the kubelet's node (no scheduler runs here); the agent
// injected into it listens on agentPort.
func engineTemplate(node string, port, agentPort int) corev1.PodTemplateSpec {
	probe := &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Host: "127.0.0.1", Path: "/health", Port: intstr.FromInt(port),
		}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{servingv1.AnnotationAgentPort: itoa(agentPort)}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			HostNetwork:                   true,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			Containers: []corev1.Container{{
				Name:            "engine",
				Image:           halyardImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"sim", "--listen=127.0.0.1:" + itoa(port), "--model=" + modelName, "--seed=1"},
				Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port)}},
				ReadinessProbe:  probe,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
				},
			}},
		},
	}
}

// group is the ModelServing under test: one group of two pods (a leader and
// one worker), each running an engine.
type group struct {
	name        string
	enginePorts [2]int
	pods        [2]string
}

func newGroup(t *testing.T, e *env, ns, name string, policy servingv1.RecoveryPolicy) *group {
	t.Helper()
	g := &group{name: name, pods: [2]string{name + "-0-engine-0", name + "-0-engine-0-1"}}
	g.enginePorts = [2]int{freePort(t), freePort(t)}
	leader := engineTemplate(e.node, g.enginePorts[0], freePort(t))
	worker := engineTemplate(e.node, g.enginePorts[1], freePort(t))
	ms := &servingv1.ModelServing{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: servingv1.ModelServingSpec{
			Model:    servingv1.ModelSpec{Name: modelName},
			Engine:   servingv1.EngineVLLM,
			Replicas: ptr.To[int32](1),
			Roles:    []servingv1.RoleSpec{{Name: "engine", Replicas: 1, Workers: 1, Template: leader, WorkerTemplate: &worker}},
			Recovery: servingv1.RecoverySpec{Policy: policy},
		},
	}
	if err := e.c.Create(context.Background(), ms); err != nil {
		t.Fatalf("create modelserving: %v", err)
	}
	return g
}

// ready reports whether the group is Running with both pods Ready.
func (g *group) ready(t *testing.T, e *env, ns string) (bool, string) {
	ms := e.get(t, ns, g.name)
	if len(ms.Status.Groups) == 0 {
		return false, "no group status"
	}
	gs := ms.Status.Groups[0]
	if gs.Phase != servingv1.GroupRunning {
		return false, fmt.Sprintf("group %s (%s: %s)", gs.Phase, gs.Reason, gs.Message)
	}
	pods := e.pods(t, ns, g.name)
	for _, name := range g.pods {
		p, ok := pods[name]
		if !ok || p.DeletionTimestamp != nil || !podReady(&p) {
			return false, "pod " + name + " not ready"
		}
	}
	return true, ""
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestInPlaceRecoveryOnRealKubelet: a ModelServing group of two pods runs
// on a real kubelet (containerd, runc). Killing one engine process makes
// the controller tell both agents to exit 88; the kubelet restarts every
// container of both pods in place; the barrier releases the engines
// together; the router drains and readmits them while a standby engine
// serves, so no request that had not started streaming fails. The same
// failure with policy RecreateGroup is timed for comparison.
func TestInPlaceRecoveryOnRealKubelet(t *testing.T) {
	e := startEnv(t)
	ns := e.namespace(t, "recovery")
	rec := watchPods(t, e, ns)
	g := newGroup(t, e, ns, "ip", servingv1.RecoveryInPlace)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("observed pod statuses:\n%s", rec.summary(g.pods[:]).log)
		}
	})
	eventually(t, 3*time.Minute, "group running on the kubelet", func() (bool, string) { return g.ready(t, e, ns) })
	before := e.pods(t, ns, g.name)

	// The router in front: the group's two engines and a standby engine
	// outside the group.
	standby := freePort(t)
	startProcess(t, "sim", "--listen=127.0.0.1:"+itoa(standby), "--model="+modelName, "--seed=2")
	rt := startRouter(t, map[string]int{"e0": g.enginePorts[0], "e1": g.enginePorts[1], "standby": standby})
	rt.waitHealthy(t, map[string]float64{"e0": 1, "e1": 1, "standby": 1})

	// A prompt only the test sends, twice, to engine e0: its KV cache now
	// holds it (prefix-cache hits counted).
	warm := "kubelet test warm-up prompt " + strings.Repeat("alpha beta gamma delta ", 40)
	e0 := "http://127.0.0.1:" + itoa(g.enginePorts[0])
	complete(t, e0, warm)
	complete(t, e0, warm)
	if hits := scrape(t, e0+"/metrics", "vllm:prefix_cache_hits_total"); hits <= 0 {
		t.Fatalf("warm-up: engine e0 counts %v prefix-cache hits, want some", hits)
	}

	load := startClients(t, rt.url, 3)
	load.waitServed(t, 10)

	// Kill the leader's engine process.
	pid := enginePID(t, g.enginePorts[0])
	failedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill engine pid %d: %v", pid, err)
	}
	t.Logf("killed engine of %s (pid %d)", g.pods[0], pid)

	// The controller tells both agents (generation 1).
	eventually(t, time.Minute, "restart generation 1 on both pods", func() (bool, string) {
		pods := e.pods(t, ns, g.name)
		for _, n := range g.pods {
			if pods[n].Annotations[servingv1.AnnotationRestartGeneration] != "1" {
				return false, n + ": " + pods[n].Annotations[servingv1.AnnotationRestartGeneration]
			}
		}
		return true, ""
	})
	eventually(t, 3*time.Minute, "group ready again", func() (bool, string) { return g.ready(t, e, ns) })
	inPlace := time.Since(failedAt)
	t.Logf("in-place recovery: %s from the kill to the group Running with both pods Ready", inPlace.Round(time.Millisecond))

	after := e.pods(t, ns, g.name)
	ms := e.get(t, ns, g.name)
	gs := ms.Status.Groups[0]
	if gs.Restarts != 1 || gs.Recreations != 0 || gs.RestartGeneration != 1 || gs.Barrier != 1 {
		t.Errorf("group status %+v: want one in-place restart, generation and barrier 1, no recreation", gs)
	}
	for _, n := range g.pods {
		b, a := before[n], after[n]
		if a.UID != b.UID {
			t.Errorf("pod %s replaced (uid %s, was %s); want an in-place restart", n, a.UID, b.UID)
		}
		for _, c := range []string{servingv1.AgentContainerName, "engine"} {
			if rb, ra := restartCount(&b, c), restartCount(&a, c); ra <= rb {
				t.Errorf("pod %s container %s restart count %d, was %d: want it up", n, c, ra, rb)
			}
		}
	}
	// What the kubelet reported on the way (docs/kubernetes.md lists it).
	obs := rec.summary(g.pods[:])
	t.Logf("observed pod statuses:\n%s", obs.log)
	for _, n := range g.pods {
		if !obs.allRestarting[n] {
			t.Errorf("pod %s: condition AllContainersRestarting never seen True", n)
		}
		if !obs.agentExit88[n] {
			t.Errorf("pod %s: its agent was never seen terminated with exit code %d", n, servingv1.ExitCodeRestartGroup)
		}
	}
	// The barrier: no engine started before both agents had restarted.
	agentsUp, enginesUp := startedAfter(after, g.pods[:], failedAt)
	t.Logf("agents restarted at %v, engines started at %v", agentsUp, enginesUp)
	latestAgent := agentsUp[len(agentsUp)-1]
	for _, s := range enginesUp {
		if s.Before(latestAgent) {
			t.Errorf("an engine started at %v, before the last agent restarted (%v): the barrier did not hold", s, latestAgent)
		}
	}
	// The restarted engine answers, with an empty KV cache.
	if hits := scrape(t, e0+"/metrics", "vllm:prefix_cache_hits_total"); hits != 0 {
		// router traffic may have hit it already, but never the warm-up prompt
		t.Logf("engine e0 counts %v prefix-cache hits since its restart", hits)
	}
	h0 := scrape(t, e0+"/metrics", "vllm:prefix_cache_hits_total")
	complete(t, e0, warm)
	if h1 := scrape(t, e0+"/metrics", "vllm:prefix_cache_hits_total"); h1 != h0 {
		t.Errorf("the warm-up prompt hit the restarted engine's cache (%v -> %v hits): want an empty cache", h0, h1)
	}

	// The router took the group out and back: both drained, both readmitted
	// and serving again; no client request failed.
	rt.waitHealthy(t, map[string]float64{"e0": 1, "e1": 1})
	load.waitServedBy(t, "e0", "e1")
	drained := rt.sawUnhealthy()
	if !drained["e0"] || !drained["e1"] {
		t.Errorf("router drained %v; want e0 and e1 taken out during the restart", drained)
	}
	load.stop()
	if n, errs := load.result(); len(errs) > 0 {
		t.Errorf("%d of %d client requests failed: %v", len(errs), n, errs)
	} else {
		t.Logf("%d client requests, none failed", n)
	}

	// For comparison: the same failure under RecreateGroup.
	if err := e.c.Patch(context.Background(), ms, client.RawPatch("application/merge-patch+json",
		[]byte(`{"spec":{"recovery":{"policy":"RecreateGroup"}}}`))); err != nil {
		t.Fatal(err)
	}
	pid = enginePID(t, g.enginePorts[0])
	failedAt = time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill engine pid %d: %v", pid, err)
	}
	eventually(t, 3*time.Minute, "group recreated and ready", func() (bool, string) {
		pods := e.pods(t, ns, g.name)
		for _, n := range g.pods {
			if p, ok := pods[n]; !ok || p.UID == after[n].UID {
				return false, "pod " + n + " not yet replaced"
			}
		}
		return g.ready(t, e, ns)
	})
	recreate := time.Since(failedAt)
	t.Logf("RECOVERY in-place %s recreate %s (kill to group Running, both pods Ready)", inPlace.Round(time.Millisecond), recreate.Round(time.Millisecond))
	if gs := e.get(t, ns, g.name).Status.Groups[0]; gs.Recreations != 1 {
		t.Errorf("group %+v: want one recreation", gs)
	}
	writeResult(t, inPlace, recreate)
}

// writeResult appends the measured times to $HALYARD_KUBELET_RESULTS, if set.
func writeResult(t *testing.T, inPlace, recreate time.Duration) {
	path := os.Getenv("HALYARD_KUBELET_RESULTS")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	load, _ := os.ReadFile("/proc/loadavg")
	fields := strings.Fields(string(load))
	if len(fields) > 3 {
		fields = fields[:3]
	}
	fmt.Fprintf(f, "%s in_place_s=%.2f recreate_s=%.2f load=%s\n", time.Now().UTC().Format(time.RFC3339),
		inPlace.Seconds(), recreate.Seconds(), strings.Join(fields, ","))
}

func restartCount(p *corev1.Pod, container string) int32 {
	for _, s := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if s.Name == container {
			return s.RestartCount
		}
	}
	return -1
}

// startedAfter returns, sorted, the start times of the agents and of the
// engines of pods that started after t0 (second resolution, as the kubelet
// reports them).
func startedAfter(pods map[string]corev1.Pod, names []string, t0 time.Time) (agents, engines []time.Time) {
	for _, n := range names {
		p := pods[n]
		for _, s := range p.Status.InitContainerStatuses {
			if s.Name == servingv1.AgentContainerName && s.State.Running != nil {
				agents = append(agents, s.State.Running.StartedAt.Time)
			}
		}
		for _, s := range p.Status.ContainerStatuses {
			if s.State.Running != nil {
				engines = append(engines, s.State.Running.StartedAt.Time)
			}
		}
	}
	sort.Slice(agents, func(i, j int) bool { return agents[i].Before(agents[j]) })
	sort.Slice(engines, func(i, j int) bool { return engines[i].Before(engines[j]) })
	return agents, engines
}

// enginePID finds the process of the engine listening on port: the sim's
// command line names its --listen address.
func enginePID(t *testing.T, port int) int {
	t.Helper()
	want := "--listen=127.0.0.1:" + itoa(port)
	var pid int
	eventually(t, 30*time.Second, "engine process on port "+itoa(port), func() (bool, string) {
		dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, d := range dirs {
			b, err := os.ReadFile(d)
			if err != nil {
				continue
			}
			args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
			if len(args) >= 2 && args[0] == "/halyard" && args[1] == "sim" && contains(args, want) {
				_, _ = fmt.Sscanf(d, "/proc/%d/cmdline", &pid)
				return true, ""
			}
		}
		return false, "not found"
	})
	return pid
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// complete sends one chat completion straight to an engine.
func complete(t *testing.T, base, prompt string) {
	t.Helper()
	c := openai.NewClient(option.WithBaseURL(base+"/v1"), option.WithAPIKey("none"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:     modelName,
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)},
		MaxTokens: openai.Int(4),
	}); err != nil {
		t.Fatalf("completion from %s: %v", base, err)
	}
}

// podRecorder keeps every pod status the API server sends during the test.
type podRecorder struct {
	mu     sync.Mutex
	events []corev1.Pod
	at     []time.Time
}

func watchPods(t *testing.T, e *env, ns string) *podRecorder {
	t.Helper()
	r := &podRecorder{}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := e.cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatalf("watch pods: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			if p, ok := ev.Object.(*corev1.Pod); ok {
				r.mu.Lock()
				r.events = append(r.events, *p.DeepCopy())
				r.at = append(r.at, time.Now())
				r.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { w.Stop(); cancel(); <-done })
	return r
}

// observation is what the kubelet reported about the restart.
type observation struct {
	allRestarting map[string]bool
	agentExit88   map[string]bool // the agent seen terminated with ExitCodeRestartGroup
	log           string
}

// summary condenses the recorded statuses: per pod, each change of its
// phase, conditions and containers' states.
func (r *podRecorder) summary(names []string) observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := observation{allRestarting: map[string]bool{}, agentExit88: map[string]bool{}}
	var b strings.Builder
	last := map[string]string{}
	t0 := time.Time{}
	if len(r.at) > 0 {
		t0 = r.at[0]
	}
	for i, p := range r.events {
		if !contains(names, p.Name) {
			continue
		}
		var parts []string
		parts = append(parts, "phase="+string(p.Status.Phase))
		for _, c := range p.Status.Conditions {
			if c.Type == "AllContainersRestarting" && c.Status == corev1.ConditionTrue {
				o.allRestarting[p.Name] = true
			}
			if c.Status == corev1.ConditionTrue {
				parts = append(parts, string(c.Type))
			}
		}
		for _, s := range p.Status.InitContainerStatuses {
			if st := s.State.Terminated; s.Name == servingv1.AgentContainerName && st != nil && st.ExitCode == servingv1.ExitCodeRestartGroup {
				o.agentExit88[p.Name] = true
			}
		}
		for _, s := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			parts = append(parts, fmt.Sprintf("%s[r%d %s last=%s ready=%v]", s.Name, s.RestartCount, stateString(s.State), stateString(s.LastTerminationState), s.Ready))
		}
		line := strings.Join(parts, " ")
		if last[p.Name] == line {
			continue
		}
		last[p.Name] = line
		fmt.Fprintf(&b, "+%6.2fs %s gen=%s barrier=%s %s\n", r.at[i].Sub(t0).Seconds(), p.Name,
			p.Annotations[servingv1.AnnotationRestartGeneration], p.Annotations[servingv1.AnnotationBarrier], line)
	}
	o.log = b.String()
	return o
}

func stateString(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Terminated != nil:
		return fmt.Sprintf("terminated(%d,%s)", s.Terminated.ExitCode, s.Terminated.Reason)
	case s.Waiting != nil:
		return "waiting(" + s.Waiting.Reason + ")"
	}
	return "-"
}

var _ = http.StatusOK
