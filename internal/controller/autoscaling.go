package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
)

// Reasons of the autoscaling conditions.
const (
	ReasonAutoscalerDeciding = "Deciding"
	ReasonAutoscalerPaused   = "Paused"
	ReasonManualOverride     = "ManualOverride"
	ReasonNoSignals          = "NoSignals"
	ReasonAtBound            = "AtBound"
	ReasonWithinBounds       = "WithinBounds"
	ReasonScaled             = "Autoscaled"
)

// SignalSource gives a pool's autoscaling signals (the pool of a
// ModelServing is "namespace/name", as the routers' Kubernetes discovery
// names it).
type SignalSource interface {
	Signals(ctx context.Context, pool string) (autoscale.Signals, error)
}

// SignalFunc adapts a function to SignalSource.
type SignalFunc func(ctx context.Context, pool string) (autoscale.Signals, error)

// Signals implements SignalSource.
func (f SignalFunc) Signals(ctx context.Context, pool string) (autoscale.Signals, error) {
	return f(ctx, pool)
}

// RouterSignals reads GET /autoscale/signals?pool= from every router's
// admin listener and merges the answers: the engines' scraped state (every
// router scrapes the same engines) is taken from the router that sees most
// engines, what each router counts itself (outstanding prefill, generated
// tokens, waiting room) is summed, attainment is the lowest.
type RouterSignals struct {
	// URLs are the routers' admin listeners, e.g. http://10.0.0.5:8081.
	URLs   []string
	Client *http.Client
}

// Signals implements SignalSource. A router that fails is skipped; all
// failing is an error.
func (s *RouterSignals) Signals(ctx context.Context, pool string) (autoscale.Signals, error) {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	var out autoscale.Signals
	out.TTFTAttainment, out.TPOTAttainment = autoscale.Unknown, autoscale.Unknown
	var errs []error
	ok := 0
	for _, u := range s.URLs {
		sig, err := fetchSignals(ctx, c, u, pool)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ok++
		mergeSignals(&out, sig)
		for role, rs := range sig.Roles {
			if out.Roles == nil {
				out.Roles = map[string]autoscale.Signals{}
			}
			cur, seen := out.Roles[role]
			if !seen {
				cur.TTFTAttainment, cur.TPOTAttainment = autoscale.Unknown, autoscale.Unknown
			}
			mergeSignals(&cur, rs)
			out.Roles[role] = cur
		}
	}
	if ok == 0 {
		return out, fmt.Errorf("no router answered: %w", errors.Join(errs...))
	}
	return out, nil
}

// mergeSignals adds one router's answer to out: the engines' scraped
// state from the router that sees most engines, router-local counts
// summed, attainment the lowest.
func mergeSignals(out *autoscale.Signals, sig autoscale.Signals) {
	if sig.Engines >= out.Engines {
		out.Engines, out.Waiting, out.Running, out.KVUsage = sig.Engines, sig.Waiting, sig.Running, sig.KVUsage
	}
	out.PrefillTokens += sig.PrefillTokens
	out.TokensPerSecond += sig.TokensPerSecond
	out.RequestsPerSecond += sig.RequestsPerSecond
	out.WaitingRoom += sig.WaitingRoom
	out.TTFTAttainment = lowestKnown(out.TTFTAttainment, sig.TTFTAttainment)
	out.TPOTAttainment = lowestKnown(out.TPOTAttainment, sig.TPOTAttainment)
}

func lowestKnown(a, b float64) float64 {
	switch {
	case b < 0:
		return a
	case a < 0:
		return b
	}
	return min(a, b)
}

func fetchSignals(ctx context.Context, c *http.Client, base, pool string) (autoscale.Signals, error) {
	var body struct {
		Pools map[string]autoscale.Signals `json:"pools"`
	}
	err := getRouterJSON(ctx, c, base, "/autoscale/signals", pool, 1<<20, &body)
	if errors.Is(err, errRouterNotFound) { // the router has no endpoint of the pool yet
		return autoscale.Signals{TTFTAttainment: autoscale.Unknown, TPOTAttainment: autoscale.Unknown}, nil
	}
	if err != nil {
		return autoscale.Signals{}, err
	}
	return body.Pools[pool], nil
}

// errRouterNotFound is getRouterJSON's error for a 404.
var errRouterNotFound = errors.New("not found")

// getRouterJSON reads a router's admin answer GET base+path?pool=pool, at
// most limit bytes of JSON, into out. A 404 is an error wrapping
// errRouterNotFound.
func getRouterJSON(ctx context.Context, c *http.Client, base, path, pool string, limit int64, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path+"?pool="+url.QueryEscape(pool), nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("router %s: %w", base, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("router %s: %s: %w", base, path, errRouterNotFound)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("router %s: %s: status %d", base, path, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, limit)).Decode(out); err != nil {
		return fmt.Errorf("router %s: %s: %w", base, path, err)
	}
	return nil
}

// AutoscalingReconciler applies package autoscale to every ModelServing
// with spec.autoscaling: every Interval it reads the pool's signals,
// decides, writes spec.replicas (the ModelServing reconciler then creates
// or removes groups) and reports the decision in status.autoscaling and
// the ScalingActive and ScalingLimited conditions.
//
// Precedence: a spec.replicas the autoscaler did not write (kubectl
// scale, an HPA) is a manual override, kept for
// spec.autoscaling.manualOverride (default 10m), then the autoscaler
// resumes from it. With spec.autoscaling.paused, or without
// spec.autoscaling, spec.replicas is left alone.
type AutoscalingReconciler struct {
	Client  client.Client
	Signals SignalSource
	// Endpoints gives the routers' per-endpoint view for scale-down
	// (victims, drains); default: Signals when it is an EndpointSource.
	// Without one, scale-down drains the highest-indexed groups for
	// drainGrace.
	Endpoints EndpointSource
	Clock     Clock
	Logger    *slog.Logger
	// Interval between decisions; default 5s.
	Interval time.Duration

	mu      sync.Mutex
	scalers map[types.NamespacedName]*scalerState
}

type scalerState struct {
	a      *autoscale.Autoscaler
	policy string // the spec it was built from, to rebuild on change
	// starting records when groups were first seen not ready, by index,
	// to observe cold starts.
	starting map[int32]time.Time
}

// Reconcile implements reconcile.Reconciler.
func (r *AutoscalingReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	interval := r.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	ms := &servingv1.ModelServing{}
	if err := r.Client.Get(ctx, req.NamespacedName, ms); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, fmt.Errorf("get modelserving: %w", err)
	}
	spec := ms.Spec.Autoscaling
	if spec == nil || ms.DeletionTimestamp != nil {
		r.forget(req.NamespacedName)
		return reconcile.Result{}, nil
	}
	now := r.Clock.Now()
	st := ms.Status.DeepCopy()
	if st.Autoscaling == nil {
		st.Autoscaling = &servingv1.AutoscalingStatus{}
	}
	as := st.Autoscaling
	replicas := int32(1)
	if ms.Spec.Replicas != nil {
		replicas = *ms.Spec.Replicas
	}
	as.CurrentGroups = replicas
	if spec.Paused {
		r.cancelDrains(ctx, ms, as)
		r.setCond(st, ms, servingv1.ConditionScalingActive, metav1.ConditionFalse, ReasonAutoscalerPaused, "spec.autoscaling.paused: spec.replicas is left to its owner")
		return r.write(ctx, ms, st, 0)
	}
	sc, err := r.scaler(req.NamespacedName, ms)
	if err != nil {
		r.setCond(st, ms, servingv1.ConditionScalingActive, metav1.ConditionFalse, ReasonInvalidSpec, err.Error())
		return r.write(ctx, ms, st, 0)
	}
	r.observeColdStarts(sc, ms, now)

	// A manual scale: replicas differ from what the autoscaler last wrote
	// (the annotation its own patches set).
	override := durOr(spec.ManualOverride, 10*time.Minute)
	wrote, hasWrote := ms.Annotations[AnnotationAutoscaledReplicas]
	if hasWrote && wrote != strconv.Itoa(int(replicas)) && as.ManualOverrideUntil == nil {
		until := metav1.NewTime(now.Add(override))
		as.ManualOverrideUntil = &until
	}
	if u := as.ManualOverrideUntil; u != nil {
		if now.Before(u.Time) {
			r.cancelDrains(ctx, ms, as)
			r.setCond(st, ms, servingv1.ConditionScalingActive, metav1.ConditionFalse, ReasonManualOverride,
				fmt.Sprintf("spec.replicas was set to %d by someone else; kept until %s", replicas, u.Format(time.RFC3339)))
			return r.write(ctx, ms, st, interval)
		}
		as.ManualOverrideUntil = nil
		as.DesiredGroups = replicas // resume from the manual value
		patch := client.MergeFrom(ms.DeepCopy())
		if ms.Annotations == nil {
			ms.Annotations = map[string]string{}
		}
		ms.Annotations[AnnotationAutoscaledReplicas] = strconv.Itoa(int(replicas))
		if err := r.Client.Patch(ctx, ms, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("adopt manual replicas: %w", err)
		}
		wrote, hasWrote = ms.Annotations[AnnotationAutoscaledReplicas], true
	}

	sig, err := r.Signals.Signals(ctx, poolOf(ms))
	if err != nil {
		r.setCond(st, ms, servingv1.ConditionScalingActive, metav1.ConditionFalse, ReasonNoSignals, err.Error())
		return r.write(ctx, ms, st, interval)
	}
	sc.a.Observe(now, sig)
	drains, err := r.drainingGroups(ctx, ms, as.Draining)
	if err != nil {
		return reconcile.Result{}, err
	}
	// Draining groups are not capacity.
	draining := int32(len(drains))
	state := autoscale.State{Groups: int(replicas - draining), Ready: int(max(ms.Status.ReadyReplicas-draining, 0))}
	if spec.PD != nil { // role instances over all groups
		for _, role := range ms.Spec.Roles {
			n := int(roleReplicas(role)) * max(state.Groups, 1)
			switch role.Name {
			case autoscale.RolePrefill:
				state.Prefill = n
			case autoscale.RoleDecode:
				state.Decode = n
			}
		}
	}
	d := sc.a.Decide(now, state)
	as.DesiredPrefill, as.DesiredDecode = int32(d.Prefill), int32(d.Decode)
	t := metav1.NewTime(now)
	as.LastDecision = &t
	as.Reason = d.Reason
	as.DesiredGroups = int32(d.Groups)
	as.Signals = signalStatus(d.Stable)
	cs := metav1.Duration{Duration: sc.a.ColdStart()}
	as.ColdStart = &cs
	r.setCond(st, ms, servingv1.ConditionScalingActive, metav1.ConditionTrue, ReasonAutoscalerDeciding, d.Reason)
	p := sc.a.Policy()
	if d.Groups == p.MinGroups || d.Groups == p.MaxGroups {
		r.setCond(st, ms, servingv1.ConditionScalingLimited, metav1.ConditionTrue, ReasonAtBound,
			fmt.Sprintf("desired groups %d at minGroups %d or maxGroups %d", d.Groups, p.MinGroups, p.MaxGroups))
	} else {
		r.setCond(st, ms, servingv1.ConditionScalingLimited, metav1.ConditionFalse, ReasonWithinBounds, "desired groups within bounds")
	}
	var eps []autoscale.EndpointLoad
	epsErr := errors.New("no endpoint source")
	if src := r.endpoints(); src != nil && (int(replicas-draining) > d.Groups || draining > 0 || spec.PD != nil) {
		eps, epsErr = src.Endpoints(ctx, poolOf(ms))
		if epsErr != nil {
			r.Logger.Warn("autoscaler: routers' endpoints", "modelserving", req.String(), "error", epsErr)
		}
	}
	plan := planScale(ms, d.Groups, drains, eps, epsErr, now, durOr(spec.ScaleDown.DrainGrace, 5*time.Minute))
	// Drains begin before anything else is written: routers must stop
	// sending before the group can be retired.
	for _, g := range plan.annotate {
		if err := r.annotateDrain(ctx, ms, g, true, now); err != nil {
			return reconcile.Result{}, err
		}
	}
	for _, g := range plan.undrain {
		if err := r.annotateDrain(ctx, ms, g, false, now); err != nil {
			return reconcile.Result{}, err
		}
	}
	as.Draining = plan.draining
	var roles []roleScale
	if spec.PD != nil {
		var pods corev1.PodList
		if err := r.Client.List(ctx, &pods, client.InNamespace(ms.Namespace), client.MatchingLabels{servingv1.LabelModelServing: ms.Name}); err != nil {
			return reconcile.Result{}, fmt.Errorf("list pods: %w", err)
		}
		roles = planRoles(ms, pods.Items, ActiveGroups(plan.replicas, plan.retired), d, eps, epsErr, now, durOr(spec.ScaleDown.DrainGrace, 5*time.Minute))
		for _, rs := range roles {
			for _, pod := range rs.annotate {
				if err := r.setDrain(ctx, pod, roleDrainPrefix+now.UTC().Format(time.RFC3339)); err != nil {
					return reconcile.Result{}, err
				}
			}
			for _, pod := range rs.undrain {
				if err := r.setDrain(ctx, pod, ""); err != nil {
					return reconcile.Result{}, err
				}
			}
			if rs.note != "" {
				plan.note = append(plan.note, rs.note)
			}
		}
	}
	rolesChanged := false
	for _, rs := range roles {
		for _, role := range ms.Spec.Roles {
			if role.Name == rs.role && roleReplicas(role) != rs.replicas {
				rolesChanged = true
			}
		}
	}
	if plan.replicas != replicas || rolesChanged || !slices.Equal(plan.retired, ms.Spec.RetiredGroups) || !hasWrote || wrote != strconv.Itoa(int(plan.replicas)) {
		patch := client.MergeFrom(ms.DeepCopy())
		if rolesChanged { // the roles list is written whole: not over an edit we have not seen
			patch = client.MergeFromWithOptions(ms.DeepCopy(), client.MergeFromWithOptimisticLock{})
		}
		n := plan.replicas
		ms.Spec.Replicas = &n
		ms.Spec.RetiredGroups = plan.retired
		for _, rs := range roles {
			for i := range ms.Spec.Roles {
				if ms.Spec.Roles[i].Name == rs.role {
					ms.Spec.Roles[i].Replicas = rs.replicas
				}
			}
		}
		if ms.Annotations == nil {
			ms.Annotations = map[string]string{}
		}
		ms.Annotations[AnnotationAutoscaledReplicas] = strconv.Itoa(int(n))
		if err := r.Client.Patch(ctx, ms, patch); err != nil {
			return reconcile.Result{}, fmt.Errorf("scale to %d: %w", n, err)
		}
		if n != replicas || rolesChanged {
			as.LastScale = &t
			r.Logger.Info("autoscaled", "modelserving", req.String(), "from", replicas, "to", n, "retired", plan.retired, "reason", d.Reason, "groups", plan.note)
		}
	}
	if len(plan.note) > 0 {
		r.Logger.Info("autoscaler groups", "modelserving", req.String(), "changes", plan.note)
	}
	as.CurrentGroups = plan.replicas
	return r.write(ctx, ms, st, interval)
}

func (r *AutoscalingReconciler) endpoints() EndpointSource {
	if r.Endpoints != nil {
		return r.Endpoints
	}
	if src, ok := r.Signals.(EndpointSource); ok {
		return src
	}
	return nil
}

// cancelDrains gives the draining groups back to the routers (paused,
// manual override): their pods lose the annotation.
func (r *AutoscalingReconciler) cancelDrains(ctx context.Context, ms *servingv1.ModelServing, as *servingv1.AutoscalingStatus) {
	drains, err := r.drainingGroups(ctx, ms, as.Draining)
	if err != nil {
		r.Logger.Warn("autoscaler: cancel drains", "modelserving", ms.Namespace+"/"+ms.Name, "error", err)
	}
	for _, d := range drains {
		if err := r.annotateDrain(ctx, ms, d.Index, false, time.Time{}); err != nil {
			r.Logger.Warn("autoscaler: cancel drain", "modelserving", ms.Namespace+"/"+ms.Name, "group", d.Index, "error", err)
		}
	}
	as.Draining = nil
}

func (r *AutoscalingReconciler) write(ctx context.Context, ms *servingv1.ModelServing, st *servingv1.ModelServingStatus, requeue time.Duration) (reconcile.Result, error) {
	ms.Status = *st
	if err := r.Client.Status().Update(ctx, ms); err != nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: conflictRetry}, nil
		}
		return reconcile.Result{}, fmt.Errorf("update autoscaling status: %w", err)
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

func (r *AutoscalingReconciler) setCond(st *servingv1.ModelServingStatus, ms *servingv1.ModelServing, typ string, s metav1.ConditionStatus, reason, msg string) {
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: ms.Generation})
}

// scaler returns the ModelServing's autoscaler, rebuilt when its policy
// changed.
func (r *AutoscalingReconciler) scaler(key types.NamespacedName, ms *servingv1.ModelServing) (*scalerState, error) {
	raw, err := json.Marshal(ms.Spec.Autoscaling)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scalers == nil {
		r.scalers = map[types.NamespacedName]*scalerState{}
	}
	if sc := r.scalers[key]; sc != nil && sc.policy == string(raw) {
		return sc, nil
	}
	a, err := autoscale.New(autoscale.FromSpec(ms.Spec.Autoscaling, enginesPerGroup(&ms.Spec)))
	if err != nil {
		return nil, fmt.Errorf("spec.autoscaling: %w", err)
	}
	sc := &scalerState{a: a, policy: string(raw), starting: map[int32]time.Time{}}
	r.scalers[key] = sc
	return sc, nil
}

func (r *AutoscalingReconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	delete(r.scalers, key)
	r.mu.Unlock()
}

// observeColdStarts times each group from its first sighting not running
// to its first sighting running.
func (r *AutoscalingReconciler) observeColdStarts(sc *scalerState, ms *servingv1.ModelServing, now time.Time) {
	for _, g := range ms.Status.Groups {
		since, seen := sc.starting[g.Index]
		switch {
		case g.Phase == servingv1.GroupPending || g.Phase == servingv1.GroupStarting:
			if !seen {
				from := now
				if g.Since != nil {
					from = g.Since.Time
				}
				sc.starting[g.Index] = from
			}
		case g.Phase == servingv1.GroupRunning && seen:
			sc.a.ObserveColdStart(now.Sub(since))
			delete(sc.starting, g.Index)
		}
	}
}

// enginesPerGroup is the serving endpoints one group adds: every role's
// instances.
func enginesPerGroup(s *servingv1.ModelServingSpec) int {
	n := 0
	for _, r := range s.Roles {
		n += int(max(r.Replicas, 1))
	}
	return max(n, 1)
}

// poolOf is the routers' pool name for a ModelServing's endpoints.
func poolOf(ms *servingv1.ModelServing) string { return ms.Namespace + "/" + ms.Name }

func signalStatus(s autoscale.Signals) servingv1.AutoscalingSignals {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }
	out := servingv1.AutoscalingSignals{
		Engines: int32(s.Engines), Waiting: f(s.Waiting), Running: f(s.Running), KVUsage: f(s.KVUsage),
		PrefillTokens: f(s.PrefillTokens), TokensPerSecond: f(s.TokensPerSecond), RequestsPerSecond: f(s.RequestsPerSecond), WaitingRoom: f(s.WaitingRoom),
	}
	if a := lowestKnown(s.TTFTAttainment, s.TPOTAttainment); a >= 0 {
		out.Attainment = f(a)
	}
	return out
}

func durOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

// SetupWithManager registers the reconciler under its own name, beside
// the ModelServing reconciler.
func (r *AutoscalingReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("modelserving-autoscaler").
		For(&servingv1.ModelServing{}).
		Complete(r)
}

var _ reconcile.Reconciler = (*AutoscalingReconciler)(nil)
