package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
)

// AnnotationAutoscaledReplicas on a ModelServing is the spec.replicas the
// autoscaler last wrote, written in the same patch: a spec.replicas that
// differs from it was set by someone else (a manual override).
const AnnotationAutoscaledReplicas = "serving.halyard.dev/autoscaled-replicas"

// EndpointSource gives a pool's endpoints as the routers see them: group,
// requests in flight, drain state and hottest cached prefix blocks, merged
// over the routers (in-flight and hits summed; draining only when every
// router that has the endpoint drains it).
type EndpointSource interface {
	Endpoints(ctx context.Context, pool string) ([]autoscale.EndpointLoad, error)
}

// Endpoints implements EndpointSource over GET /autoscale/endpoints?pool=
// of every router. Unlike Signals, every router must answer: a drain is
// complete only when all of them stopped sending to the group.
func (s *RouterSignals) Endpoints(ctx context.Context, pool string) ([]autoscale.EndpointLoad, error) {
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	if len(s.URLs) == 0 {
		return nil, errors.New("no router configured")
	}
	merged := map[string]*autoscale.EndpointLoad{}
	var order []string
	for _, base := range s.URLs {
		eps, err := fetchEndpoints(ctx, c, base, pool)
		if err != nil {
			return nil, err
		}
		for _, e := range eps {
			m := merged[e.Name]
			if m == nil {
				m = &autoscale.EndpointLoad{Name: e.Name, Group: e.Group, Draining: true, Hot: map[uint64]float64{}}
				merged[e.Name] = m
				order = append(order, e.Name)
			}
			m.InFlight += e.InFlight
			m.Draining = m.Draining && e.Draining
			for h, v := range e.Hot {
				m.Hot[h] += v
			}
		}
	}
	out := make([]autoscale.EndpointLoad, 0, len(order))
	for _, n := range order {
		out = append(out, *merged[n])
	}
	return out, nil
}

func fetchEndpoints(ctx context.Context, c *http.Client, base, pool string) ([]autoscale.EndpointLoad, error) {
	var body struct {
		Endpoints []autoscale.EndpointLoad `json:"endpoints"`
	}
	if err := getRouterJSON(ctx, c, base, "/autoscale/endpoints", pool, 64<<20, &body); err != nil {
		return nil, err
	}
	return body.Endpoints, nil
}

// scalePlan is what one autoscaling decision changes: spec.replicas and
// spec.retiredGroups, the drains begun and cancelled, and the groups
// retired (their drain finished).
type scalePlan struct {
	replicas int32
	retired  []int32
	draining []servingv1.DrainingGroup
	annotate []int32 // groups whose pods get the draining annotation
	undrain  []int32 // groups whose pods lose it
	note     []string
}

// planScale turns the decision's groups into a plan. Groups being drained
// do not count as capacity: effective = replicas - draining. Scaling up
// first cancels drains (their caches are still warm), then takes retired
// indices back, lowest first. Scaling down chooses victims among the
// groups not draining with autoscale.ChooseVictims over the routers'
// hit ledgers (without ledgers: the highest index) and begins their drain.
// A drain ends when the routers report the group's endpoints draining with
// nothing in flight, or at grace; the group is then retired.
func planScale(ms *servingv1.ModelServing, want int, draining []servingv1.DrainingGroup, eps []autoscale.EndpointLoad, epsErr error, now time.Time, grace time.Duration) scalePlan {
	replicas := int32(1)
	if ms.Spec.Replicas != nil {
		replicas = *ms.Spec.Replicas
	}
	p := scalePlan{replicas: replicas, retired: slices.Clone(ms.Spec.RetiredGroups), draining: slices.Clone(draining)}
	slices.Sort(p.retired)
	active := ActiveGroups(replicas, p.retired)
	// Drains of groups that no longer exist (a manual scale removed them).
	p.draining = slices.DeleteFunc(p.draining, func(d servingv1.DrainingGroup) bool {
		_, ok := slices.BinarySearch(active, d.Index)
		return !ok
	})
	eff := int(replicas) - len(p.draining)
	switch {
	case want > eff:
		// Cancel the newest drains first.
		for want > eff && len(p.draining) > 0 {
			d := p.draining[len(p.draining)-1]
			p.draining = p.draining[:len(p.draining)-1]
			p.undrain = append(p.undrain, d.Index)
			p.note = append(p.note, fmt.Sprintf("group %d kept (drain cancelled)", d.Index))
			eff++
		}
		if add := want - eff; add > 0 {
			back := min(add, len(p.retired))
			p.retired = p.retired[back:]
			p.replicas += int32(add)
		}
	case want < eff:
		draining := map[int32]bool{}
		for _, d := range p.draining {
			draining[d.Index] = true
		}
		byGroup := map[string][]string{}
		hot := map[string]map[uint64]float64{}
		for _, e := range eps {
			byGroup[e.Group] = append(byGroup[e.Group], e.Name)
			hot[e.Name] = e.Hot
		}
		var cands []autoscale.GroupEngines
		for _, g := range active { // oldest (lowest index) first: ties go to the newest
			if draining[g] {
				continue
			}
			key := strconv.Itoa(int(g))
			cands = append(cands, autoscale.GroupEngines{Group: key, Engines: byGroup[key]})
		}
		for _, v := range autoscale.ChooseVictims(cands, func(e string) map[uint64]float64 { return hot[e] }, eff-want) {
			idx, _ := strconv.Atoi(v.Group)
			p.draining = append(p.draining, servingv1.DrainingGroup{
				Index: int32(idx), Since: metav1.NewTime(now), UniqueHot: strconv.FormatFloat(v.UniqueHot, 'g', 4, 64),
			})
			p.annotate = append(p.annotate, int32(idx))
			p.note = append(p.note, fmt.Sprintf("draining group %d (unique hot cache %.4g)", idx, v.UniqueHot))
		}
	}
	// Retire the drained groups.
	kept := p.draining[:0]
	for _, d := range p.draining {
		if slices.Contains(p.annotate, d.Index) {
			kept = append(kept, d) // begun now: the routers have not seen it yet
			continue
		}
		done, why := drained(d, eps, epsErr, now, grace)
		if !done {
			kept = append(kept, d)
			continue
		}
		p.retired = append(p.retired, d.Index)
		p.replicas--
		p.note = append(p.note, fmt.Sprintf("group %d removed (%s)", d.Index, why))
	}
	p.draining = kept
	slices.Sort(p.retired)
	// Retired indices at or above the highest group are implicit.
	if act := ActiveGroups(p.replicas, p.retired); len(act) > 0 {
		top := act[len(act)-1]
		p.retired = slices.DeleteFunc(p.retired, func(i int32) bool { return i > top })
	} else {
		p.retired = nil
	}
	return p
}

// drained reports whether a draining group may go: every router drains
// its endpoints and none has a request in flight on them, or the grace is
// over.
func drained(d servingv1.DrainingGroup, eps []autoscale.EndpointLoad, epsErr error, now time.Time, grace time.Duration) (bool, string) {
	if !now.Before(d.Since.Add(grace)) {
		return true, fmt.Sprintf("drain grace %s over", grace)
	}
	if epsErr != nil {
		return false, ""
	}
	key := strconv.Itoa(int(d.Index))
	for _, e := range eps {
		if e.Group == key && (!e.Draining || e.InFlight > 0) {
			return false, ""
		}
	}
	return true, "drained: no request in flight"
}

// drainingGroups reads the drains from the pods' annotations (the record
// that is written before anything else, so a lost status write loses no
// drain): per group, the earliest drain start, oldest drain first. Groups
// in prev keep their recorded cost.
func (r *AutoscalingReconciler) drainingGroups(ctx context.Context, ms *servingv1.ModelServing, prev []servingv1.DrainingGroup) ([]servingv1.DrainingGroup, error) {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ms.Namespace), client.MatchingLabels{servingv1.LabelModelServing: ms.Name}); err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	since := map[int32]time.Time{}
	for i := range pods.Items {
		pod := &pods.Items[i]
		v := pod.Annotations[servingv1.AnnotationDraining]
		if v == "" || strings.HasPrefix(v, roleDrainPrefix) || !metav1.IsControlledBy(pod, ms) || pod.DeletionTimestamp != nil {
			continue
		}
		idx, err := strconv.Atoi(pod.Labels[servingv1.LabelGroup])
		if err != nil {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t = r.Clock.Now()
		}
		if cur, ok := since[int32(idx)]; !ok || t.Before(cur) {
			since[int32(idx)] = t
		}
	}
	out := make([]servingv1.DrainingGroup, 0, len(since))
	for idx, t := range since {
		d := servingv1.DrainingGroup{Index: idx, Since: metav1.NewTime(t)}
		for _, p := range prev {
			if p.Index == idx {
				d.UniqueHot = p.UniqueHot
			}
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b servingv1.DrainingGroup) int {
		if c := a.Since.Compare(b.Since.Time); c != 0 {
			return c
		}
		return int(a.Index - b.Index)
	})
	return out, nil
}

// annotateDrain sets (on) or removes the draining annotation on a group's
// pods.
func (r *AutoscalingReconciler) annotateDrain(ctx context.Context, ms *servingv1.ModelServing, group int32, on bool, now time.Time) error {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ms.Namespace), client.MatchingLabels(groupLabels(ms.Name, group))); err != nil {
		return fmt.Errorf("list pods of group %d: %w", group, err)
	}
	value := ""
	if on {
		value = now.UTC().Format(time.RFC3339)
	}
	var errs []error
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !metav1.IsControlledBy(pod, ms) || (pod.Annotations[servingv1.AnnotationDraining] != "") == on {
			continue
		}
		if err := r.setDrain(ctx, pod, value); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// roleDrainPrefix starts the draining annotation's value on pods drained
// for a role scale-down (prefill/decode), not a group removal.
const roleDrainPrefix = "role:"

// roleScale is what a PD decision changes in one role.
type roleScale struct {
	role     string
	replicas int32 // per group, to write
	annotate []*corev1.Pod
	undrain  []*corev1.Pod
	note     string
}

// planRoles turns a PD decision's prefill and decode instances into
// per-group role replicas. Growing is written at once (the ModelServing
// reconciler adds the instances to the running groups); shrinking drains
// the highest instances of the role first (routers stop sending to them)
// and lowers replicas once every router reports them drained with nothing
// in flight, or at grace; the reconciler then deletes them.
func planRoles(ms *servingv1.ModelServing, pods []corev1.Pod, groups []int32, d autoscale.Decision, eps []autoscale.EndpointLoad, epsErr error, now time.Time, grace time.Duration) []roleScale {
	byName := map[string]autoscale.EndpointLoad{}
	for _, e := range eps {
		byName[e.Name] = e
	}
	n := max(len(groups), 1)
	var out []roleScale
	for _, r := range ms.Spec.Roles {
		var total int
		switch r.Name {
		case autoscale.RolePrefill:
			total = d.Prefill
		case autoscale.RoleDecode:
			total = d.Decode
		default:
			continue
		}
		if total <= 0 {
			continue
		}
		cur := roleReplicas(r)
		want := int32(max((total+n-1)/n, 1))
		rs := roleScale{role: r.Name, replicas: cur}
		drained, since := true, now
		for i := range pods {
			pod := &pods[i]
			if pod.Labels[servingv1.LabelRole] != r.Name || pod.DeletionTimestamp != nil {
				continue
			}
			inst, err := strconv.Atoi(pod.Labels[servingv1.LabelInstance])
			if err != nil {
				continue
			}
			v := pod.Annotations[servingv1.AnnotationDraining]
			roleDrain := strings.HasPrefix(v, roleDrainPrefix)
			switch {
			case int32(inst) < want && roleDrain:
				rs.undrain = append(rs.undrain, pod)
			case int32(inst) >= want && int32(inst) < cur && want < cur:
				if !roleDrain {
					rs.annotate = append(rs.annotate, pod)
					drained = false
					continue
				}
				if t, err := time.Parse(time.RFC3339, strings.TrimPrefix(v, roleDrainPrefix)); err == nil && t.Before(since) {
					since = t
				}
				e, known := byName[pod.Namespace+"/"+pod.Name]
				if epsErr != nil || (known && (!e.Draining || e.InFlight > 0)) {
					drained = false
				}
			}
		}
		switch {
		case want > cur:
			rs.replicas = want
			rs.note = fmt.Sprintf("%s %d→%d per group", r.Name, cur, want)
		case want < cur && (drained || !now.Before(since.Add(grace))):
			rs.replicas = want
			rs.note = fmt.Sprintf("%s %d→%d per group (drained)", r.Name, cur, want)
		case want < cur:
			rs.note = fmt.Sprintf("%s draining instances %d..%d", r.Name, want, cur-1)
		}
		out = append(out, rs)
	}
	if as := ms.Spec.Autoscaling; as != nil {
		keepRatio(as.PD, out, ms.Spec.Roles)
	}
	return out
}

// keepRatio holds a role's shrink back while the other role's drain is
// still running, so that the replicas written keep prefill:decode within
// the policy's bounds at every step: the decision's instances meet them,
// but a role whose drain ends first would be lowered alone (seen on KWOK
// with requests in flight on a draining decode instance: prefill 3,
// decode 4 under a 1:1 minimum). Only a shrink is held, never a growth
// added.
func keepRatio(pd *servingv1.AutoscalingPD, out []roleScale, roles []servingv1.RoleSpec) {
	if pd == nil {
		return
	}
	cur := map[string]int32{}
	for _, r := range roles {
		cur[r.Name] = roleReplicas(r)
	}
	var pf, dc *roleScale
	for i := range out {
		switch out[i].role {
		case autoscale.RolePrefill:
			pf = &out[i]
		case autoscale.RoleDecode:
			dc = &out[i]
		}
	}
	if pf == nil || dc == nil {
		return
	}
	ceilDiv := func(a, b int64) int32 { return int32((a + b - 1) / b) }
	if m := pd.MinRatioPercent; m != nil && pf.replicas < cur[pf.role] && int64(pf.replicas)*100 < int64(*m)*int64(dc.replicas) {
		pf.replicas = min(cur[pf.role], ceilDiv(int64(*m)*int64(dc.replicas), 100))
		pf.note = fmt.Sprintf("prefill held at %d per group while decode drains (prefill:decode >= %d%%)", pf.replicas, *m)
	}
	if m := pd.MaxRatioPercent; m != nil && dc.replicas < cur[dc.role] && int64(pf.replicas)*100 > int64(*m)*int64(dc.replicas) {
		dc.replicas = min(cur[dc.role], ceilDiv(int64(pf.replicas)*100, int64(*m)))
		dc.note = fmt.Sprintf("decode held at %d per group while prefill drains (prefill:decode <= %d%%)", dc.replicas, *m)
	}
}

// setDrain sets (value non-empty) or removes the draining annotation on
// one pod.
func (r *AutoscalingReconciler) setDrain(ctx context.Context, pod *corev1.Pod, value string) error {
	v := "null"
	if value != "" {
		v = strconv.Quote(value)
	}
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, servingv1.AnnotationDraining, v))
	if err := r.Client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("annotate pod %s: %w", pod.Name, err)
	}
	return nil
}
