package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/placement"
)

// conflictRetry is how soon a reconcile whose status write lost a race runs
// again (with the fresh object from the cache).
const conflictRetry = 50 * time.Millisecond

// Clock tells the time; tests inject a settable one.
type Clock interface{ Now() time.Time }

// EventRecorder records Kubernetes events (events.k8s.io/v1).
type EventRecorder interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// ModelServingReconciler turns a ModelServing into serving groups of pods.
type ModelServingReconciler struct {
	Client   client.Client
	Recorder EventRecorder
	Clock    Clock
	Logger   *slog.Logger
	// Agent shapes the injected agent; Agent.InPlace is the cluster's
	// support for RestartAllContainers (see ProbeInPlaceRestart).
	Agent AgentOptions
	// InPlaceReason explains Agent.InPlace, for the status.
	InPlaceReason string
	// Volcano reports whether Volcano's PodGroup CRD is served; nil: never.
	Volcano func(context.Context) bool
	Metrics *Metrics
	// Weights wires the fetch of model weights into the node cache.
	Weights WeightsOptions
	// preheats remembers the preheat jobs created, by ModelServing UID,
	// revision and source (see preheat).
	preheats sync.Map
}

// +kubebuilder:rbac:groups=serving.halyard.dev,resources=modelservings,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=serving.halyard.dev,resources=modelservings/status;modelservings/scale,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;create;delete;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// The fetchers' progress reports (core Events labelled with the pod).
// +kubebuilder:rbac:groups="",resources=events,verbs=get;list;watch
// +kubebuilder:rbac:groups=scheduling.volcano.sh,resources=podgroups,verbs=get;create;delete
// The agent's RoleBinding: created in each namespace that has a
// ModelServing (create cannot be limited by name), read and updated only
// under its one name, bound only to the halyard-agent ClusterRole. No Role
// writes and no list or watch of RBAC objects (see ensureAgentRBAC).
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings,verbs=create
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=rolebindings,verbs=get;update,resourceNames=halyard-agent
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles,verbs=bind,resourceNames=halyard-agent

// Reconcile implements reconcile.Reconciler.
func (r *ModelServingReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	start := time.Now()
	defer func() {
		if r.Metrics != nil {
			r.Metrics.ReconcileTime.Observe(time.Since(start).Seconds())
		}
	}()
	ms := &servingv1.ModelServing{}
	if err := r.Client.Get(ctx, req.NamespacedName, ms); err != nil {
		if apierrors.IsNotFound(err) {
			r.forgetMetrics(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("get modelserving: %w", err)
	}
	if ms.DeletionTimestamp != nil {
		return reconcile.Result{}, nil
	}
	log := r.Logger.With("modelserving", req.String())
	status := ms.Status.DeepCopy()
	status.ObservedGeneration = ms.Generation
	status.Selector = servingv1.LabelModelServing + "=" + ms.Name
	status.InPlaceRestart = r.inPlaceSummary(ms)

	if err := validate(&ms.Spec); err != nil {
		setCondition(status, ms.Generation, ConditionValid, metav1.ConditionFalse, ReasonInvalidSpec, err.Error())
		setCondition(status, ms.Generation, ConditionAvailable, metav1.ConditionFalse, ReasonInvalidSpec, "the spec is invalid; see the Valid condition")
		return r.writeStatus(ctx, ms, status)
	}
	setCondition(status, ms.Generation, ConditionValid, metav1.ConditionTrue, ReasonSpecValid, "the spec can be turned into pods")

	p, byGroup, err := r.planner(ctx, ms)
	if err != nil {
		return reconcile.Result{}, err
	}
	prev := map[int32]servingv1.GroupStatus{}
	for _, g := range status.Groups {
		prev[g.Index] = g
	}
	if _, ok := r.Weights.fetched(ms); ok && status.Weights == nil {
		status.Weights = &servingv1.WeightsStatus{}
	}
	// The preheat is followed before the rollout and the groups are
	// planned: its gate holds the rollout and the new revision's first pods.
	r.preheat(ctx, ms, status, p)
	r.rollout(p, prev)

	groups := make([]servingv1.GroupStatus, 0, p.set.replicas)
	for i := int32(0); i < p.set.replicas; i++ {
		gs, ok := prev[i]
		if !ok {
			gs = servingv1.GroupStatus{Index: i, Barrier: -1}
		}
		groups = append(groups, p.plan(gs, byGroup[i]))
	}
	// Scale down: every pod of a group at or above replicas goes.
	var gone []int32
	for idx, pods := range byGroup {
		if idx < p.set.replicas {
			continue
		}
		gone = append(gone, idx)
		for _, pod := range pods.all() {
			if pod.DeletionTimestamp == nil {
				p.acts.delete = append(p.acts.delete, pod)
			}
		}
	}
	for idx := range prev {
		if idx >= p.set.replicas {
			if _, ok := byGroup[idx]; !ok {
				gone = append(gone, idx)
			}
		}
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i] < gone[j] })
	if len(gone) > 0 {
		p.acts.eventf(false, ReasonScaledDown, "ScaleDown", "removing groups %v", gone)
	}
	status.Groups = groups
	summarize(ms, status, p)
	r.summarizeWeights(ctx, ms, status, byGroup, p.acts)

	res, err := r.writeStatus(ctx, ms, status)
	if err != nil || res.RequeueAfter > 0 {
		return res, err
	}
	if err := r.act(ctx, ms, p, gone, log); err != nil {
		return reconcile.Result{}, err
	}
	r.recordMetrics(ms, status)
	if !p.earliest.IsZero() {
		after := p.earliest.Sub(r.Clock.Now())
		if after < 100*time.Millisecond {
			after = 100 * time.Millisecond
		}
		return reconcile.Result{RequeueAfter: after}, nil
	}
	return reconcile.Result{}, nil
}

func (r *ModelServingReconciler) inPlaceSummary(ms *servingv1.ModelServing) string {
	switch {
	case resolve(&ms.Spec).policy != servingv1.RecoveryInPlace:
		return "Disabled: recovery policy is " + string(resolve(&ms.Spec).policy)
	case r.Agent.InPlace:
		return "Enabled"
	default:
		return "Unavailable: " + r.InPlaceReason
	}
}

// planner gathers the pods, nodes and domains one reconcile plans with.
func (r *ModelServingReconciler) planner(ctx context.Context, ms *servingv1.ModelServing) (*planner, map[int32]groupPods, error) {
	set := resolve(&ms.Spec)
	p := &planner{
		ms: ms, set: set, now: r.Clock.Now(), agent: r.Agent, weights: r.Weights,
		inPlace:      r.Agent.InPlace && set.policy == servingv1.RecoveryInPlace,
		members:      members(ms.Spec.Roles),
		acts:         &actions{},
		domainGroups: map[string]int{},
		nodes:        map[string]*corev1.Node{},
	}
	p.rev = revision(&ms.Spec, r.Agent.Image, r.Agent.InPlace)
	p.podGroup = ms.Spec.Placement.SchedulerName == "volcano" && r.Volcano != nil && r.Volcano(ctx)

	var podList corev1.PodList
	if err := r.Client.List(ctx, &podList, client.InNamespace(ms.Namespace), client.MatchingLabels{servingv1.LabelModelServing: ms.Name}); err != nil {
		return nil, nil, fmt.Errorf("list pods: %w", err)
	}
	byGroup := map[int32]groupPods{}
	for i := range podList.Items {
		pod := &podList.Items[i]
		if !metav1.IsControlledBy(pod, ms) {
			continue
		}
		idx, err := strconv.Atoi(pod.Labels[servingv1.LabelGroup])
		if err != nil {
			continue
		}
		g, ok := byGroup[int32(idx)]
		if !ok {
			g = groupPods{live: map[string]*corev1.Pod{}, terminating: map[string]*corev1.Pod{}}
			byGroup[int32(idx)] = g
		}
		if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded {
			g.terminating[pod.Name] = pod
		} else {
			g.live[pod.Name] = pod
		}
	}

	var nodeList corev1.NodeList
	if err := r.Client.List(ctx, &nodeList); err != nil {
		return nil, nil, fmt.Errorf("list nodes: %w", err)
	}
	for i := range nodeList.Items {
		p.nodes[nodeList.Items[i].Name] = &nodeList.Items[i]
	}
	if key := ms.Spec.Placement.TopologyKey; key != "" {
		p.domains = r.domains(ctx, &nodeList, key)
		for _, g := range ms.Status.Groups {
			if g.Domain != "" && g.Index < set.replicas && g.Phase != servingv1.GroupRecreating {
				p.domainGroups[g.Domain]++
			}
		}
		var specs []corev1.PodSpec
		for _, m := range p.members {
			pod, err := buildPod(podInput{ms: ms, member: m, agent: r.Agent, weights: r.Weights})
			if err == nil {
				specs = append(specs, pod.Spec)
			}
		}
		p.demand = placement.Demand(specs)
	}
	return p, byGroup, nil
}

// domains sums each domain's free resources; requests are known only for
// the pods this controller manages (its cache holds no others), so free
// resources are an upper bound and the scheduler has the last word.
func (r *ModelServingReconciler) domains(ctx context.Context, nodes *corev1.NodeList, key string) []placement.Domain {
	requested := map[string]corev1.ResourceList{}
	var all corev1.PodList
	if err := r.Client.List(ctx, &all); err == nil {
		for i := range all.Items {
			pod := &all.Items[i]
			if pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil {
				continue
			}
			sum := requested[pod.Spec.NodeName]
			if sum == nil {
				sum = corev1.ResourceList{}
				requested[pod.Spec.NodeName] = sum
			}
			for name, q := range placement.PodRequests(&pod.Spec) {
				s := sum[name]
				s.Add(q)
				sum[name] = s
			}
		}
	}
	in := make([]placement.Node, 0, len(nodes.Items))
	for i := range nodes.Items {
		n := &nodes.Items[i]
		in = append(in, placement.Node{
			Name: n.Name, Labels: n.Labels, Allocatable: n.Status.Allocatable,
			Requested: requested[n.Name], Schedulable: schedulable(n),
		})
	}
	return placement.Domains(in, key)
}

func schedulable(n *corev1.Node) bool {
	if n.Spec.Unschedulable {
		return false
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			return false
		}
	}
	return true
}

// rollout marks outdated groups for recreation: at once when they are not
// serving anyway, otherwise highest index first while fewer than
// maxUnavailable groups are unavailable. Groups below the partition keep
// their revision.
func (r *ModelServingReconciler) rollout(p *planner, prev map[int32]servingv1.GroupStatus) {
	unavailable := int32(0)
	for i := int32(0); i < p.set.replicas; i++ {
		if g, ok := prev[i]; !ok || g.Phase != servingv1.GroupRunning {
			unavailable++
		}
	}
	for i := p.set.replicas - 1; i >= p.set.partition; i-- {
		g, ok := prev[i]
		if !ok || g.Revision == p.rev || g.Phase == servingv1.GroupRecreating || g.Phase == "" {
			continue
		}
		if g.Phase == servingv1.GroupRunning {
			// While the preheat gate holds, running groups keep serving
			// the old revision rather than wait, down, for the preheat.
			if unavailable >= p.set.maxUnavailable || p.preheatHold != "" {
				continue
			}
			unavailable++
		}
		g.Phase = servingv1.GroupRecreating
		g.Reason = ReasonRollingUpdate
		g.Message = fmt.Sprintf("revision %s replaces %s", p.rev, g.Revision)
		p.acts.eventf(false, ReasonRollingUpdate, "Recreate", "group %d: rolling out revision %s (was %s)", i, p.rev, g.Revision)
		p.acts.recoveries = append(p.acts.recoveries, recovery{mode: "rollout", outcome: "started"})
		prev[i] = g
	}
}

// summarize fills the counts and conditions.
func summarize(ms *servingv1.ModelServing, st *servingv1.ModelServingStatus, p *planner) {
	st.UpdateRevision = p.rev
	st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = 0, 0, 0
	recovering := []string{}
	for _, g := range st.Groups {
		st.Replicas++
		if g.Phase == servingv1.GroupRunning {
			st.ReadyReplicas++
		}
		if g.Revision == p.rev && g.Phase != servingv1.GroupRecreating {
			st.UpdatedReplicas++
		}
		if g.Phase == servingv1.GroupRestarting || (g.Phase == servingv1.GroupRecreating && g.Reason != ReasonRollingUpdate) {
			recovering = append(recovering, fmt.Sprintf("group %d: %s", g.Index, g.Reason))
		}
	}
	gen := ms.Generation
	switch {
	case p.set.replicas == 0:
		setCondition(st, gen, ConditionAvailable, metav1.ConditionTrue, ReasonNoGroups, "no groups requested")
	case st.ReadyReplicas == p.set.replicas:
		setCondition(st, gen, ConditionAvailable, metav1.ConditionTrue, ReasonAllGroupsReady, fmt.Sprintf("%d of %d groups ready", st.ReadyReplicas, p.set.replicas))
	default:
		setCondition(st, gen, ConditionAvailable, metav1.ConditionFalse, ReasonGroupsNotReady, fmt.Sprintf("%d of %d groups ready", st.ReadyReplicas, p.set.replicas))
	}
	wantUpdated := p.set.replicas - p.set.partition
	if wantUpdated < 0 {
		wantUpdated = 0
	}
	switch {
	case st.UpdatedReplicas < wantUpdated:
		setCondition(st, gen, ConditionProgressing, metav1.ConditionTrue, ReasonRollingUpdate, fmt.Sprintf("%d of %d groups at revision %s", st.UpdatedReplicas, wantUpdated, p.rev))
	case st.ReadyReplicas < p.set.replicas:
		setCondition(st, gen, ConditionProgressing, metav1.ConditionTrue, ReasonCreating, fmt.Sprintf("%d of %d groups ready", st.ReadyReplicas, p.set.replicas))
	default:
		setCondition(st, gen, ConditionProgressing, metav1.ConditionFalse, ReasonRolloutComplete, "every group is at the update revision and ready")
	}
	if len(recovering) > 0 {
		setCondition(st, gen, ConditionRecovering, metav1.ConditionTrue, ReasonMemberFailed, joinMax(recovering, 5))
	} else {
		setCondition(st, gen, ConditionRecovering, metav1.ConditionFalse, ReasonIdle, "no group is recovering")
	}
}

func joinMax(s []string, n int) string {
	out := ""
	for i, v := range s {
		if i == n {
			return out + fmt.Sprintf("; and %d more", len(s)-n)
		}
		if i > 0 {
			out += "; "
		}
		out += v
	}
	return out
}

func setCondition(st *servingv1.ModelServingStatus, gen int64, typ string, s metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
}

// writeStatus writes the status when it changed; a conflict requeues.
func (r *ModelServingReconciler) writeStatus(ctx context.Context, ms *servingv1.ModelServing, st *servingv1.ModelServingStatus) (reconcile.Result, error) {
	if equality.Semantic.DeepEqual(&ms.Status, st) {
		return reconcile.Result{}, nil
	}
	ms.Status = *st
	if err := r.Client.Status().Update(ctx, ms); err != nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		return reconcile.Result{}, fmt.Errorf("update status: %w", err)
	}
	return reconcile.Result{}, nil
}

// act carries out the planned writes. Every write is idempotent: an
// already created pod, an already deleted one, are fine.
func (r *ModelServingReconciler) act(ctx context.Context, ms *servingv1.ModelServing, p *planner, gone []int32, log *slog.Logger) error {
	var errs []error
	if err := r.ensureServices(ctx, ms, p.set.replicas); err != nil {
		errs = append(errs, err)
	}
	if err := r.ensureAgentRBAC(ctx, ms); err != nil {
		errs = append(errs, err)
	}
	if p.podGroup {
		for i := int32(0); i < p.set.replicas; i++ {
			pg := buildPodGroup(ms, i, p.set.required)
			if err := controllerutil.SetControllerReference(ms, pg, r.Client.Scheme()); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := r.Client.Create(ctx, pg); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("create podgroup %s: %w", pg.GetName(), err))
			}
		}
	}
	for _, idx := range gone {
		if p.podGroup {
			pg := &unstructured.Unstructured{}
			pg.SetGroupVersionKind(PodGroupGVK)
			pg.SetName(podGroupName(ms.Name, idx))
			pg.SetNamespace(ms.Namespace)
			if err := r.Client.Delete(ctx, pg); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete podgroup %s: %w", pg.GetName(), err))
			}
		}
	}
	for _, pod := range p.acts.force {
		r.podOp("force_delete", r.Client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID}), &errs, pod.Name)
	}
	for _, pod := range p.acts.delete {
		r.podOp("delete", r.Client.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}), &errs, pod.Name)
	}
	for _, a := range p.acts.annotate {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, a.key, a.value)
		r.podOp("annotate", r.Client.Patch(ctx, a.pod, client.RawPatch(types.MergePatchType, []byte(patch))), &errs, a.pod.Name)
	}
	createFailed := ""
	for _, pod := range p.acts.create {
		err := r.Client.Create(ctx, pod)
		if apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil && createFailed == "" {
			createFailed = err.Error()
		}
		r.podOp("create", err, &errs, pod.Name)
	}
	for _, e := range p.acts.events {
		typ := corev1.EventTypeNormal
		if e.warning {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(ms, nil, typ, e.reason, e.action, "%s", e.note)
		log.Info("group event", "reason", e.reason, "note", e.note)
	}
	if r.Metrics != nil {
		for _, rc := range p.acts.recoveries {
			r.Metrics.Recoveries.WithLabelValues(rc.mode, rc.outcome).Inc()
			if rc.mode == "in_place" && rc.outcome == "succeeded" {
				r.Metrics.RestartDuration.Observe(rc.seconds)
			}
		}
	}
	if createFailed != "" {
		// A template the API server rejects is reported on the object, and
		// retried with backoff rather than in a tight loop.
		r.Recorder.Eventf(ms, nil, corev1.EventTypeWarning, ReasonPodCreateFailed, "CreatePod", "%s", createFailed)
		st := ms.Status.DeepCopy()
		setCondition(st, ms.Generation, ConditionValid, metav1.ConditionFalse, ReasonPodCreateFailed, createFailed)
		if _, err := r.writeStatus(ctx, ms, st); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *ModelServingReconciler) podOp(op string, err error, errs *[]error, name string) {
	result := "ok"
	if err != nil && !apierrors.IsNotFound(err) && (op == "create" || !apierrors.IsConflict(err)) {
		result = "error"
		*errs = append(*errs, fmt.Errorf("%s pod %s: %w", op, name, err))
	}
	if r.Metrics != nil {
		r.Metrics.PodOperations.WithLabelValues(op, result).Inc()
	}
}

// ensureServices keeps one headless service per group and role; pods use it
// as their subdomain, so <pod>.<service>.<namespace>.svc resolves (the
// leader address of multi-node engines).
func (r *ModelServingReconciler) ensureServices(ctx context.Context, ms *servingv1.ModelServing, replicas int32) error {
	var list corev1.ServiceList
	if err := r.Client.List(ctx, &list, client.InNamespace(ms.Namespace), client.MatchingLabels{servingv1.LabelModelServing: ms.Name}); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	have := map[string]*corev1.Service{}
	for i := range list.Items {
		have[list.Items[i].Name] = &list.Items[i]
	}
	want := map[string]bool{}
	var errs []error
	for g := int32(0); g < replicas; g++ {
		for _, role := range ms.Spec.Roles {
			name := serviceName(ms.Name, g, role.Name)
			want[name] = true
			if have[name] != nil {
				continue
			}
			labels := groupLabels(ms.Name, g)
			labels[servingv1.LabelRole] = role.Name
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ms.Namespace, Labels: labels},
				Spec: corev1.ServiceSpec{
					ClusterIP:                corev1.ClusterIPNone,
					Selector:                 labels,
					PublishNotReadyAddresses: true,
					Ports:                    servicePorts(role.Template.Spec.Containers),
				},
			}
			if err := controllerutil.SetControllerReference(ms, svc, r.Client.Scheme()); err != nil {
				return err
			}
			if err := r.Client.Create(ctx, svc); err != nil && !apierrors.IsAlreadyExists(err) {
				errs = append(errs, fmt.Errorf("create service %s: %w", name, err))
			}
		}
	}
	for name, svc := range have {
		if !want[name] && metav1.IsControlledBy(svc, ms) {
			if err := r.Client.Delete(ctx, svc); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete service %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func servicePorts(cs []corev1.Container) []corev1.ServicePort {
	var out []corev1.ServicePort
	seen := map[int32]bool{}
	for _, c := range cs {
		for _, p := range c.Ports {
			if seen[p.ContainerPort] {
				continue
			}
			seen[p.ContainerPort] = true
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			name := p.Name
			if name == "" {
				name = "port-" + strconv.Itoa(int(p.ContainerPort))
			}
			out = append(out, corev1.ServicePort{Name: name, Port: p.ContainerPort, Protocol: proto})
		}
	}
	return out
}

// Agent RBAC: the agent watches its own pod, so the pods' service accounts
// may get, list and watch pods in their namespace. The permissions are the
// ClusterRole halyard-agent, installed with the controller (config/rbac,
// the Helm chart); the controller binds it per namespace with a RoleBinding
// of the same name. It writes no Roles: with only `bind` on that one
// ClusterRole, the API server's escalation check keeps it from binding any
// role whose permissions it does not hold itself.
const agentRBACName = "halyard-agent"

// ensureAgentRBAC creates or extends the namespace's halyard-agent
// RoleBinding. RoleBindings are not cached (the manager's client reads them
// from the API server), so the controller needs get on that name only, not
// list and watch on every RoleBinding in the cluster.
func (r *ModelServingReconciler) ensureAgentRBAC(ctx context.Context, ms *servingv1.ModelServing) error {
	sas := map[string]bool{}
	for _, role := range ms.Spec.Roles {
		sas[saName(&role.Template.Spec)] = true
		if role.WorkerTemplate != nil {
			sas[saName(&role.WorkerTemplate.Spec)] = true
		}
	}
	key := types.NamespacedName{Namespace: ms.Namespace, Name: agentRBACName}
	var rb rbacv1.RoleBinding
	err := r.Client.Get(ctx, key, &rb)
	if apierrors.IsNotFound(err) {
		rb = rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: agentRBACName, Namespace: ms.Namespace},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: agentRBACName},
		}
		addSubjects(&rb, ms.Namespace, sas)
		if err := r.Client.Create(ctx, &rb); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create agent rolebinding: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get agent rolebinding: %w", err)
	}
	if addSubjects(&rb, ms.Namespace, sas) {
		if err := r.Client.Update(ctx, &rb); err != nil && !apierrors.IsConflict(err) {
			return fmt.Errorf("update agent rolebinding: %w", err)
		}
	}
	return nil
}

func saName(spec *corev1.PodSpec) string {
	if spec.ServiceAccountName != "" {
		return spec.ServiceAccountName
	}
	return "default"
}

// addSubjects adds the missing service accounts and reports whether it
// changed the binding.
func addSubjects(rb *rbacv1.RoleBinding, ns string, sas map[string]bool) bool {
	have := map[string]bool{}
	for _, s := range rb.Subjects {
		if s.Kind == rbacv1.ServiceAccountKind && s.Namespace == ns {
			have[s.Name] = true
		}
	}
	names := make([]string, 0, len(sas))
	for n := range sas {
		if !have[n] {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		rb.Subjects = append(rb.Subjects, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: n, Namespace: ns})
	}
	return len(names) > 0
}

func (r *ModelServingReconciler) recordMetrics(ms *servingv1.ModelServing, st *servingv1.ModelServingStatus) {
	if r.Metrics == nil {
		return
	}
	counts := map[servingv1.GroupPhase]int{}
	for _, g := range st.Groups {
		counts[g.Phase]++
	}
	for _, ph := range allPhases {
		r.Metrics.Groups.WithLabelValues(ms.Namespace, ms.Name, string(ph)).Set(float64(counts[ph]))
	}
}

func (r *ModelServingReconciler) forgetMetrics(key types.NamespacedName) {
	if r.Metrics == nil {
		return
	}
	for _, ph := range allPhases {
		r.Metrics.Groups.DeleteLabelValues(key.Namespace, key.Name, string(ph))
	}
}

var allPhases = []servingv1.GroupPhase{
	servingv1.GroupPending, servingv1.GroupStarting, servingv1.GroupRunning,
	servingv1.GroupRestarting, servingv1.GroupRecreating, servingv1.GroupDegraded,
}

// SetupWithManager registers the reconciler: it watches ModelServings, the
// pods and services it owns, and nodes (a lost node fails its groups).
func (r *ModelServingReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&servingv1.ModelServing{}).
		Owns(&corev1.Pod{}).
		Owns(&corev1.Service{}).
		Watches(&corev1.Node{}, nodeHandler(mgr.GetClient())).
		Watches(&corev1.Event{}, reportHandler()).
		WithOptions(controllerOptions(concurrency)).
		Complete(r)
}

var _ reconcile.Reconciler = (*ModelServingReconciler)(nil)
