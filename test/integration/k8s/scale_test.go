package k8s

import (
	"context"
	"fmt"
	"testing"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/autoscale"
	"github.com/halyard-dev/halyard/internal/controller"
)

// autoscalingScale wraps the scale subresource's object.
type autoscalingScale struct{ s autoscalingv1.Scale }

func (a *autoscalingScale) obj() client.Object { return &a.s }

// scaleTo sets spec.replicas through the scale subresource, as kubectl
// scale does (read, write, again on a conflict).
func scaleTo(t *testing.T, k *cluster, ms *servingv1.ModelServing, replicas int32) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale := &autoscalingScale{}
		if err := k.c.SubResource("scale").Get(context.Background(), ms, scale.obj()); err != nil {
			return err
		}
		scale.s.Spec.Replicas = replicas
		return k.c.SubResource("scale").Update(context.Background(), ms, client.WithSubResourceBody(scale.obj()))
	})
	if err != nil {
		t.Fatalf("scale to %d: %v", replicas, err)
	}
}

// TestScaleSubresourceWithAutoscalingPaused: the documented precedence
// with spec.autoscaling.paused (docs/autoscaling.md): the scale
// subresource owns spec.replicas. The routers' signals ask for 3 groups,
// yet the paused autoscaler leaves the ModelServing at 1; a scale to 2
// through the subresource makes 2 groups, and the autoscaler, having seen
// that generation, still leaves it (ScalingActive=False, Paused). Once
// unpaused, the autoscaler owns spec.replicas again (the subresource's
// value was no override of its own writes): it scales to the 3 groups the
// signals ask for.
func TestScaleSubresourceWithAutoscalingPaused(t *testing.T) {
	k, _ := sharedCluster(t)
	ns := k.namespace(t, "scalepaused")
	unknown := float64(autoscale.Unknown)
	// 90 running at 10 per engine: 9 engines, 3 groups of 3.
	setSignals(ns+"/sp", autoscale.Signals{Engines: 3, Running: 90, TTFTAttainment: unknown, TPOTAttainment: unknown})
	ms := pdServing(ns, "sp", 1) // prefill x2 + decode x1
	ms.Spec.Autoscaling = &servingv1.AutoscalingSpec{
		Paused: true, MinGroups: ptr.To[int32](1), MaxGroups: 4,
		Targets:     &servingv1.AutoscalingTargets{RunningPerEngine: ptr.To[int32](10)},
		PanicWindow: &metav1.Duration{},
	}
	create(t, k, ms)
	node := k.createNode(t, "scalepaused-node", nil)
	paused := func(what string, replicas int32) {
		t.Helper()
		eventually(t, waitLong, what, func() (bool, string) {
			k.startAll(t, ns, "sp", node.Name) // groups ready: none is still starting
			cur := k.get(t, ns, "sp")
			c := scalingCondition(cur)
			n := len(k.pods(t, ns, "sp"))
			return c != nil && c.Reason == controller.ReasonAutoscalerPaused && c.ObservedGeneration == cur.Generation &&
					*cur.Spec.Replicas == replicas && n == 3*int(replicas),
				fmt.Sprintf("replicas %d, %d pods, generation %d, condition %+v", *cur.Spec.Replicas, n, cur.Generation, c)
		})
	}
	paused("paused at 1 group", 1)

	scaleTo(t, k, k.get(t, ns, "sp"), 2)
	paused("scaled to 2 groups and left there", 2)

	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := k.get(t, ns, "sp")
		cur.Spec.Autoscaling.Paused = false
		return k.c.Update(context.Background(), cur)
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitLong, "the autoscaler scales to 3", func() (bool, string) {
		k.startAll(t, ns, "sp", node.Name)
		cur := k.get(t, ns, "sp")
		c := scalingCondition(cur)
		return c != nil && c.Reason == controller.ReasonAutoscalerDeciding && *cur.Spec.Replicas == 3,
			fmt.Sprintf("replicas %d, condition %+v", *cur.Spec.Replicas, c)
	})
}
