package controller

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// indexNodeName indexes pods by spec.nodeName.
const indexNodeName = "spec.nodeName"

// indexPodNodeName is the field indexer function for indexNodeName.
func indexPodNodeName(o client.Object) []string {
	pod, ok := o.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return nil
	}
	return []string{pod.Spec.NodeName}
}

// nodeHandler maps a node event to the ModelServings with pods on it.
func nodeHandler(c client.Reader) handler.EventHandler {
	return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.MatchingFields{indexNodeName: o.GetName()}); err != nil {
			return nil
		}
		seen := map[types.NamespacedName]bool{}
		var out []reconcile.Request
		for i := range pods.Items {
			ref := metav1.GetControllerOf(&pods.Items[i])
			if ref == nil || ref.Kind != "ModelServing" || ref.APIVersion != servingv1.GroupVersion.String() {
				continue
			}
			key := types.NamespacedName{Namespace: pods.Items[i].Namespace, Name: ref.Name}
			if !seen[key] {
				seen[key] = true
				out = append(out, reconcile.Request{NamespacedName: key})
			}
		}
		return out
	})
}

func controllerOptions(concurrency int) controller.Options {
	if concurrency < 1 {
		concurrency = 1
	}
	return controller.Options{MaxConcurrentReconciles: concurrency}
}
