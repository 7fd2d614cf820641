package controller

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/placement"
)

// actions are what one reconcile does after it has written the status.
type actions struct {
	create   []*corev1.Pod
	delete   []*corev1.Pod
	force    []*corev1.Pod // deleted with grace period 0 (lost nodes)
	annotate []annotation
	events   []event
	// pending records groups still being created, for the metrics.
	recoveries []recovery
}

type annotation struct {
	pod        *corev1.Pod
	key, value string
}

type event struct {
	warning        bool
	reason, action string
	note           string
}

type recovery struct {
	mode, outcome string
	seconds       float64
}

func (a *actions) eventf(warning bool, reason, action, format string, args ...any) {
	a.events = append(a.events, event{warning: warning, reason: reason, action: action, note: fmt.Sprintf(format, args...)})
}

// planner holds what every group of one ModelServing shares.
type planner struct {
	ms       *servingv1.ModelServing
	set      settings
	rev      string
	now      time.Time
	agent    AgentOptions
	weights  WeightsOptions
	inPlace  bool // policy InPlace and the cluster supports it
	podGroup bool // Volcano schedules the groups
	nodes    map[string]*corev1.Node
	domains  []placement.Domain
	// domainGroups counts this ModelServing's groups per domain.
	domainGroups map[string]int
	demand       corev1.ResourceList
	members      []member
	acts         *actions
	// earliest is the soonest deadline a group waits for.
	earliest time.Time
	// preheatHold, when not empty, says why groups of rev that have no
	// pods yet wait before creating them (the preheat gate).
	preheatHold string
}

func (p *planner) wake(t time.Time) {
	if p.earliest.IsZero() || t.Before(p.earliest) {
		p.earliest = t
	}
}

// groupPods splits a group's pods into live ones by name and terminating
// ones.
type groupPods struct {
	live        map[string]*corev1.Pod
	terminating map[string]*corev1.Pod
}

func (g groupPods) all() []*corev1.Pod {
	out := make([]*corev1.Pod, 0, len(g.live)+len(g.terminating))
	for _, p := range g.live {
		out = append(out, p)
	}
	for _, p := range g.terminating {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// plan advances one group's state machine. gs is the group's previous
// status (a fresh one for a new group); the returned status is written
// before p.acts are carried out.
func (p *planner) plan(gs servingv1.GroupStatus, pods groupPods) servingv1.GroupStatus {
	gs = *gs.DeepCopy()
	if gs.Domain == "" {
		for _, pod := range pods.live {
			if d := pod.Annotations[servingv1.AnnotationDomain]; d != "" {
				gs.Domain = d
				break
			}
		}
	}
	if gs.Phase == servingv1.GroupRecreating {
		if len(pods.live)+len(pods.terminating) > 0 {
			for _, pod := range pods.all() {
				if pod.DeletionTimestamp == nil {
					p.acts.delete = append(p.acts.delete, pod)
				}
			}
			return p.observe(gs, pods)
		}
		gs = p.newIncarnation(gs)
		pods = groupPods{live: map[string]*corev1.Pod{}, terminating: map[string]*corev1.Pod{}}
	}
	if gs.Phase == "" {
		gs = p.newIncarnation(gs)
	}
	if gs.Phase == servingv1.GroupRestarting {
		return p.restarting(gs, pods)
	}
	if gs.Phase == servingv1.GroupPending {
		return p.pending(gs, pods)
	}
	// Started: Starting, Running or Degraded.
	var added map[string]bool
	if elasticRoles(&p.ms.Spec) {
		added = p.resizeRoles(gs, pods)
	}
	if failures, replace := p.failures(gs, pods, added); len(failures) > 0 {
		return p.recover(gs, pods, failures, replace)
	}
	p.holdBarrier(gs, pods)
	return p.observe(gs, pods)
}

// newIncarnation resets a group about to be (re)created.
func (p *planner) newIncarnation(gs servingv1.GroupStatus) servingv1.GroupStatus {
	avoid := ""
	if gs.Reason == ReasonGangTimeout {
		avoid = gs.Domain
	}
	now := metav1.NewTime(p.now)
	gs.Phase = servingv1.GroupPending
	gs.Revision = p.rev
	gs.Since = &now
	gs.Restarts = 0
	gs.RestartStarted = nil
	gs.Members = nil
	gs.Barrier = gs.RestartGeneration - 1
	gs.Domain = ""
	if key := p.ms.Spec.Placement.TopologyKey; key != "" {
		d, err := placement.ChooseDomain(placement.Choice{
			Domains: p.domains, Demand: p.demand, Pods: len(p.members),
			Groups: p.domainGroups, Avoid: map[string]bool{avoid: avoid != ""},
		})
		switch {
		case err == nil:
			gs.Domain = d
			p.domainGroups[d]++
		case errors.Is(err, placement.ErrNoDomain) && len(p.domains) > 0:
			gs.Reason, gs.Message = ReasonNoDomainFits, err.Error()
			p.acts.eventf(true, ReasonNoDomainFits, "Place", "group %d: %v; leaving the choice to the scheduler", gs.Index, err)
		}
	}
	return gs
}

// pending creates a new group's pods and releases its barrier once every
// pod is scheduled; after the gang timeout it rolls the group back.
func (p *planner) pending(gs servingv1.GroupStatus, pods groupPods) servingv1.GroupStatus {
	if p.preheatHold != "" && gs.Revision == p.rev && len(pods.live)+len(pods.terminating) == 0 {
		// The gang timeout starts when the pods are created.
		now := metav1.NewTime(p.now)
		gs.Since = &now
		gs.Reason, gs.Message = ReasonWaitingForPreheat, p.preheatHold
		return p.observe(gs, pods)
	}
	p.createMissing(gs, pods)
	all := true
	var missing []string // the pods without their weights
	for _, m := range p.members {
		pod := pods.live[podName(p.ms.Name, gs.Index, m)]
		if pod == nil || pod.Spec.NodeName == "" {
			all = false
			break
		}
		if !hasWeights(pod) {
			missing = append(missing, pod.Name)
		}
	}
	if all && len(missing) > 0 {
		// Every pod is scheduled (the gang timeout no longer applies);
		// the engines start together once every node has the weights. A
		// pod that failed or whose node is lost meanwhile would never get
		// them: the group is recreated.
		var lost []string
		for _, m := range p.members {
			pod := pods.live[podName(p.ms.Name, gs.Index, m)]
			switch {
			case pod.Status.Phase == corev1.PodFailed:
				lost = append(lost, fmt.Sprintf("pod %s failed", pod.Name))
			case p.nodeLost(pod.Spec.NodeName):
				lost = append(lost, fmt.Sprintf("node %s of pod %s is lost", pod.Spec.NodeName, pod.Name))
			}
		}
		if len(lost) > 0 {
			return p.recreate(gs, pods, ReasonMemberFailed, strings.Join(lost, "; ")+" while the group waited for its weights")
		}
		if limit := p.weights.Timeout; limit > 0 {
			// The wait for the weights is bounded too: a fetch that hangs
			// or keeps failing does not hold the group forever.
			deadline := gs.Since.Add(limit)
			if !p.now.Before(deadline) {
				return p.recreate(gs, pods, ReasonWeightsTimeout, fmt.Sprintf("%d of %d pods had no weights on their node %s after the group's pods were created (%s)",
					len(missing), len(p.members), limit, strings.Join(missing, ", ")))
			}
			p.wake(deadline)
		}
		gs.Reason = ReasonWaitingForWeights
		gs.Message = fmt.Sprintf("every pod is scheduled; %d of %d have the weights on their node; the barrier is released when all have", len(p.members)-len(missing), len(p.members))
		return p.observe(gs, pods)
	}
	if all {
		gs.Barrier = gs.RestartGeneration
		gs.Phase = servingv1.GroupStarting
		gs.Members = baseline(p.ms.Name, gs.Index, p.members, pods)
		gs.Reason, gs.Message = ReasonGroupScheduled, "every pod is scheduled; barrier released"
		p.acts.eventf(false, ReasonGroupScheduled, "ReleaseBarrier", "group %d: all %d pods scheduled%s; barrier released", gs.Index, len(p.members), inDomain(gs.Domain))
		p.holdBarrier(gs, pods)
		return p.observe(gs, pods)
	}
	deadline := gs.Since.Add(p.set.gangTimeout)
	if !p.now.Before(deadline) {
		gs.Phase = servingv1.GroupRecreating
		gs.Recreations++
		gs.Reason = ReasonGangTimeout
		gs.Message = fmt.Sprintf("not every pod was scheduled within %s%s; recreating the group", p.set.gangTimeout, inDomain(gs.Domain))
		p.acts.eventf(true, ReasonGangTimeout, "Recreate", "group %d: %s", gs.Index, gs.Message)
		p.acts.recoveries = append(p.acts.recoveries, recovery{mode: "gang", outcome: "timeout"})
		for _, pod := range pods.all() {
			if pod.DeletionTimestamp == nil {
				p.acts.delete = append(p.acts.delete, pod)
			}
		}
		return p.observe(gs, pods)
	}
	p.wake(deadline)
	return p.observe(gs, pods)
}

// failures lists what is wrong with a started group, and the pods that must
// be replaced rather than restarted (failed, or on a lost node).
func (p *planner) failures(gs servingv1.GroupStatus, pods groupPods, added map[string]bool) ([]string, []*corev1.Pod) {
	var (
		out     []string
		replace []*corev1.Pod
	)
	base := map[string]servingv1.MemberStatus{}
	for _, m := range gs.Members {
		base[m.Pod] = m
	}
	for _, m := range p.members {
		name := podName(p.ms.Name, gs.Index, m)
		pod := pods.live[name]
		if added[name] {
			continue // an instance being added (elastic roles), not a failure
		}
		if pod == nil {
			if _, going := pods.terminating[name]; going {
				out = append(out, fmt.Sprintf("pod %s is terminating", name))
			} else {
				out = append(out, fmt.Sprintf("pod %s is missing", name))
			}
			continue
		}
		if pod.Status.Phase == corev1.PodFailed {
			out = append(out, fmt.Sprintf("pod %s failed", name))
			replace = append(replace, pod)
			continue
		}
		if n := pod.Spec.NodeName; n != "" && p.nodeLost(n) {
			out = append(out, fmt.Sprintf("node %s of pod %s is lost", n, name))
			replace = append(replace, pod)
			continue
		}
		if b, ok := base[name]; ok && b.UID != "" {
			if string(pod.UID) != b.UID {
				out = append(out, fmt.Sprintf("pod %s was replaced", name))
				continue
			}
			if r := restarts(pod); r > b.Restarts {
				out = append(out, fmt.Sprintf("pod %s restarted a container (%d restarts, %d before)", name, r, b.Restarts))
				continue
			}
		}
		if c := crashed(pod); c != "" {
			out = append(out, fmt.Sprintf("pod %s: %s", name, c))
		}
	}
	return out, replace
}

// recover starts the group's recovery according to the policy.
func (p *planner) recover(gs servingv1.GroupStatus, pods groupPods, failures []string, replace []*corev1.Pod) servingv1.GroupStatus {
	what := strings.Join(failures, "; ")
	outdated := gs.Revision != p.rev
	switch {
	case p.set.policy == servingv1.RecoveryNone:
		gs.Phase = servingv1.GroupDegraded
		gs.Reason, gs.Message = ReasonMemberFailed, what
		p.acts.force = append(p.acts.force, replace...)
		if n := p.createMissing(gs, pods); n > 0 {
			p.acts.eventf(true, ReasonPodReplaced, "Replace", "group %d: %s; replacing %d pods (recovery policy None)", gs.Index, what, n)
		}
		return p.observe(gs, pods)
	case p.set.policy == servingv1.RecoveryRecreateGroup:
		return p.recreate(gs, pods, ReasonRecreatePolicy, what+"; recovery policy RecreateGroup")
	case !p.inPlace:
		return p.recreate(gs, pods, ReasonInPlaceUnavailable, what+"; in-place restart is unavailable ("+p.agentReason()+")")
	case gs.Restarts >= p.set.maxRestarts:
		return p.recreate(gs, pods, ReasonRestartLimit, fmt.Sprintf("%s; %d in-place restarts already", what, gs.Restarts))
	case outdated:
		return p.recreate(gs, pods, ReasonRollingUpdate, what+"; the group is at an old revision")
	}
	now := metav1.NewTime(p.now)
	gs.RestartGeneration++
	gs.Restarts++
	gs.RestartStarted = &now
	gs.Phase = servingv1.GroupRestarting
	gs.Reason, gs.Message = ReasonMemberFailed, what
	gone := map[string]bool{}
	for _, pod := range replace {
		gone[pod.Name] = true
	}
	gs.Members = nil
	for _, m := range p.members {
		name := podName(p.ms.Name, gs.Index, m)
		ms := servingv1.MemberStatus{Pod: name}
		if pod := pods.live[name]; pod != nil && !gone[name] {
			ms.UID, ms.Restarts = string(pod.UID), restarts(pod)
			ms.AgentRestarts, _ = agentStatus(pod)
		}
		gs.Members = append(gs.Members, ms)
	}
	p.acts.eventf(true, ReasonMemberFailed, "RestartGroup", "group %d: %s; restarting the group in place (generation %d, attempt %d of %d)",
		gs.Index, what, gs.RestartGeneration, gs.Restarts, p.set.maxRestarts)
	p.acts.force = append(p.acts.force, replace...)
	for _, pod := range replace {
		delete(pods.live, pod.Name)
	}
	return p.restarting(gs, pods)
}

func (p *planner) agentReason() string {
	if p.agent.InPlace {
		return "enabled"
	}
	return "the cluster rejects RestartAllContainers"
}

// recreate rolls the whole group back: every pod is deleted and the group is
// created again once they are gone.
func (p *planner) recreate(gs servingv1.GroupStatus, pods groupPods, reason, msg string) servingv1.GroupStatus {
	gs.Phase = servingv1.GroupRecreating
	gs.Recreations++
	gs.Reason, gs.Message = reason, msg
	gs.RestartStarted = nil
	p.acts.eventf(reason != ReasonRollingUpdate, reason, "Recreate", "group %d: %s; recreating the group", gs.Index, msg)
	mode := "recreate"
	if reason == ReasonRollingUpdate {
		mode = "rollout"
	}
	p.acts.recoveries = append(p.acts.recoveries, recovery{mode: mode, outcome: "started"})
	for _, pod := range pods.all() {
		if pod.DeletionTimestamp != nil {
			continue
		}
		if pod.Spec.NodeName != "" && p.nodeLost(pod.Spec.NodeName) {
			p.acts.force = append(p.acts.force, pod)
		} else {
			p.acts.delete = append(p.acts.delete, pod)
		}
	}
	return p.observe(gs, pods)
}

// restarting drives an in-place restart: tell every agent, replace lost
// pods, wait until every pod has restarted and its agent runs again, then
// release the barrier.
func (p *planner) restarting(gs servingv1.GroupStatus, pods groupPods) servingv1.GroupStatus {
	deadline := gs.RestartStarted.Add(p.set.restartTimeout)
	if !p.now.Before(deadline) {
		var waiting []string
		for _, m := range gs.Members {
			if !m.Restarted {
				waiting = append(waiting, m.Pod)
			}
		}
		p.acts.recoveries = append(p.acts.recoveries, recovery{mode: "in_place", outcome: "timeout"})
		return p.recreate(gs, pods, ReasonRestartTimedOut, fmt.Sprintf("in-place restart %d did not finish within %s (waiting for %s)",
			gs.RestartGeneration, p.set.restartTimeout, strings.Join(waiting, ", ")))
	}
	gen := strconv.FormatInt(gs.RestartGeneration, 10)
	told := 0
	for _, pod := range sortedPods(pods.live) {
		if generationOf(pod) < gs.RestartGeneration {
			p.acts.annotate = append(p.acts.annotate, annotation{pod: pod, key: servingv1.AnnotationRestartGeneration, value: gen})
			told++
		}
	}
	if told > 0 {
		p.acts.eventf(false, ReasonAgentsTold, "TellAgents", "group %d: told %d agents to restart (generation %d)", gs.Index, told, gs.RestartGeneration)
	}
	p.createMissing(gs, pods)
	all := true
	for i := range gs.Members {
		m := &gs.Members[i]
		pod := pods.live[m.Pod]
		if pod == nil {
			m.Restarted = false
			all = false
			continue
		}
		fresh := m.UID == "" || string(pod.UID) != m.UID
		agentRestarts, agentUp := agentStatus(pod)
		m.Restarted = (fresh || agentRestarts > m.AgentRestarts) && agentUp && !allRestarting(pod)
		if !m.Restarted {
			all = false
		}
	}
	if !all {
		p.wake(deadline)
		return p.observe(gs, pods)
	}
	took := p.now.Sub(gs.RestartStarted.Time)
	gs.Barrier = gs.RestartGeneration
	gs.Phase = servingv1.GroupStarting
	gs.RestartStarted = nil
	gs.Members = baseline(p.ms.Name, gs.Index, p.members, pods)
	gs.Reason, gs.Message = ReasonBarrierReleased, fmt.Sprintf("every pod restarted in place (generation %d); barrier released", gs.RestartGeneration)
	p.acts.eventf(false, ReasonBarrierReleased, "ReleaseBarrier", "group %d: every pod restarted (generation %d) in %s; barrier released", gs.Index, gs.RestartGeneration, took.Round(time.Millisecond))
	p.acts.recoveries = append(p.acts.recoveries, recovery{mode: "in_place", outcome: "succeeded", seconds: took.Seconds()})
	p.holdBarrier(gs, pods)
	return p.observe(gs, pods)
}

// holdBarrier makes every live pod's barrier annotation match the status.
func (p *planner) holdBarrier(gs servingv1.GroupStatus, pods groupPods) {
	if gs.Barrier < 0 {
		return
	}
	want := strconv.FormatInt(gs.Barrier, 10)
	for _, pod := range sortedPods(pods.live) {
		if pod.Annotations[servingv1.AnnotationBarrier] != want {
			p.acts.annotate = append(p.acts.annotate, annotation{pod: pod, key: servingv1.AnnotationBarrier, value: want})
		}
	}
}

// createMissing queues the group's absent pods for creation and returns how
// many.
func (p *planner) createMissing(gs servingv1.GroupStatus, pods groupPods) int {
	return p.createMembers(gs, pods, nil)
}

// resizeRoles follows the prefill and decode roles' replicas inside a
// started group (elastic roles, under a PD autoscaling policy): the pods
// of instances the group did not start with are created, the pods of
// instances beyond the role's replicas deleted (the autoscaler drained
// them first). It returns the added members' pod names, which failures
// does not count as missing.
func (p *planner) resizeRoles(gs servingv1.GroupStatus, pods groupPods) map[string]bool {
	base := map[string]bool{}
	for _, m := range gs.Members {
		base[m.Pod] = true
	}
	want := map[string]bool{}
	added := map[string]bool{}
	for _, m := range p.members {
		name := podName(p.ms.Name, gs.Index, m)
		want[name] = true
		if !base[name] && pods.live[name] == nil {
			added[name] = true
		}
	}
	if len(added) > 0 {
		p.createMembers(gs, pods, added)
	}
	for name, pod := range pods.live {
		role := pod.Labels[servingv1.LabelRole]
		if !want[name] && (role == "prefill" || role == "decode") {
			p.acts.delete = append(p.acts.delete, pod)
		}
	}
	return added
}

// createMembers creates the group's missing pods (only those in names,
// when given).
func (p *planner) createMembers(gs servingv1.GroupStatus, pods groupPods, names map[string]bool) int {
	n := 0
	for _, m := range p.members {
		name := podName(p.ms.Name, gs.Index, m)
		if pods.live[name] != nil || pods.terminating[name] != nil || (names != nil && !names[name]) {
			continue
		}
		pg := ""
		if p.podGroup {
			pg = podGroupName(p.ms.Name, gs.Index)
		}
		pod, err := buildPod(podInput{
			ms: p.ms, group: gs.Index, member: m, revision: gs.Revision,
			generation: gs.RestartGeneration, barrier: gs.Barrier, domain: gs.Domain,
			required: p.set.required, podGroup: pg, agent: p.agentFor(), weights: p.weights,
		})
		if err != nil {
			continue
		}
		p.acts.create = append(p.acts.create, pod)
		n++
	}
	return n
}

func (p *planner) agentFor() AgentOptions {
	a := p.agent
	a.InPlace = p.agent.InPlace && p.set.policy == servingv1.RecoveryInPlace
	return a
}

// observe fills the group's per-role readiness and, for started groups, the
// phase.
func (p *planner) observe(gs servingv1.GroupStatus, pods groupPods) servingv1.GroupStatus {
	gs.Roles = gs.Roles[:0]
	allReady := true
	for _, r := range p.ms.Spec.Roles {
		rs := servingv1.RoleStatus{Name: r.Name, Pods: roleReplicas(r) * (r.Workers + 1)}
		for _, m := range p.members {
			if m.role != r.Name {
				continue
			}
			if pod := pods.live[podName(p.ms.Name, gs.Index, m)]; pod != nil && podReady(pod) && hasWeights(pod) {
				rs.Ready++
			}
		}
		if rs.Ready < rs.Pods {
			allReady = false
		}
		gs.Roles = append(gs.Roles, rs)
	}
	switch gs.Phase {
	case servingv1.GroupStarting, servingv1.GroupRunning:
		if allReady {
			gs.Phase = servingv1.GroupRunning
		} else {
			gs.Phase = servingv1.GroupStarting
		}
	case servingv1.GroupDegraded:
		if allReady {
			gs.Phase = servingv1.GroupRunning
			gs.Members = baseline(p.ms.Name, gs.Index, p.members, pods)
		}
	}
	return gs
}

// baseline records each pod's UID and restart count, against which later
// failures are detected.
func baseline(ms string, group int32, ms2 []member, pods groupPods) []servingv1.MemberStatus {
	out := make([]servingv1.MemberStatus, 0, len(ms2))
	for _, m := range ms2 {
		name := podName(ms, group, m)
		st := servingv1.MemberStatus{Pod: name, Restarted: true}
		if pod := pods.live[name]; pod != nil {
			st.UID, st.Restarts = string(pod.UID), restarts(pod)
		}
		out = append(out, st)
	}
	return out
}

func inDomain(d string) string {
	if d == "" {
		return ""
	}
	return " in domain " + d
}

func sortedPods(m map[string]*corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func generationOf(pod *corev1.Pod) int64 {
	v, err := strconv.ParseInt(pod.Annotations[servingv1.AnnotationRestartGeneration], 10, 64)
	if err != nil {
		return 0
	}
	return v
}

// restarts sums the restart counts of every container of the pod.
func restarts(pod *corev1.Pod) int32 {
	var n int32
	for _, s := range pod.Status.InitContainerStatuses {
		n += s.RestartCount
	}
	for _, s := range pod.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

// agentStatus returns the restart count of the pod's agent container and
// whether an instance of it runs. A pod has restarted in place when its
// agent runs again with a higher count: the kubelet restarts every container
// of the pod (RestartAllContainers) only after the agent exits 88, and starts
// the agent first. The sum of all restart counts says less on a real kubelet
// (docs/kubernetes.md): a failed engine's own restart raises it before the
// agent has exited, and the kubelet raises every count when it removes the
// containers, when AllContainersRestarting is already False and no agent
// runs yet.
func agentStatus(pod *corev1.Pod) (restarts int32, running bool) {
	for _, s := range pod.Status.InitContainerStatuses {
		if s.Name == servingv1.AgentContainerName {
			return s.RestartCount, s.State.Running != nil
		}
	}
	return 0, false
}

// crashed says why a main container is down, or "".
func crashed(pod *corev1.Pod) string {
	for _, s := range pod.Status.ContainerStatuses {
		if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
			return fmt.Sprintf("container %s exited with code %d", s.Name, t.ExitCode)
		}
		if w := s.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
			return fmt.Sprintf("container %s is in CrashLoopBackOff", s.Name)
		}
	}
	return ""
}

// allRestarting reports the kubelet's AllContainersRestarting condition.
func allRestarting(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodConditionType("AllContainersRestarting") {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podReady(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp != nil {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// NodeLostAfter is how long a node may report Ready other than True before
// its pods count as lost; a deleted node's pods are lost at once.
const NodeLostAfter = 40 * time.Second

// nodeLost is true for a node that is gone, or not ready for NodeLostAfter;
// a node that has just turned not ready schedules a wake-up instead.
func (p *planner) nodeLost(name string) bool {
	n := p.nodes[name]
	if n == nil {
		return true
	}
	for _, c := range n.Status.Conditions {
		if c.Type != corev1.NodeReady || c.Status == corev1.ConditionTrue {
			continue
		}
		lostAt := c.LastTransitionTime.Add(NodeLostAfter)
		if !p.now.Before(lostAt) {
			return true
		}
		p.wake(lostAt)
	}
	return false
}
