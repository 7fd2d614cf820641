package k8s

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
)

const waitLong = 60 * time.Second

// A ModelServing with prefill and decode roles becomes pods with the labels
// of DESIGN.md §9, owner references, the agent as a restartable init
// container with the restart rule, and one headless service per group and
// role; the barrier holds until every pod of a group is scheduled.
func TestPrefillDecodeGroupsBecomePodsAndServices(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "pd")
	ms := pdServing(ns, "qwen", 2)
	create(t, k, ms)

	eventually(t, waitLong, "6 pods", func() (bool, string) {
		n := len(k.pods(t, ns, "qwen"))
		return n == 6, fmt.Sprintf("%d pods", n)
	})
	ms = k.get(t, ns, "qwen")
	type podView struct {
		Name, Group, Role, Instance, Worker, Hostname, Subdomain, Generation string
		Owner                                                                string
		Barrier                                                              bool
	}
	var got []podView
	for _, p := range k.pods(t, ns, "qwen") {
		_, barrier := p.Annotations[servingv1.AnnotationBarrier]
		owner := ""
		if ref := metav1.GetControllerOf(&p); ref != nil {
			owner = ref.Kind + "/" + ref.Name
		}
		if p.Labels[servingv1.LabelRevision] != ms.Status.UpdateRevision || p.Labels["app"] != "llm" {
			t.Errorf("pod %s labels %v: want revision %s and the template's labels", p.Name, p.Labels, ms.Status.UpdateRevision)
		}
		got = append(got, podView{
			Name: p.Name, Group: p.Labels[servingv1.LabelGroup], Role: p.Labels[servingv1.LabelRole],
			Instance: p.Labels[servingv1.LabelInstance], Worker: p.Labels[servingv1.LabelWorker],
			Hostname: p.Spec.Hostname, Subdomain: p.Spec.Subdomain,
			Generation: p.Annotations[servingv1.AnnotationRestartGeneration], Owner: owner, Barrier: barrier,
		})
	}
	sort.Slice(got, func(i, j int) bool { return got[i].Name < got[j].Name })
	var want []podView
	for _, g := range []string{"0", "1"} {
		want = append(want,
			podView{Name: "qwen-" + g + "-decode-0", Group: g, Role: "decode", Instance: "0", Worker: "0", Hostname: "qwen-" + g + "-decode-0", Subdomain: "qwen-" + g + "-decode", Generation: "0", Owner: "ModelServing/qwen"},
			podView{Name: "qwen-" + g + "-prefill-0", Group: g, Role: "prefill", Instance: "0", Worker: "0", Hostname: "qwen-" + g + "-prefill-0", Subdomain: "qwen-" + g + "-prefill", Generation: "0", Owner: "ModelServing/qwen"},
			podView{Name: "qwen-" + g + "-prefill-1", Group: g, Role: "prefill", Instance: "1", Worker: "0", Hostname: "qwen-" + g + "-prefill-1", Subdomain: "qwen-" + g + "-prefill", Generation: "0", Owner: "ModelServing/qwen"},
		)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("pods (-want +got):\n%s", diff)
	}

	// The agent: a restartable init container whose exit code 88 restarts
	// every container of the pod.
	pod := &corev1.Pod{}
	if err := k.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "qwen-0-decode-0"}, pod); err != nil {
		t.Fatal(err)
	}
	if n := len(pod.Spec.InitContainers); n != 1 {
		t.Fatalf("init containers: %d, want the agent only", n)
	}
	agent := pod.Spec.InitContainers[0]
	wantRules := []corev1.ContainerRestartRule{{
		Action:    corev1.ContainerRestartRuleActionRestartAllContainers,
		ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{Operator: corev1.ContainerRestartRuleOnExitCodesOpIn, Values: []int32{88}},
	}}
	if agent.Name != servingv1.AgentContainerName || agent.RestartPolicy == nil || *agent.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("agent container %s restartPolicy %v: want %s with restartPolicy Always", agent.Name, agent.RestartPolicy, servingv1.AgentContainerName)
	}
	if diff := cmp.Diff(wantRules, agent.RestartPolicyRules); diff != "" {
		t.Errorf("agent restartPolicyRules (-want +got):\n%s", diff)
	}
	if agent.StartupProbe == nil || agent.StartupProbe.HTTPGet == nil || agent.StartupProbe.HTTPGet.Path != "/startup" {
		t.Errorf("agent startup probe %+v: want GET /startup", agent.StartupProbe)
	}
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["HALYARD_ROLE"] != "decode" || env["HALYARD_GROUP"] != "0" || env["HALYARD_LEADER_ADDRESS"] != "qwen-0-decode-0.qwen-0-decode."+ns+".svc" {
		t.Errorf("engine env %v: want role, group and leader address", env)
	}

	// One headless service per group and role.
	var svcs corev1.ServiceList
	if err := k.c.List(context.Background(), &svcs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range svcs.Items {
		if s.Spec.ClusterIP != corev1.ClusterIPNone || !s.Spec.PublishNotReadyAddresses {
			t.Errorf("service %s: want headless with publishNotReadyAddresses", s.Name)
		}
		if s.Spec.Selector[servingv1.LabelRole] == "" || len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 8000 {
			t.Errorf("service %s selector %v ports %v: want the role selected and port 8000", s.Name, s.Spec.Selector, s.Spec.Ports)
		}
		names = append(names, s.Name)
	}
	sort.Strings(names)
	if diff := cmp.Diff([]string{"qwen-0-decode", "qwen-0-prefill", "qwen-1-decode", "qwen-1-prefill"}, names); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}

	// Status: groups pending, nothing ready, in-place restart enabled.
	ms = k.get(t, ns, "qwen")
	if ms.Status.InPlaceRestart != "Enabled" || ms.Status.Selector != servingv1.LabelModelServing+"=qwen" {
		t.Errorf("status inPlaceRestart %q selector %q", ms.Status.InPlaceRestart, ms.Status.Selector)
	}
	for _, g := range ms.Status.Groups {
		if g.Phase != servingv1.GroupPending || g.Barrier != -1 {
			t.Errorf("group %d phase %s barrier %d: want Pending with the barrier held", g.Index, g.Phase, g.Barrier)
		}
	}

	// Scheduling group 0 releases its barrier; group 1 stays held.
	node := k.createNode(t, "pd-node", nil)
	for _, p := range k.pods(t, ns, "qwen") {
		if p.Labels[servingv1.LabelGroup] == "0" {
			k.bind(t, &p, node.Name)
		}
	}
	eventually(t, waitLong, "group 0 barrier released", func() (bool, string) {
		ms := k.get(t, ns, "qwen")
		g0, g1 := group(ms, 0), group(ms, 1)
		return g0 != nil && g0.Barrier == 0 && g0.Phase == servingv1.GroupStarting && g1.Barrier == -1,
			fmt.Sprintf("groups %+v", ms.Status.Groups)
	})
	for _, p := range k.pods(t, ns, "qwen") {
		_, released := p.Annotations[servingv1.AnnotationBarrier]
		if want := p.Labels[servingv1.LabelGroup] == "0"; released != want {
			eventually(t, waitLong, "barrier annotation on "+p.Name, func() (bool, string) {
				cur := &corev1.Pod{}
				_ = k.c.Get(context.Background(), client.ObjectKeyFromObject(&p), cur)
				_, released := cur.Annotations[servingv1.AnnotationBarrier]
				return released == want, fmt.Sprintf("annotations %v", cur.Annotations)
			})
		}
	}
	if len(k.events(t, ns, "qwen", controller.ReasonGroupScheduled)) == 0 {
		t.Error("no GroupScheduled event")
	}

	// Ready pods make the group Running and count in the status.
	for _, p := range k.pods(t, ns, "qwen") {
		if p.Labels[servingv1.LabelGroup] == "0" {
			k.markRunning(t, &p, 0, true)
		}
	}
	eventually(t, waitLong, "group 0 running", func() (bool, string) {
		ms := k.get(t, ns, "qwen")
		g0 := group(ms, 0)
		return g0.Phase == servingv1.GroupRunning && ms.Status.ReadyReplicas == 1 && ms.Status.Replicas == 2,
			fmt.Sprintf("phase %s ready %d replicas %d roles %+v", g0.Phase, ms.Status.ReadyReplicas, ms.Status.Replicas, g0.Roles)
	})
	ms = k.get(t, ns, "qwen")
	if diff := cmp.Diff([]servingv1.RoleStatus{{Name: "prefill", Pods: 2, Ready: 2}, {Name: "decode", Pods: 1, Ready: 1}}, group(ms, 0).Roles); diff != "" {
		t.Errorf("group 0 roles (-want +got):\n%s", diff)
	}
}

// With Volcano's PodGroup CRD served and schedulerName volcano, each group
// gets a PodGroup with the whole group as minMember and one subgroup policy
// per role, and its pods name it.
func TestVolcanoPodGroupPerGroup(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "volcano")
	ms := pdServing(ns, "vg", 1)
	ms.Spec.Placement.SchedulerName = "volcano"
	ms.Spec.Placement.TopologyKey = "topology.kubernetes.io/zone"
	ms.Spec.Roles[0].Workers = 1
	create(t, k, ms)

	pg := &unstructured.Unstructured{}
	pg.SetGroupVersionKind(controller.PodGroupGVK)
	eventually(t, waitLong, "podgroup vg-0", func() (bool, string) {
		err := k.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "vg-0"}, pg)
		return err == nil, fmt.Sprint(err)
	})
	spec := pg.Object["spec"].(map[string]any)
	// prefill: 2 instances of a leader and a worker; decode: 1 instance.
	if got := spec["minMember"]; fmt.Sprint(got) != "5" {
		t.Errorf("minMember %v, want 5", got)
	}
	nt := spec["networkTopology"].(map[string]any)
	if nt["mode"] != "hard" || fmt.Sprint(nt["highestTierAllowed"]) != "1" {
		t.Errorf("networkTopology %v, want hard with highestTierAllowed 1", nt)
	}
	var subs []string
	for _, s := range spec["subGroupPolicy"].([]any) {
		m := s.(map[string]any)
		subs = append(subs, fmt.Sprintf("%v size=%v min=%v keys=%v", m["name"], m["subGroupSize"], m["minSubGroups"], m["matchLabelKeys"]))
	}
	if diff := cmp.Diff([]string{
		"prefill size=2 min=2 keys=[serving.halyard.dev/instance]",
		"decode size=1 min=1 keys=[serving.halyard.dev/instance]",
	}, subs); diff != "" {
		t.Errorf("subGroupPolicy (-want +got):\n%s", diff)
	}
	eventually(t, waitLong, "5 pods", func() (bool, string) {
		n := len(k.pods(t, ns, "vg"))
		return n == 5, fmt.Sprintf("%d pods", n)
	})
	for _, p := range k.pods(t, ns, "vg") {
		if p.Annotations[servingv1.AnnotationVolcanoGroupName] != "vg-0" || p.Spec.SchedulerName != "volcano" {
			t.Errorf("pod %s: group-name %q scheduler %q, want vg-0 and volcano", p.Name, p.Annotations[servingv1.AnnotationVolcanoGroupName], p.Spec.SchedulerName)
		}
	}
	if ref := metav1.GetControllerOf(pg); ref == nil || ref.Name != "vg" {
		t.Errorf("podgroup owner %v, want ModelServing vg", ref)
	}
}

// A group whose pods are not all scheduled within the gang timeout is
// deleted and created again (all or nothing on plain Kubernetes).
func TestGangTimeoutRecreatesGroup(t *testing.T) {
	k, clock := sharedCluster(t)
	ns := k.namespace(t, "gang")
	ms := pdServing(ns, "gang", 1)
	ms.Spec.Placement.GangTimeout = &metav1.Duration{Duration: time.Minute}
	create(t, k, ms)
	eventually(t, waitLong, "3 pods", func() (bool, string) {
		n := len(k.pods(t, ns, "gang"))
		return n == 3, fmt.Sprintf("%d pods", n)
	})
	before := uids(k.pods(t, ns, "gang"))
	// Only one pod gets a node: the group is incomplete.
	node := k.createNode(t, "gang-node", nil)
	p := k.pods(t, ns, "gang")[0]
	k.bind(t, &p, node.Name)

	clock.Advance(2 * time.Minute)
	k.poke(t, ns, "gang")
	// The kubelet's part: the bound pod, once being deleted, goes away.
	eventually(t, waitLong, "bound pod being deleted", func() (bool, string) {
		cur := k.pod(t, ns, p.Name)
		if cur == nil || cur.UID != p.UID {
			return true, ""
		}
		if cur.DeletionTimestamp != nil {
			forceDelete(t, k, ns, p.Name)
			return true, ""
		}
		return false, "no deletion yet"
	})
	eventually(t, waitLong, "group recreated", func() (bool, string) {
		pods := k.pods(t, ns, "gang")
		after := uids(pods)
		fresh := 0
		for u := range after {
			if !before[u] {
				fresh++
			}
		}
		return fresh == 3 && len(pods) == 3, fmt.Sprintf("%d pods, %d new", len(pods), fresh)
	})
	ms = k.get(t, ns, "gang")
	if g := group(ms, 0); g.Recreations != 1 || g.Reason != controller.ReasonGangTimeout {
		t.Errorf("group 0 recreations %d reason %s, want 1 and %s", g.Recreations, g.Reason, controller.ReasonGangTimeout)
	}
	if len(k.events(t, ns, "gang", controller.ReasonGangTimeout)) == 0 {
		t.Error("no GangTimeout event")
	}
}

func uids(pods []corev1.Pod) map[string]bool {
	out := map[string]bool{}
	for _, p := range pods {
		out[string(p.UID)] = true
	}
	return out
}

// Scaling through the scale subresource adds and removes whole groups.
func TestScaleSubresource(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "scale")
	create(t, k, pdServing(ns, "sc", 1))
	eventually(t, waitLong, "3 pods", func() (bool, string) {
		n := len(k.pods(t, ns, "sc"))
		return n == 3, fmt.Sprintf("%d pods", n)
	})
	ms := k.get(t, ns, "sc")
	scale := &autoscalingScale{}
	if err := k.c.SubResource("scale").Get(context.Background(), ms, scale.obj()); err != nil {
		t.Fatalf("get scale: %v", err)
	}
	if scale.s.Status.Selector != servingv1.LabelModelServing+"=sc" {
		t.Errorf("scale selector %q", scale.s.Status.Selector)
	}
	scale.s.Spec.Replicas = 3
	if err := k.c.SubResource("scale").Update(context.Background(), ms, client.WithSubResourceBody(scale.obj())); err != nil {
		t.Fatalf("update scale: %v", err)
	}
	eventually(t, waitLong, "9 pods in 3 groups", func() (bool, string) {
		n := len(k.pods(t, ns, "sc"))
		ms := k.get(t, ns, "sc")
		return n == 9 && ms.Status.Replicas == 3, fmt.Sprintf("%d pods, status.replicas %d", n, ms.Status.Replicas)
	})
	ms = k.get(t, ns, "sc")
	ms.Spec.Replicas = ptrInt32(1)
	if err := k.c.Update(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitLong, "back to 3 pods of group 0", func() (bool, string) {
		pods := k.pods(t, ns, "sc")
		for _, p := range pods {
			if p.Labels[servingv1.LabelGroup] != "0" {
				return false, "pod " + p.Name + " remains"
			}
		}
		return len(pods) == 3, fmt.Sprintf("%d pods", len(pods))
	})
	if len(k.events(t, ns, "sc", controller.ReasonScaledDown)) == 0 {
		t.Error("no ScaledDown event")
	}
}

func ptrInt32(v int32) *int32 { return &v }

// Invalid objects are rejected by the API server with messages that say
// what is wrong.
func TestInvalidObjectsAreRejected(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "invalid")
	tests := []struct {
		name   string
		mutate func(*servingv1.ModelServing)
		want   string
	}{
		{"unknown engine", func(m *servingv1.ModelServing) { m.Spec.Engine = "tgi" }, `spec.engine: Unsupported value: "tgi"`},
		{"no roles", func(m *servingv1.ModelServing) { m.Spec.Roles = nil }, "spec.roles"},
		{"duplicate roles", func(m *servingv1.ModelServing) { m.Spec.Roles[1].Name = "prefill" }, "Duplicate value"},
		{"bad source", func(m *servingv1.ModelServing) { m.Spec.Model.Source = "ftp://x" }, "source must be a URI with scheme hf, modelscope, s3, gs, http, https, pvc or file"},
		{"negative replicas", func(m *servingv1.ModelServing) { m.Spec.Replicas = ptrInt32(-1) }, "spec.replicas: Invalid value: -1"},
		{"role name", func(m *servingv1.ModelServing) { m.Spec.Roles[0].Name = "Prefill_1" }, "spec.roles[0].name"},
		{"worker template without workers", func(m *servingv1.ModelServing) {
			tmpl := engineTemplate("1")
			m.Spec.Roles[0].WorkerTemplate = &tmpl
		}, "workerTemplate is set but workers is 0"},
		{"no containers", func(m *servingv1.ModelServing) { m.Spec.Roles[0].Template.Spec.Containers = nil }, "containers"},
		{"name too long with role", func(m *servingv1.ModelServing) {
			m.Name = "a-very-long-model-serving-name-for-testing-x"
			m.Spec.Roles[0].Name = "prefill-extra"
		}, "at most 48 characters"},
		{"name starting with a digit", func(m *servingv1.ModelServing) { m.Name = "8b" }, "metadata.name must start with a letter"},
		{"placement mode", func(m *servingv1.ModelServing) { m.Spec.Placement.Mode = "Sometimes" }, "spec.placement.mode: Unsupported value"},
		{"recovery policy", func(m *servingv1.ModelServing) { m.Spec.Recovery.Policy = "Pray" }, "spec.recovery.policy: Unsupported value"},
		{"max unavailable 0", func(m *servingv1.ModelServing) { m.Spec.Rollout.MaxUnavailable = ptrInt32(0) }, "spec.rollout.maxUnavailable"},
		// Every field at its maximum asked for 512 × 8 × 64 × 64 pods.
		{"every field at its maximum", func(m *servingv1.ModelServing) {
			m.Spec.Replicas = ptrInt32(512)
			for len(m.Spec.Roles) < 8 {
				r := m.Spec.Roles[0]
				r.Name = fmt.Sprintf("role%d", len(m.Spec.Roles))
				m.Spec.Roles = append(m.Spec.Roles, r)
			}
			for i := range m.Spec.Roles {
				m.Spec.Roles[i].Replicas, m.Spec.Roles[i].Workers = 64, 63
			}
		}, "a group may have at most 512 pods"},
		{"too many pods per group", func(m *servingv1.ModelServing) {
			m.Spec.Roles[0].Replicas, m.Spec.Roles[0].Workers = 9, 63 // 576 pods
		}, "a group may have at most 512 pods"},
		{"too many pods in all", func(m *servingv1.ModelServing) {
			m.Spec.Replicas = ptrInt32(512)
			m.Spec.Roles[0].Replicas, m.Spec.Roles[0].Workers = 4, 1 // 8 + decode's pods per group
		}, "a ModelServing may have at most 4096 pods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms := pdServing(ns, "bad", 1)
			tt.mutate(ms)
			err := k.c.Create(context.Background(), ms)
			if err == nil {
				_ = k.c.Delete(context.Background(), ms)
				t.Fatalf("create succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}

	t.Run("the largest allowed pod count is accepted", func(t *testing.T) {
		ms := pdServing(ns, "largest", 8) // 8 groups of 512 pods: 4096
		ms.Spec.Roles = ms.Spec.Roles[:1]
		ms.Spec.Roles[0].Replicas, ms.Spec.Roles[0].Workers = 8, 63
		// A dry run: the API server validates (CEL included) and
		// stores nothing, so the controller creates no pods.
		if err := k.c.Create(context.Background(), ms, client.DryRunAll); err != nil {
			t.Fatalf("create (dry run): %v", err)
		}
	})

	t.Run("engine is immutable", func(t *testing.T) {
		create(t, k, pdServing(ns, "immutable", 1))
		var err error
		for i := 0; i < 20; i++ { // the controller writes the status meanwhile
			ms := k.get(t, ns, "immutable")
			ms.Spec.Engine = servingv1.EngineSGLang
			if err = k.c.Update(context.Background(), ms); !apierrors.IsConflict(err) {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), "engine is immutable") {
			t.Errorf("update error %v, want engine is immutable", err)
		}
	})

	t.Run("reserved container name is a condition, not a crash loop", func(t *testing.T) {
		ms := pdServing(ns, "reserved", 1)
		ms.Spec.Roles[0].Template.Spec.Containers[0].Name = servingv1.AgentContainerName
		create(t, k, ms)
		eventually(t, waitLong, "Valid=False", func() (bool, string) {
			ms := k.get(t, ns, "reserved")
			for _, c := range ms.Status.Conditions {
				if c.Type == controller.ConditionValid {
					return c.Status == metav1.ConditionFalse && c.Reason == controller.ReasonInvalidSpec &&
						strings.Contains(c.Message, `spec.roles[0].template: container name "halyard-agent" is reserved`), c.Message
				}
			}
			return false, "no Valid condition"
		})
		if n := len(k.pods(t, ns, "reserved")); n != 0 {
			t.Errorf("%d pods created for an invalid spec", n)
		}
	})
}
