package controller

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func testServing() *servingv1.ModelServing {
	tmpl := corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "engine", Image: "e"}}}}
	return &servingv1.ModelServing{
		ObjectMeta: metav1.ObjectMeta{Name: "m", Namespace: "ns", UID: "ms-uid"},
		Spec: servingv1.ModelServingSpec{
			Model: servingv1.ModelSpec{Name: "x"}, Engine: servingv1.EngineVLLM,
			Roles: []servingv1.RoleSpec{{Name: "prefill", Replicas: 1, Template: tmpl}, {Name: "decode", Replicas: 1, Template: tmpl}},
		},
	}
}

func testPlanner(ms *servingv1.ModelServing, inPlace bool, now time.Time) *planner {
	set := resolve(&ms.Spec)
	return &planner{
		ms: ms, set: set, rev: "rev1", now: now, agent: AgentOptions{Image: "a", InPlace: inPlace},
		inPlace: inPlace, members: members(ms.Spec.Roles), acts: &actions{},
		nodes: map[string]*corev1.Node{"n1": {ObjectMeta: metav1.ObjectMeta{Name: "n1"}}}, domainGroups: map[string]int{},
	}
}

type podState struct {
	name     string
	node     string
	restarts int32
	gen      string
	failed   bool
	ready    bool
	uid      string
	barrier  string
	// agentRestarts is the agent container's restart count; agentDown
	// reports it waiting (removed by RestartAllContainers) instead of
	// running; allRestarting sets the kubelet's AllContainersRestarting.
	agentRestarts int32
	agentDown     bool
	allRestarting bool
}

func pods(states ...podState) groupPods {
	g := groupPods{live: map[string]*corev1.Pod{}, terminating: map[string]*corev1.Pod{}}
	for _, s := range states {
		uid := s.uid
		if uid == "" {
			uid = s.name + "-uid"
		}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: s.name, UID: types.UID(uid), Annotations: map[string]string{servingv1.AnnotationRestartGeneration: s.gen}}}
		p.Spec.NodeName = s.node
		if s.barrier != "" {
			p.Annotations[servingv1.AnnotationBarrier] = s.barrier
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "engine", RestartCount: s.restarts}}
		agent := corev1.ContainerStatus{Name: servingv1.AgentContainerName, RestartCount: s.agentRestarts,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
		if s.agentDown {
			agent.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "RestartingAllContainers"}}
		}
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{agent}
		if s.failed {
			p.Status.Phase = corev1.PodFailed
		}
		if s.ready {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		if s.allRestarting {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: "AllContainersRestarting", Status: corev1.ConditionTrue})
		}
		g.live[s.name] = p
	}
	return g
}

// summary renders the planned writes compactly.
func summary(a *actions) []string {
	var out []string
	for _, p := range a.create {
		out = append(out, "create "+p.Name+" gen="+p.Annotations[servingv1.AnnotationRestartGeneration])
	}
	for _, p := range a.delete {
		out = append(out, "delete "+p.Name)
	}
	for _, p := range a.force {
		out = append(out, "force "+p.Name)
	}
	for _, an := range a.annotate {
		out = append(out, fmt.Sprintf("annotate %s %s=%s", an.pod.Name, strings.TrimPrefix(an.key, "serving.halyard.dev/"), an.value))
	}
	sort.Strings(out)
	return out
}

func running(gen int64) servingv1.GroupStatus {
	since := metav1.NewTime(t0.Add(-time.Hour))
	return servingv1.GroupStatus{
		Index: 0, Phase: servingv1.GroupRunning, Revision: "rev1", Since: &since, RestartGeneration: gen, Barrier: gen,
		Members: []servingv1.MemberStatus{
			{Pod: "m-0-prefill-0", UID: "m-0-prefill-0-uid", Restarted: true},
			{Pod: "m-0-decode-0", UID: "m-0-decode-0-uid", Restarted: true},
		},
	}
}

func TestGroupStateMachine(t *testing.T) {
	healthy := func(gen string, restarts int32) groupPods {
		return pods(
			podState{name: "m-0-prefill-0", node: "n1", gen: gen, restarts: restarts, ready: true, barrier: gen},
			podState{name: "m-0-decode-0", node: "n1", gen: gen, restarts: restarts, ready: true, barrier: gen},
		)
	}
	restartingStatus := func(started time.Time) servingv1.GroupStatus {
		g := running(0)
		st := metav1.NewTime(started)
		g.Phase, g.RestartGeneration, g.Restarts, g.RestartStarted = servingv1.GroupRestarting, 1, 1, &st
		g.Members = []servingv1.MemberStatus{{Pod: "m-0-prefill-0", UID: "m-0-prefill-0-uid"}, {Pod: "m-0-decode-0"}}
		return g
	}
	tests := []struct {
		name        string
		inPlace     bool
		policy      servingv1.RecoveryPolicy
		prev        servingv1.GroupStatus
		pods        groupPods
		wantPhase   servingv1.GroupPhase
		wantBarrier int64
		wantGen     int64
		wantActs    []string
	}{
		{
			name: "new group: every pod created, barrier held", inPlace: true,
			prev: servingv1.GroupStatus{Index: 0, Barrier: -1}, pods: pods(),
			wantPhase: servingv1.GroupPending, wantBarrier: -1,
			wantActs: []string{"create m-0-decode-0 gen=0", "create m-0-prefill-0 gen=0"},
		},
		{
			name: "every pod scheduled: barrier released", inPlace: true,
			prev:      servingv1.GroupStatus{Index: 0, Phase: servingv1.GroupPending, Barrier: -1, Since: &metav1.Time{Time: t0}},
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "0"}, podState{name: "m-0-decode-0", node: "n1", gen: "0"}),
			wantPhase: servingv1.GroupStarting, wantBarrier: 0,
			wantActs: []string{"annotate m-0-decode-0 barrier=0", "annotate m-0-prefill-0 barrier=0"},
		},
		{
			name: "one pod unscheduled: barrier held", inPlace: true,
			prev:      servingv1.GroupStatus{Index: 0, Phase: servingv1.GroupPending, Barrier: -1, Since: &metav1.Time{Time: t0}},
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "0"}, podState{name: "m-0-decode-0", gen: "0"}),
			wantPhase: servingv1.GroupPending, wantBarrier: -1,
		},
		{
			name: "gang timeout: group rolled back", inPlace: true,
			prev:      servingv1.GroupStatus{Index: 0, Phase: servingv1.GroupPending, Barrier: -1, Since: &metav1.Time{Time: t0.Add(-10 * time.Minute)}},
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "0"}, podState{name: "m-0-decode-0", gen: "0"}),
			wantPhase: servingv1.GroupRecreating, wantBarrier: -1,
			wantActs: []string{"delete m-0-decode-0", "delete m-0-prefill-0"},
		},
		{
			name: "healthy running group: nothing to do", inPlace: true,
			prev: running(0), pods: healthy("0", 0), wantPhase: servingv1.GroupRunning, wantBarrier: 0,
		},
		{
			name: "missing pod: agents told, pod recreated, barrier held", inPlace: true,
			prev: running(0), pods: pods(podState{name: "m-0-prefill-0", node: "n1", gen: "0", ready: true}),
			wantPhase: servingv1.GroupRestarting, wantBarrier: 0, wantGen: 1,
			wantActs: []string{"annotate m-0-prefill-0 restart-generation=1", "create m-0-decode-0 gen=1"},
		},
		{
			name: "engine container restarted: in-place restart", inPlace: true,
			prev:      running(0),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "0", restarts: 1}, podState{name: "m-0-decode-0", node: "n1", gen: "0", ready: true}),
			wantPhase: servingv1.GroupRestarting, wantBarrier: 0, wantGen: 1,
			wantActs: []string{"annotate m-0-decode-0 restart-generation=1", "annotate m-0-prefill-0 restart-generation=1"},
		},
		{
			name: "pod on a lost node: replaced, the rest restart in place", inPlace: true,
			prev:      running(0),
			pods:      pods(podState{name: "m-0-prefill-0", node: "gone", gen: "0", ready: true}, podState{name: "m-0-decode-0", node: "n1", gen: "0", ready: true}),
			wantPhase: servingv1.GroupRestarting, wantBarrier: 0, wantGen: 1,
			wantActs: []string{"annotate m-0-decode-0 restart-generation=1", "create m-0-prefill-0 gen=1", "force m-0-prefill-0"},
		},
		{
			name: "in-place unavailable: group recreated", inPlace: false,
			prev: running(0), pods: pods(podState{name: "m-0-prefill-0", node: "n1", gen: "0", ready: true}),
			wantPhase: servingv1.GroupRecreating, wantBarrier: 0,
			wantActs: []string{"delete m-0-prefill-0"},
		},
		{
			name: "policy None: only the missing pod is replaced", inPlace: true, policy: servingv1.RecoveryNone,
			prev: running(0), pods: pods(podState{name: "m-0-prefill-0", node: "n1", gen: "0", ready: true}),
			wantPhase: servingv1.GroupDegraded, wantBarrier: 0,
			wantActs: []string{"create m-0-decode-0 gen=0"},
		},
		{
			name: "restart limit reached: group recreated", inPlace: true,
			prev:      func() servingv1.GroupStatus { g := running(3); g.Restarts = 3; return g }(),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "3", ready: true}),
			wantPhase: servingv1.GroupRecreating, wantBarrier: 3, wantGen: 3,
			wantActs: []string{"delete m-0-prefill-0"},
		},
		{
			name: "restarting: survivor not yet restarted", inPlace: true,
			prev:      restartingStatus(t0),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "1"}, podState{name: "m-0-decode-0", node: "n1", gen: "1", uid: "new"}),
			wantPhase: servingv1.GroupRestarting, wantBarrier: 0, wantGen: 1,
		},
		{
			name: "restarting: every pod restarted, barrier released", inPlace: true,
			prev:      restartingStatus(t0),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "1", restarts: 1, agentRestarts: 1}, podState{name: "m-0-decode-0", node: "n1", gen: "1", uid: "new"}),
			wantPhase: servingv1.GroupStarting, wantBarrier: 1, wantGen: 1,
			wantActs: []string{"annotate m-0-decode-0 barrier=1", "annotate m-0-prefill-0 barrier=1"},
		},
		{
			// The kubelet restarted the failed engine on its own before the
			// agent exited 88: the pod has not restarted in place yet.
			name: "restarting: engine restarted alone, agent not yet: barrier held", inPlace: true,
			prev:      restartingStatus(t0),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "1", restarts: 1}, podState{name: "m-0-decode-0", node: "n1", gen: "1", uid: "new"}),
			wantPhase: servingv1.GroupRestarting, wantBarrier: 0, wantGen: 1,
		},
		{
			name: "restarting: agent exited 88, kubelet restarting all: barrier held", inPlace: true,
			prev:      restartingStatus(t0),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "1", restarts: 1, allRestarting: true}, podState{name: "m-0-decode-0", node: "n1", gen: "1", uid: "new"}),
			wantPhase: servingv1.GroupRestarting, wantBarrier: 0, wantGen: 1,
		},
		{
			// Every count is up and AllContainersRestarting False again while
			// the containers are removed, before the agent runs.
			name: "restarting: containers removed, agent not running yet: barrier held", inPlace: true,
			prev:      restartingStatus(t0),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "1", restarts: 2, agentRestarts: 1, agentDown: true}, podState{name: "m-0-decode-0", node: "n1", gen: "1", uid: "new"}),
			wantPhase: servingv1.GroupRestarting, wantBarrier: 0, wantGen: 1,
		},
		{
			name: "restarting: replaced pod's agent not running yet: barrier held", inPlace: true,
			prev:      restartingStatus(t0),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "1", restarts: 1, agentRestarts: 1}, podState{name: "m-0-decode-0", node: "n1", gen: "1", uid: "new", agentDown: true}),
			wantPhase: servingv1.GroupRestarting, wantBarrier: 0, wantGen: 1,
		},
		{
			name: "restarting past the timeout: group recreated", inPlace: true,
			prev:      restartingStatus(t0.Add(-6 * time.Minute)),
			pods:      pods(podState{name: "m-0-prefill-0", node: "n1", gen: "1"}),
			wantPhase: servingv1.GroupRecreating, wantBarrier: 0, wantGen: 1,
			wantActs: []string{"delete m-0-prefill-0"},
		},
		{
			name: "recreating, pods gone: new incarnation created", inPlace: true,
			prev:      servingv1.GroupStatus{Index: 0, Phase: servingv1.GroupRecreating, RestartGeneration: 2, Barrier: 2, Revision: "old"},
			pods:      pods(),
			wantPhase: servingv1.GroupPending, wantBarrier: 1, wantGen: 2,
			wantActs: []string{"create m-0-decode-0 gen=2", "create m-0-prefill-0 gen=2"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := testServing()
			ms.Spec.Recovery.Policy = tt.policy
			p := testPlanner(ms, tt.inPlace, t0)
			got := p.plan(tt.prev, tt.pods)
			if got.Phase != tt.wantPhase || got.Barrier != tt.wantBarrier || got.RestartGeneration != tt.wantGen {
				t.Errorf("phase %s barrier %d generation %d, want %s %d %d (reason %s: %s)",
					got.Phase, got.Barrier, got.RestartGeneration, tt.wantPhase, tt.wantBarrier, tt.wantGen, got.Reason, got.Message)
			}
			if diff := cmp.Diff(tt.wantActs, summary(p.acts)); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRolloutPicksOneRunningGroupAtATime(t *testing.T) {
	ms := testServing()
	ms.Spec.Replicas = ptr32(4)
	ms.Spec.Rollout.Partition = ptr32(1)
	p := testPlanner(ms, true, t0)
	prev := map[int32]servingv1.GroupStatus{}
	for i := int32(0); i < 4; i++ {
		prev[i] = servingv1.GroupStatus{Index: i, Phase: servingv1.GroupRunning, Revision: "old"}
	}
	(&ModelServingReconciler{}).rollout(p, prev)
	var recreating []int32
	for i := int32(0); i < 4; i++ {
		if prev[i].Phase == servingv1.GroupRecreating {
			recreating = append(recreating, i)
		}
	}
	if diff := cmp.Diff([]int32{3}, recreating); diff != "" {
		t.Errorf("groups recreated (-want +got):\n%s", diff)
	}
	// With group 3 down, nothing else starts until it is back.
	(&ModelServingReconciler{}).rollout(p, prev)
	if prev[2].Phase != servingv1.GroupRunning {
		t.Errorf("group 2 %s while group 3 is unavailable", prev[2].Phase)
	}
	// The partition keeps group 0 at its revision.
	for i := int32(1); i < 4; i++ {
		prev[i] = servingv1.GroupStatus{Index: i, Phase: servingv1.GroupRunning, Revision: "rev1"}
	}
	(&ModelServingReconciler{}).rollout(p, prev)
	if prev[0].Phase != servingv1.GroupRunning {
		t.Errorf("group 0 below the partition is %s", prev[0].Phase)
	}
	// While the preheat gate holds, no running group is taken down.
	for i := int32(0); i < 4; i++ {
		prev[i] = servingv1.GroupStatus{Index: i, Phase: servingv1.GroupRunning, Revision: "old"}
	}
	p.preheatHold = "waiting for preheat job 1"
	(&ModelServingReconciler{}).rollout(p, prev)
	for i := int32(0); i < 4; i++ {
		if prev[i].Phase != servingv1.GroupRunning {
			t.Errorf("group %d %s while the preheat gate holds", i, prev[i].Phase)
		}
	}
}

func ptr32(v int32) *int32 { return &v }

func TestRevisionFollowsThePodShape(t *testing.T) {
	a, b := testServing(), testServing()
	if revision(&a.Spec, "img", true) != revision(&b.Spec, "img", true) {
		t.Fatal("equal specs, different revisions")
	}
	b.Spec.Roles[0].Template.Spec.Containers[0].Image = "e2"
	if revision(&a.Spec, "img", true) == revision(&b.Spec, "img", true) {
		t.Error("template change kept the revision")
	}
	c := testServing()
	c.Spec.Replicas = ptr32(7)
	c.Spec.Recovery.MaxRestarts = ptr32(9)
	if revision(&a.Spec, "img", true) != revision(&c.Spec, "img", true) {
		t.Error("replicas or recovery changed the revision")
	}
}

func TestBuildPodWorkersAndEnv(t *testing.T) {
	ms := testServing()
	ms.Spec.Roles[0].Workers = 2
	wt := ms.Spec.Roles[0].Template.DeepCopy()
	wt.Spec.Containers[0].Image = "worker-image"
	ms.Spec.Roles[0].WorkerTemplate = wt
	ms.Spec.Placement.TopologyKey = "zone"
	pod, err := buildPod(podInput{ms: ms, group: 3, member: member{role: "prefill", instance: 1, worker: 2}, revision: "r", generation: 4, barrier: 3, domain: "zone-b", required: true, agent: AgentOptions{Image: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Name != "m-3-prefill-1-2" || pod.Spec.Containers[0].Image != "worker-image" || pod.Labels[servingv1.LabelWorker] != "2" {
		t.Errorf("pod %s image %s labels %v", pod.Name, pod.Spec.Containers[0].Image, pod.Labels)
	}
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	want := map[string]string{"HALYARD_GROUP_SIZE": "3", "HALYARD_WORKER_INDEX": "2", "HALYARD_LEADER_ADDRESS": "m-3-prefill-1.m-3-prefill.ns.svc"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("env %s = %q, want %q", k, env[k], v)
		}
	}
	if pod.Annotations[servingv1.AnnotationRestartGeneration] != "4" || pod.Annotations[servingv1.AnnotationBarrier] != "3" {
		t.Errorf("annotations %v", pod.Annotations)
	}
	req := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0]
	if req.Key != "zone" || req.Values[0] != "zone-b" {
		t.Errorf("node affinity %+v", req)
	}
	if len(pod.Spec.InitContainers[0].RestartPolicyRules) != 0 {
		t.Error("restart rule without in-place support")
	}
}

func TestValidateReservedName(t *testing.T) {
	ms := testServing()
	if err := validate(&ms.Spec); err != nil {
		t.Fatal(err)
	}
	ms.Spec.Roles[1].Template.Spec.InitContainers = []corev1.Container{{Name: servingv1.AgentContainerName}}
	err := validate(&ms.Spec)
	if err == nil || !strings.Contains(err.Error(), "spec.roles[1].template") {
		t.Errorf("validate() = %v, want the field path", err)
	}
}

// TestValidatePodBound: the controller refuses what the CRD's CEL rules
// refuse (for objects stored before them), naming the field and the count.
func TestValidatePodBound(t *testing.T) {
	tests := []struct {
		name     string
		replicas int32
		role     servingv1.RoleSpec
		want     string
	}{
		{"at both bounds", 8, servingv1.RoleSpec{Replicas: 8, Workers: 63}, ""},
		{"a group too large", 1, servingv1.RoleSpec{Replicas: 9, Workers: 63}, "spec.roles: a group would have 576 pods, at most 512"},
		{"too many groups", 9, servingv1.RoleSpec{Replicas: 8, Workers: 63}, "spec.replicas: 9 groups of 512 pods make 4608 pods, at most 4096"},
		{"defaults count one pod", 512, servingv1.RoleSpec{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := testServing()
			tt.role.Name, tt.role.Template = "r", ms.Spec.Roles[0].Template
			ms.Spec.Roles = []servingv1.RoleSpec{tt.role}
			ms.Spec.Replicas = &tt.replicas
			err := validate(&ms.Spec)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestBuildPodAgentPortAndEnv(t *testing.T) {
	ms := testServing()
	ms.Spec.Roles[0].Workers = 1
	wt := ms.Spec.Roles[0].Template.DeepCopy()
	wt.Annotations = map[string]string{servingv1.AnnotationAgentPort: "9123"}
	ms.Spec.Roles[0].WorkerTemplate = wt
	extra := corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: "127.0.0.1"}
	agentPortOf := func(worker int32) (string, []corev1.EnvVar) {
		pod, err := buildPod(podInput{ms: ms, member: member{role: "prefill", worker: worker}, agent: AgentOptions{Image: "a", Port: 8099, Env: []corev1.EnvVar{extra}}})
		if err != nil {
			t.Fatal(err)
		}
		a := pod.Spec.InitContainers[len(pod.Spec.InitContainers)-1]
		return a.StartupProbe.HTTPGet.Port.String() + " " + strings.Join(a.Args, " "), a.Env
	}
	if got, env := agentPortOf(0); got != "8099 agent --port=8099" || env[len(env)-1] != extra {
		t.Errorf("leader agent: %s, env %v", got, env)
	}
	if got, _ := agentPortOf(1); got != "9123 agent --port=9123" {
		t.Errorf("worker agent (annotated template): %s", got)
	}
	wt.Annotations[servingv1.AnnotationAgentPort] = "99999"
	if err := validate(&ms.Spec); err == nil || !strings.Contains(err.Error(), "spec.roles[0].workerTemplate: annotation serving.halyard.dev/agent-port") {
		t.Errorf("validate() = %v, want the bad agent port named", err)
	}
}
