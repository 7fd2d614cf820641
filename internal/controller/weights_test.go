package controller

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

func TestBuildPodWeights(t *testing.T) {
	on := WeightsOptions{CacheDir: "/data/halyard", DragonflyProxy: "http://$(HOST_IP):4001", DragonflyTag: "t"}
	const commit = "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name      string
		source    string
		dist      servingv1.Distribution
		opts      WeightsOptions
		wantFetch bool
		wantArgs  []string // must be present
		wantEnv   map[string]string
		noArgs    []string // must be absent
	}{
		{name: "hf direct", source: "hf://o/r", opts: on, wantFetch: true,
			wantArgs: []string{"fetch", "hf://o/r", "--into=/var/cache/halyard", "--report", "--termination-message-path=/dev/termination-log"},
			wantEnv:  map[string]string{"HF_HUB_CACHE": "/var/cache/halyard", "HF_HUB_OFFLINE": "1", "HALYARD_MODEL_CACHE": "/var/cache/halyard"},
			noArgs:   []string{"--dragonfly-proxy=http://$(HOST_IP):4001"}},
		{name: "hf pinned commit", source: "hf://o/r@" + commit, opts: on, wantFetch: true,
			wantEnv: map[string]string{"HALYARD_MODEL_PATH": "/var/cache/halyard/models--o--r/snapshots/" + commit}},
		{name: "s3", source: "s3://b/llama/v1/", opts: on, wantFetch: true,
			wantEnv: map[string]string{"HALYARD_MODEL_PATH": "/var/cache/halyard/s3--b--llama--v1"}},
		{name: "dragonfly", source: "hf://o/r", dist: servingv1.DistributionDragonfly, opts: on, wantFetch: true,
			wantArgs: []string{"--dragonfly-proxy=http://$(HOST_IP):4001", "--dragonfly-tag=t"}},
		{name: "dragonfly https CA", source: "https://models.example/m/", dist: servingv1.DistributionDragonfly,
			opts: WeightsOptions{CacheDir: "/data/halyard", DragonflyProxy: "http://$(HOST_IP):4001", DragonflyCASecret: "df-ca"}, wantFetch: true,
			wantArgs: []string{"--dragonfly-ca-file=/etc/halyard/dragonfly-ca/ca.crt"}},
		{name: "modelscope", source: "modelscope://o/r@v1", opts: WeightsOptions{CacheDir: "/data/halyard", ModelScopeEndpoint: "http://ms-mirror"}, wantFetch: true,
			wantArgs: []string{"modelscope://o/r@v1"},
			wantEnv:  map[string]string{"HF_HUB_CACHE": "/var/cache/halyard", "HF_HUB_OFFLINE": "1"}},
		{name: "none", source: "hf://o/r", dist: servingv1.DistributionNone, opts: on},
		{name: "pvc", source: "pvc://claim/model", opts: on},
		{name: "no source", opts: on},
		{name: "wiring off", source: "hf://o/r", opts: WeightsOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms := testServing()
			ms.Spec.Model.Source, ms.Spec.Model.Distribution = tc.source, tc.dist
			ms.Spec.Model.Fetch = &servingv1.FetchSpec{CredentialsSecret: "creds"}
			pod, err := buildPod(podInput{ms: ms, member: member{role: "prefill"}, revision: "r", agent: AgentOptions{Image: "img:1"}, weights: tc.opts})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range pod.Spec.InitContainers {
				names = append(names, c.Name)
			}
			engine := pod.Spec.Containers[0]
			if !tc.wantFetch {
				if !slices.Equal(names, []string{servingv1.AgentContainerName}) || len(pod.Spec.Volumes) != 0 || len(engine.VolumeMounts) != 0 {
					t.Fatalf("init containers %v, volumes %v, mounts %v: want the agent only", names, pod.Spec.Volumes, engine.VolumeMounts)
				}
				return
			}
			if diff := cmp.Diff([]string{servingv1.FetchContainerName, servingv1.AgentContainerName}, names); diff != "" {
				t.Fatalf("init containers (-want +got):\n%s", diff)
			}
			fetch := pod.Spec.InitContainers[0]
			if fetch.Image != "img:1" {
				t.Errorf("fetch image %q, want the agent's", fetch.Image)
			}
			for _, a := range tc.wantArgs {
				if !slices.Contains(fetch.Args, a) {
					t.Errorf("args %v lack %q", fetch.Args, a)
				}
			}
			for _, a := range tc.noArgs {
				if slices.Contains(fetch.Args, a) {
					t.Errorf("args %v hold %q", fetch.Args, a)
				}
			}
			if len(fetch.EnvFrom) != 1 || fetch.EnvFrom[0].SecretRef.Name != "creds" || len(engine.EnvFrom) != 0 {
				t.Errorf("envFrom fetch %v engine %v: want the Secret in the fetch only", fetch.EnvFrom, engine.EnvFrom)
			}
			if v := pod.Spec.Volumes; len(v) < 1 || v[0].HostPath == nil || v[0].HostPath.Path != "/data/halyard" {
				t.Errorf("volumes %+v, want the hostPath /data/halyard", v)
			}
			if ca := tc.opts.DragonflyCASecret; ca != "" {
				v := pod.Spec.Volumes
				if len(v) != 2 || v[1].Secret == nil || v[1].Secret.SecretName != ca || len(fetch.VolumeMounts) != 2 || !fetch.VolumeMounts[1].ReadOnly {
					t.Errorf("volumes %+v, fetch mounts %+v: want the CA Secret %s mounted read-only in the fetch", v, fetch.VolumeMounts, ca)
				}
			}
			if ep := tc.opts.ModelScopeEndpoint; ep != "" && !slices.Contains(fetch.Env, corev1.EnvVar{Name: "MODELSCOPE_ENDPOINT", Value: ep}) {
				t.Errorf("fetch env %v lacks MODELSCOPE_ENDPOINT=%s", fetch.Env, ep)
			}
			if m := engine.VolumeMounts; len(m) != 1 || !m[0].ReadOnly || m[0].MountPath != cacheMount {
				t.Errorf("engine mounts %+v, want read-only %s", m, cacheMount)
			}
			env := map[string]string{}
			for _, e := range engine.Env {
				env[e.Name] = e.Value
			}
			for k, v := range tc.wantEnv {
				if env[k] != v {
					t.Errorf("engine env %s = %q, want %q", k, env[k], v)
				}
			}
		})
	}
}

func TestWeightsOf(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "u1"}}
	report := func(state, reason string, done, total int64, uid types.UID) *corev1.Event {
		return &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
				servingv1.AnnotationWeightsState: state, servingv1.AnnotationWeightsReason: reason,
				servingv1.AnnotationWeightsDone: itoa64(done), servingv1.AnnotationWeightsTotal: itoa64(total),
			}},
			InvolvedObject: corev1.ObjectReference{UID: uid},
			Message:        "the fetch's message",
		}
	}
	terminated := func(code int32, msg string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: servingv1.FetchContainerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: msg}}}
	}
	for _, tc := range []struct {
		name   string
		report *corev1.Event
		status []corev1.ContainerStatus
		want   podWeights
	}{
		{name: "nothing yet", want: podWeights{}},
		{name: "fetching", report: report("Fetching", "", 40, 100, "u1"), want: podWeights{done: 40, total: 100}},
		{name: "report of an earlier pod of the name", report: report("Done", "", 100, 100, "u0"), want: podWeights{}},
		{name: "done by the report", report: report("Done", "", 100, 100, "u1"), want: podWeights{done: 100, total: 100, ready: true}},
		{name: "done by the kubelet", report: report("Fetching", "", 40, 100, "u1"), status: []corev1.ContainerStatus{terminated(0, "")},
			want: podWeights{done: 100, total: 100, ready: true}},
		{name: "failed: the termination message's reason wins", report: report("Failed", "SourceUnreachable", 0, 0, "u1"),
			status: []corev1.ContainerStatus{terminated(1, "Forbidden: fetch hf://o/r: forbidden (403)")},
			want:   podWeights{failed: true, reason: "Forbidden", message: "fetch hf://o/r: forbidden (403)"}},
		{name: "failed without a message: the report's reason", report: report("Failed", "DiskFull", 5, 10, "u1"),
			status: []corev1.ContainerStatus{terminated(1, "")},
			want:   podWeights{done: 5, total: 10, failed: true, reason: "DiskFull", message: "the fetch's message"}},
		{name: "failed with neither", status: []corev1.ContainerStatus{terminated(137, "killed\n")},
			want: podWeights{failed: true, reason: "FetchFailed", message: "exit code 137: killed"}},
		{name: "running again after a failure: the failure stands", report: report("Fetching", "", 0, 0, "u1"),
			status: []corev1.ContainerStatus{{Name: servingv1.FetchContainerName,
				State:                corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "Forbidden: no"}}}},
			want: podWeights{failed: true, reason: "Forbidden", message: "no"}},
		{name: "running the first time", report: report("Fetching", "", 1, 2, "u1"),
			status: []corev1.ContainerStatus{{Name: servingv1.FetchContainerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
			want:   podWeights{done: 1, total: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pod.DeepCopy()
			p.Status.InitContainerStatuses = tc.status
			got := weightsOf(p, tc.report)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(podWeights{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// withFetch gives every pod of g a fetch init container, finished (exit 0)
// for the names in done, running for the others.
func withFetch(g groupPods, done ...string) groupPods {
	for name, p := range g.live {
		p.Spec.InitContainers = []corev1.Container{{Name: servingv1.FetchContainerName}}
		st := corev1.ContainerStatus{Name: servingv1.FetchContainerName, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
		if slices.Contains(done, name) {
			st.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}
		}
		p.Status.InitContainerStatuses = append([]corev1.ContainerStatus{st}, p.Status.InitContainerStatuses...)
	}
	return g
}

// TestGroupWaitsForWeights: a scheduled group's barrier is released only
// once every pod's fetch has finished, a ready pod without its weights does
// not make the group Running, and the preheat gate holds a group without
// pods.
func TestGroupWaitsForWeights(t *testing.T) {
	ms := testServing()
	since := metav1.NewTime(t0.Add(-time.Hour)) // past the gang timeout
	pending := servingv1.GroupStatus{Index: 0, Phase: servingv1.GroupPending, Revision: "rev1", Since: &since, Barrier: -1}
	scheduled := func(done ...string) groupPods {
		return withFetch(pods(podState{name: "m-0-prefill-0", node: "n1"}, podState{name: "m-0-decode-0", node: "n1"}), done...)
	}

	p := testPlanner(ms, false, t0)
	gs := p.plan(pending, scheduled("m-0-prefill-0"))
	if gs.Phase != servingv1.GroupPending || gs.Reason != ReasonWaitingForWeights || gs.Barrier != -1 || len(p.acts.annotate) > 0 || len(p.acts.delete) > 0 {
		t.Errorf("one fetch running: %s/%s barrier %d, acts %v; want Pending/WaitingForWeights, barrier held, no gang timeout", gs.Phase, gs.Reason, gs.Barrier, summary(p.acts))
	}
	// A node lost while its pod fetches: the group is recreated, not stuck.
	p = testPlanner(ms, false, t0)
	lost := withFetch(pods(podState{name: "m-0-prefill-0", node: "n1"}, podState{name: "m-0-decode-0", node: "gone"}), "m-0-prefill-0")
	if gs := p.plan(pending, lost); gs.Phase != servingv1.GroupRecreating || gs.Reason != ReasonMemberFailed {
		t.Errorf("node lost while fetching: %s/%s, want Recreating/MemberFailed", gs.Phase, gs.Reason)
	}
	p = testPlanner(ms, false, t0)
	gs = p.plan(pending, scheduled("m-0-prefill-0", "m-0-decode-0"))
	if gs.Phase != servingv1.GroupStarting || gs.Barrier != 0 {
		t.Errorf("every fetch done: %s barrier %d, want Starting with the barrier released", gs.Phase, gs.Barrier)
	}

	ready := withFetch(pods(podState{name: "m-0-prefill-0", node: "n1", ready: true}, podState{name: "m-0-decode-0", node: "n1", ready: true}), "m-0-prefill-0")
	p = testPlanner(ms, false, t0)
	if gs := p.plan(running(0), ready); gs.Phase == servingv1.GroupRunning {
		t.Error("a Ready pod without its weights made the group Running")
	}

	p = testPlanner(ms, false, t0)
	p.preheatHold = "waiting for preheat job 1"
	fresh := servingv1.GroupStatus{Index: 0, Barrier: -1}
	gs = p.plan(fresh, groupPods{live: map[string]*corev1.Pod{}, terminating: map[string]*corev1.Pod{}})
	if len(p.acts.create) != 0 || gs.Reason != ReasonWaitingForPreheat || !gs.Since.Time.Equal(t0) {
		t.Errorf("preheat gate: %d pods created, reason %s, since %v; want none, WaitingForPreheat, since now", len(p.acts.create), gs.Reason, gs.Since)
	}
}

// TestWeightsTimeout: a group whose pods do not all have their weights
// within WeightsOptions.Timeout of their creation is recreated, says so
// (reason, event, WeightsReady), and wakes at the deadline before it; with
// no timeout it waits.
func TestWeightsTimeout(t *testing.T) {
	ms := testServing()
	created := metav1.NewTime(t0.Add(-30 * time.Minute))
	pending := servingv1.GroupStatus{Index: 0, Phase: servingv1.GroupPending, Revision: "rev1", Since: &created, Barrier: -1}
	fetching := func() groupPods {
		return withFetch(pods(podState{name: "m-0-prefill-0", node: "n1"}, podState{name: "m-0-decode-0", node: "n1"}), "m-0-prefill-0")
	}

	for _, tc := range []struct {
		name       string
		timeout    time.Duration
		wantPhase  servingv1.GroupPhase
		wantReason string
		wantWake   time.Time
	}{
		{"no timeout: waits", 0, servingv1.GroupPending, ReasonWaitingForWeights, time.Time{}},
		{"within the timeout: waits, wakes at the deadline", time.Hour, servingv1.GroupPending, ReasonWaitingForWeights, t0.Add(30 * time.Minute)},
		{"past the timeout: recreated", 20 * time.Minute, servingv1.GroupRecreating, ReasonWeightsTimeout, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPlanner(ms, false, t0)
			p.weights.Timeout = tc.timeout
			p.set.gangTimeout = time.Minute // scheduling is done: the gang timeout does not apply
			gs := p.plan(pending, fetching())
			if gs.Phase != tc.wantPhase || gs.Reason != tc.wantReason {
				t.Fatalf("%s/%s (%s), want %s/%s", gs.Phase, gs.Reason, gs.Message, tc.wantPhase, tc.wantReason)
			}
			if !tc.wantWake.IsZero() && !p.earliest.Equal(tc.wantWake) {
				t.Errorf("wakes at %v, want the deadline %v", p.earliest, tc.wantWake)
			}
			if tc.wantReason != ReasonWeightsTimeout {
				if len(p.acts.delete) > 0 {
					t.Errorf("pods deleted while waiting: %v", summary(p.acts))
				}
				return
			}
			if got := summary(p.acts); !slices.Contains(got, "delete m-0-decode-0") || !slices.Contains(got, "delete m-0-prefill-0") {
				t.Errorf("acts %v, want both pods deleted", got)
			}
			if !strings.Contains(gs.Message, "m-0-decode-0") || strings.Contains(gs.Message, "m-0-prefill-0") {
				t.Errorf("message %q: want it to name the pod without weights only", gs.Message)
			}
			if len(p.acts.events) == 0 || p.acts.events[0].reason != ReasonWeightsTimeout || !p.acts.events[0].warning {
				t.Errorf("events %+v, want a WeightsTimeout warning", p.acts.events)
			}
		})
	}
}
