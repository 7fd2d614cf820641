package controller

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/weights"
)

// WeightsOptions shape the injected `halyard fetch` init container. An
// empty CacheDir turns the wiring off: no ModelServing gets a fetch.
type WeightsOptions struct {
	// CacheDir is the node cache, a directory on every node mounted as a
	// hostPath into the fetch container (read-write) and the engines
	// (read-only), at the same path.
	CacheDir string
	// Image runs `halyard fetch`; default the agent's image.
	Image string
	// HFEndpoint is given to the fetch as HF_ENDPOINT (empty: the public
	// hub).
	HFEndpoint string
	// ModelScopeEndpoint is given to the fetch as MODELSCOPE_ENDPOINT
	// (empty: the public ModelScope hub).
	ModelScopeEndpoint string
	// MaxCacheBytes bounds the node cache (least recently used models are
	// evicted after a fetch); 0: no bound.
	MaxCacheBytes int64
	// DragonflyProxy is the node's dfdaemon proxy for dragonfly
	// distribution, e.g. "http://$(HOST_IP):4001" ($(HOST_IP) is the
	// node's IP from the downward API). Empty: dragonfly fetches go to the
	// origin, with a warning.
	DragonflyProxy string
	// DragonflyTag and DragonflyApplication are passed to the fetches
	// (they must equal the preheat's).
	DragonflyTag, DragonflyApplication string
	// DragonflyCASecret names a Secret (in the ModelServing's namespace)
	// whose key ca.crt is the CA dfdaemon's proxy issues its https
	// certificates from; it is mounted into the fetch and trusted for
	// https origins fetched through the proxy. Empty: only the image's
	// system pool.
	DragonflyCASecret string
	// Preheater preheats new revisions for dragonfly distribution; nil:
	// no preheat.
	Preheater Preheater
	// PreheatGate is how long the pods of a revision whose preheat job is
	// running wait for it before they are created (so that their fetches
	// meet warm seed peers instead of all going to the origin); 0: they
	// do not wait. The Preheated condition says whether the job finished,
	// failed or the gate elapsed.
	PreheatGate time.Duration
	// Timeout bounds how long a new group waits for its pods' weights,
	// from the creation of its pods: past it, the group is recreated
	// (reason WeightsTimeout, a Warning event, WeightsReady False with
	// that reason while it is). 0: no bound.
	Timeout time.Duration
}

// cacheMount is where the node cache appears inside the pods.
const cacheMount = "/var/cache/halyard"

// The dfdaemon proxy's CA, in the fetch container.
const (
	dragonflyCAVolume = "halyard-dragonfly-ca"
	dragonflyCAMount  = "/etc/halyard/dragonfly-ca"
)

// Reasons of the WeightsReady condition and weights events.
const (
	ConditionWeightsReady = "WeightsReady"

	// ReasonWeightsFetched: every pod has the weights. A failed fetch's
	// reason is the fetcher's (weights.FailureReason: SourceNotFound,
	// Unauthorized, Forbidden, ChecksumMismatch, DiskFull,
	// SourceUnreachable, FetchFailed).
	ReasonWeightsFetched    = "WeightsFetched"
	ReasonFetching          = "Fetching"
	ReasonWeightsFailed     = "WeightsFailed"
	ReasonPreheating        = "Preheating"
	ReasonPreheated         = "Preheated"
	ReasonPreheatFailed     = "PreheatFailed"
	ReasonDragonflyFallback = "DragonflyFallback"

	// ConditionPreheated: the Dragonfly preheat of the update revision
	// finished (True/Preheated), or not: Preheating (running, pods not
	// held), WaitingForPreheat (running; the revision's new pods wait for
	// it, at most PreheatGate), PreheatTimedOut (the gate elapsed and the
	// pods were created), PreheatFailed.
	ConditionPreheated      = "Preheated"
	ReasonWaitingForPreheat = "WaitingForPreheat"
	ReasonPreheatTimedOut   = "PreheatTimedOut"
	// ReasonWaitingForWeights: a group's pods are scheduled and its
	// barrier waits until every pod's fetch has finished.
	ReasonWaitingForWeights = "WaitingForWeights"
	// ReasonWeightsTimeout: a group's pods did not all have their weights
	// within WeightsOptions.Timeout; the group is recreated.
	ReasonWeightsTimeout = "WeightsTimeout"
)

// fetched reports whether ms's weights are fetched by the controller's init
// container, and with which distribution.
func (o WeightsOptions) fetched(ms *servingv1.ModelServing) (servingv1.Distribution, bool) {
	if o.CacheDir == "" {
		return "", false
	}
	d := ms.Spec.Model.Distribution
	if d == "" {
		d = servingv1.DistributionDirect
	}
	if d == servingv1.DistributionNone {
		return d, false
	}
	if _, err := weights.ParseSource(ms.Spec.Model.Source); err != nil {
		return d, false // pvc://, file:// or none: already local
	}
	return d, true
}

var commitRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

// hubCached reports whether source is laid out as the Hugging Face hub
// cache (hf and modelscope sources), which the engines read offline.
func hubCached(source string) bool {
	return strings.HasPrefix(source, "hf://") || strings.HasPrefix(source, "modelscope://")
}

// modelPath is where the engines find the model, when it is known before
// the fetch: the snapshot of an hf commit, or the copied tree of the other
// sources. For an hf branch or tag it is "" (the engine resolves the repo
// name in HF_HUB_CACHE offline, through refs/<revision>).
func modelPath(source string) string {
	src, err := weights.ParseSource(source)
	if err != nil {
		return ""
	}
	if src.Scheme == "hf" || src.Scheme == "modelscope" {
		if commitRe.MatchString(src.Revision) {
			return path.Join(cacheMount, src.CacheKey(), "snapshots", src.Revision)
		}
		return ""
	}
	return path.Join(cacheMount, src.CacheKey())
}

// addWeights adds the fetch init container, the node cache volume and the
// engines' read-only mounts to spec. env is what every container of the
// pod gets (HALYARD_*).
func addWeights(spec *corev1.PodSpec, ms *servingv1.ModelServing, o WeightsOptions, agentImage string, env []corev1.EnvVar) {
	dist, ok := o.fetched(ms)
	if !ok {
		return
	}
	image := o.Image
	if image == "" {
		image = agentImage
	}
	hostPathType := corev1.HostPathDirectoryOrCreate
	spec.Volumes = append(spec.Volumes, corev1.Volume{
		Name: servingv1.WeightsVolumeName,
		VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
			Path: o.CacheDir, Type: &hostPathType,
		}},
	})
	args := []string{"fetch", ms.Spec.Model.Source, "--into=" + cacheMount,
		"--progress=log", "--log-format=json", "--report", "--termination-message-path=/dev/termination-log"}
	if f := ms.Spec.Model.Fetch; f != nil {
		for _, g := range f.Include {
			args = append(args, "--include="+g)
		}
		for _, g := range f.Exclude {
			args = append(args, "--exclude="+g)
		}
	}
	if o.MaxCacheBytes > 0 {
		args = append(args, "--cache-max-bytes="+strconv.FormatInt(o.MaxCacheBytes, 10))
	}
	fenv := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: "POD_UID", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.uid"}}},
	}
	if dist == servingv1.DistributionDragonfly && o.DragonflyProxy != "" {
		fenv = append(fenv, corev1.EnvVar{Name: "HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}})
		args = append(args, "--dragonfly-proxy="+o.DragonflyProxy)
		if o.DragonflyTag != "" {
			args = append(args, "--dragonfly-tag="+o.DragonflyTag)
		}
		if o.DragonflyApplication != "" {
			args = append(args, "--dragonfly-application="+o.DragonflyApplication)
		}
		if o.DragonflyCASecret != "" {
			args = append(args, "--dragonfly-ca-file="+dragonflyCAMount+"/ca.crt")
		}
	}
	if o.HFEndpoint != "" {
		fenv = append(fenv, corev1.EnvVar{Name: "HF_ENDPOINT", Value: o.HFEndpoint})
	}
	if o.ModelScopeEndpoint != "" {
		fenv = append(fenv, corev1.EnvVar{Name: "MODELSCOPE_ENDPOINT", Value: o.ModelScopeEndpoint})
	}
	fenv = append(fenv, env...)
	c := corev1.Container{
		Name:                     servingv1.FetchContainerName,
		Image:                    image,
		Args:                     args,
		Env:                      fenv,
		VolumeMounts:             []corev1.VolumeMount{{Name: servingv1.WeightsVolumeName, MountPath: cacheMount}},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("100m"),
				corev1.ResourceMemory: resource.MustParse("128Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
		},
	}
	if f := ms.Spec.Model.Fetch; f != nil && f.CredentialsSecret != "" {
		// Credentials reach the fetch only, as environment from the
		// Secret; the controller never reads them.
		c.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: f.CredentialsSecret},
		}}}
	}
	if dist == servingv1.DistributionDragonfly && o.DragonflyProxy != "" && o.DragonflyCASecret != "" {
		spec.Volumes = append(spec.Volumes, corev1.Volume{
			Name: dragonflyCAVolume,
			VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: o.DragonflyCASecret, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
		})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: dragonflyCAVolume, MountPath: dragonflyCAMount, ReadOnly: true})
	}
	// The fetch runs first: it starts as soon as the pod is scheduled,
	// while the agent's barrier still waits for the rest of the group.
	spec.InitContainers = append([]corev1.Container{c}, spec.InitContainers...)

	engineEnv := []corev1.EnvVar{{Name: "HALYARD_MODEL_CACHE", Value: cacheMount}}
	if hubCached(ms.Spec.Model.Source) {
		engineEnv = append(engineEnv,
			corev1.EnvVar{Name: "HF_HUB_CACHE", Value: cacheMount},
			corev1.EnvVar{Name: "HF_HUB_OFFLINE", Value: "1"})
	}
	if p := modelPath(ms.Spec.Model.Source); p != "" {
		engineEnv = append(engineEnv, corev1.EnvVar{Name: "HALYARD_MODEL_PATH", Value: p})
	}
	for i := range spec.Containers {
		ct := &spec.Containers[i]
		ct.Env = mergeEnv(ct.Env, engineEnv)
		mounted := false
		for _, m := range ct.VolumeMounts {
			if m.MountPath == cacheMount || m.Name == servingv1.WeightsVolumeName {
				mounted = true
			}
		}
		if !mounted {
			ct.VolumeMounts = append(ct.VolumeMounts, corev1.VolumeMount{Name: servingv1.WeightsVolumeName, MountPath: cacheMount, ReadOnly: true})
		}
	}
}

// hasWeights reports whether pod's weights are on its node: its fetch init
// container has exited 0 (true for a pod without one).
func hasWeights(pod *corev1.Pod) bool {
	fetches := false
	for _, c := range pod.Spec.InitContainers {
		fetches = fetches || c.Name == servingv1.FetchContainerName
	}
	if !fetches {
		return true
	}
	for _, s := range pod.Status.InitContainerStatuses {
		if s.Name == servingv1.FetchContainerName {
			return s.State.Terminated != nil && s.State.Terminated.ExitCode == 0
		}
	}
	return false
}

// podWeights is what one pod's fetch has reported.
type podWeights struct {
	done, total, fallbacks int64
	ready                  bool
	failed                 bool
	reason, message        string
}

// weightsOf reads a pod's fetch from the kubelet's view of its fetch init
// container (authoritative: exit code and termination message) and from
// the progress Event its fetcher keeps (bytes, and the outcome before the
// kubelet reports it).
func weightsOf(pod *corev1.Pod, report *corev1.Event) podWeights {
	var w podWeights
	if report != nil && (report.InvolvedObject.UID == "" || report.InvolvedObject.UID == pod.UID) {
		w.done = annInt(report.Annotations, servingv1.AnnotationWeightsDone)
		w.total = annInt(report.Annotations, servingv1.AnnotationWeightsTotal)
		w.fallbacks = annInt(report.Annotations, servingv1.AnnotationWeightsFallbacks)
		switch report.Annotations[servingv1.AnnotationWeightsState] {
		case "Done":
			w.ready = true
		case "Failed":
			w.failed = true
			w.reason = report.Annotations[servingv1.AnnotationWeightsReason]
			w.message = report.Message
		}
	}
	for _, s := range pod.Status.InitContainerStatuses {
		if s.Name != servingv1.FetchContainerName {
			continue
		}
		t := s.State.Terminated
		if t == nil {
			// Waiting for a restart (back-off) or running again after a
			// failure: the last failure stands until a run succeeds.
			t = s.LastTerminationState.Terminated
		}
		switch {
		case t != nil && t.ExitCode == 0:
			w.ready, w.failed = true, false
		case t != nil:
			w.ready, w.failed = false, true
			reason, msg := splitReason(t.Message)
			if reason == "" && w.reason != "" {
				reason, msg = w.reason, w.message
			}
			if reason == "" {
				reason, msg = weights.ReasonFetchFailed, fmt.Sprintf("exit code %d: %s", t.ExitCode, strings.TrimSpace(t.Message))
			}
			w.reason, w.message = reason, msg
		}
	}
	if w.ready && w.total > 0 {
		w.done = w.total
	}
	return w
}

// splitReason splits a termination message "Reason: message" written by
// `halyard fetch`.
func splitReason(m string) (string, string) {
	m = strings.TrimSpace(m)
	r, rest, ok := strings.Cut(m, ": ")
	if !ok || r == "" || strings.ContainsAny(r, " \t\n") {
		return "", m
	}
	return r, rest
}

func annInt(a map[string]string, k string) int64 {
	v, err := strconv.ParseInt(a[k], 10, 64)
	if err != nil || v < 0 {
		return 0
	}
	return v
}

// weightsReports lists the progress Events of ms's pods, by pod name.
func (r *ModelServingReconciler) weightsReports(ctx context.Context, ms *servingv1.ModelServing) map[string]*corev1.Event {
	var list corev1.EventList
	if err := r.Client.List(ctx, &list, client.InNamespace(ms.Namespace), client.MatchingLabels{servingv1.LabelModelServing: ms.Name}); err != nil {
		r.Logger.Warn("list weights reports", "modelserving", ms.Name, "err", err)
		return nil
	}
	out := map[string]*corev1.Event{}
	for i := range list.Items {
		e := &list.Items[i]
		pod := e.Labels[servingv1.LabelWeightsReport]
		if pod == "" {
			continue
		}
		if cur, ok := out[pod]; ok && cur.CreationTimestamp.After(e.CreationTimestamp.Time) {
			continue
		}
		out[pod] = e
	}
	return out
}

// summarizeWeights fills status.weights, each group's share and the
// WeightsReady condition from the live pods, and queues events for
// transitions.
func (r *ModelServingReconciler) summarizeWeights(ctx context.Context, ms *servingv1.ModelServing, st *servingv1.ModelServingStatus, byGroup map[int32]groupPods, acts *actions) {
	if _, ok := r.Weights.fetched(ms); !ok {
		st.Weights = nil
		for i := range st.Groups {
			st.Groups[i].Weights = nil
		}
		removeCondition(st, ConditionWeightsReady)
		return
	}
	reports := r.weightsReports(ctx, ms)
	sum := &servingv1.WeightsStatus{}
	if st.Weights != nil {
		sum.Preheat = st.Weights.Preheat
	}
	var failures []string
	failReason := ""
	for i := range st.Groups {
		g := &st.Groups[i]
		if g.Reason == ReasonWeightsTimeout && g.Phase == servingv1.GroupRecreating {
			if failReason == "" {
				failReason = ReasonWeightsTimeout
			}
			failures = append(failures, fmt.Sprintf("group %d: %s: %s", g.Index, ReasonWeightsTimeout, g.Message))
		}
		gw := &servingv1.GroupWeightsStatus{}
		for _, pod := range sortedPods(byGroup[g.Index].live) {
			w := weightsOf(pod, reports[pod.Name])
			gw.Pods++
			gw.DoneBytes += w.done
			gw.TotalBytes += w.total
			sum.Fallbacks += w.fallbacks
			if w.ready {
				gw.Ready++
			}
			if w.failed {
				if failReason == "" {
					failReason = w.reason
				}
				failures = append(failures, fmt.Sprintf("pod %s: %s: %s", pod.Name, w.reason, w.message))
			}
		}
		g.Weights = gw
		sum.Pods += gw.Pods
		sum.Ready += gw.Ready
		sum.DoneBytes += gw.DoneBytes
		sum.TotalBytes += gw.TotalBytes
	}
	sum.Progress = fmt.Sprintf("%d/%d pods", sum.Ready, sum.Pods)
	if sum.TotalBytes > 0 {
		sum.Progress += fmt.Sprintf(", %s of %s", humanBytes(sum.DoneBytes), humanBytes(sum.TotalBytes))
	}
	prev := findCondition(st, ConditionWeightsReady)
	var prevStatus metav1.ConditionStatus
	prevReason := ""
	if prev != nil {
		prevStatus, prevReason = prev.Status, prev.Reason
	}
	gen := ms.Generation
	want := int32(0)
	for _, g := range st.Groups {
		for _, rs := range g.Roles {
			want += rs.Pods
		}
	}
	switch {
	case len(failures) > 0:
		msg := joinMax(failures, 3)
		setCondition(st, gen, ConditionWeightsReady, metav1.ConditionFalse, failReason, msg)
		if prevReason != failReason {
			acts.eventf(true, ReasonWeightsFailed, "Fetch", "%s", msg)
		}
	case sum.Pods > 0 && sum.Ready == sum.Pods && sum.Pods >= want:
		setCondition(st, gen, ConditionWeightsReady, metav1.ConditionTrue, ReasonWeightsFetched, "every pod has the weights on its node: "+sum.Progress)
		if prevStatus != metav1.ConditionTrue {
			acts.eventf(false, ReasonWeightsFetched, "Fetch", "every pod has the weights on its node (%s)", sum.Progress)
		}
	default:
		if c := findCondition(st, ConditionPreheated); c != nil && c.Reason == ReasonWaitingForPreheat && sum.Pods < want {
			setCondition(st, gen, ConditionWeightsReady, metav1.ConditionFalse, ReasonWaitingForPreheat, c.Message)
			break
		}
		setCondition(st, gen, ConditionWeightsReady, metav1.ConditionFalse, ReasonFetching, sum.Progress)
	}
	if prev := st.Weights; sum.Fallbacks > 0 && (prev == nil || prev.Fallbacks < sum.Fallbacks) {
		acts.eventf(true, ReasonDragonflyFallback, "Fetch", "%d files fetched from the origin because the node's Dragonfly peer failed", sum.Fallbacks)
		if r.Metrics != nil {
			old := int64(0)
			if prev != nil {
				old = prev.Fallbacks
			}
			r.Metrics.WeightsFallbacks.Add(float64(sum.Fallbacks - old))
		}
	}
	st.Weights = sum
}

func findCondition(st *servingv1.ModelServingStatus, typ string) *metav1.Condition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == typ {
			return &st.Conditions[i]
		}
	}
	return nil
}

func removeCondition(st *servingv1.ModelServingStatus, typ string) {
	out := st.Conditions[:0]
	for _, c := range st.Conditions {
		if c.Type != typ {
			out = append(out, c)
		}
	}
	st.Conditions = out
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// reportHandler maps a fetcher's progress Event to its ModelServing.
func reportHandler() handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		name := o.GetLabels()[servingv1.LabelModelServing]
		if name == "" || o.GetLabels()[servingv1.LabelWeightsReport] == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
	})
}
