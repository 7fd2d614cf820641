package podreport

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// States of a report.
const (
	StateFetching = "Fetching"
	StateDone     = "Done"
	StateFailed   = "Failed"
)

// Reporter keeps one pod's weights report up to date.
type Reporter struct {
	// Events writes Events in the pod's namespace.
	Events corev1client.EventInterface
	// Namespace, Pod and UID identify the pod (from the downward API).
	Namespace, Pod, UID string
	// ModelServing labels the report so the controller maps it.
	ModelServing string
	// Logger receives failures to report (never fatal to the fetch).
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time

	created bool
}

// Status is one report.
type Status struct {
	State                  string
	Done, Total, Fallbacks int64
	// Reason and Message explain a Failed state (and say what is being
	// fetched otherwise).
	Reason, Message string
}

// Name is the name of pod's report Event.
func Name(pod string) string { return pod + ".halyard-weights" }

// Report writes s; errors are logged and returned.
func (r *Reporter) Report(ctx context.Context, s Status) error {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	t := metav1.NewTime(now())
	ann := map[string]string{
		servingv1.AnnotationWeightsState:     s.State,
		servingv1.AnnotationWeightsDone:      strconv.FormatInt(s.Done, 10),
		servingv1.AnnotationWeightsTotal:     strconv.FormatInt(s.Total, 10),
		servingv1.AnnotationWeightsFallbacks: strconv.FormatInt(s.Fallbacks, 10),
		servingv1.AnnotationWeightsReason:    s.Reason,
	}
	typ, reason := corev1.EventTypeNormal, "FetchingWeights"
	switch s.State {
	case StateDone:
		reason = "WeightsFetched"
	case StateFailed:
		typ, reason = corev1.EventTypeWarning, s.Reason
	}
	msg := s.Message
	if len(msg) > 1024 {
		msg = msg[:1024]
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name: Name(r.Pod), Namespace: r.Namespace,
			Labels: map[string]string{
				servingv1.LabelModelServing:  r.ModelServing,
				servingv1.LabelWeightsReport: r.Pod,
			},
			Annotations: ann,
		},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Pod", APIVersion: "v1", Namespace: r.Namespace, Name: r.Pod, UID: types.UID(r.UID),
		},
		Reason: reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "halyard-fetch"},
		FirstTimestamp: t, LastTimestamp: t, Count: 1,
		ReportingController: "serving.halyard.dev/fetch", ReportingInstance: r.Pod, Action: "Fetch",
	}
	err := r.write(ctx, ev)
	if err != nil && r.Logger != nil {
		r.Logger.Warn("fetch: could not report progress to the pod's Event", "err", err)
	}
	return err
}

func (r *Reporter) write(ctx context.Context, ev *corev1.Event) error {
	if !r.created {
		_, err := r.Events.Create(ctx, ev, metav1.CreateOptions{})
		if err == nil {
			r.created = true
			return nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create report: %w", err)
		}
		r.created = true
	}
	// A merge patch of what changes (an earlier run of this init
	// container, or an earlier pod of the same name, made the Event).
	patch := map[string]any{
		"metadata":       map[string]any{"labels": ev.Labels, "annotations": ev.Annotations},
		"involvedObject": ev.InvolvedObject,
		"reason":         ev.Reason, "message": ev.Message, "type": ev.Type,
		"lastTimestamp": ev.LastTimestamp,
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if _, err := r.Events.Patch(ctx, ev.Name, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch report: %w", err)
	}
	return nil
}
