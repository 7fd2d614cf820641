package controller

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// podCreator is what ProbeInPlaceRestart needs from a client.
type podCreator interface {
	Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error
}

// ProbeInPlaceRestart asks the API server, by a server-side dry-run create
// of a pod whose restartable init container carries a RestartAllContainers
// rule, whether in-place group restart is available (Kubernetes 1.35 with
// the RestartAllContainersOnContainerExits gate, or 1.36+). It returns
// false with the server's reason when the rule is rejected, and an error
// when the probe itself failed (no permission, namespace missing).
func ProbeInPlaceRestart(ctx context.Context, c podCreator, namespace, image string) (bool, string, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "halyard-inplace-probe-", Namespace: namespace},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{agentContainer(AgentOptions{Image: image, InPlace: true})},
			Containers:     []corev1.Container{{Name: "engine", Image: image}},
		},
	}
	err := c.Create(ctx, pod, client.DryRunAll)
	switch {
	case err == nil:
		return true, "the API server accepts RestartAllContainers", nil
	case apierrors.IsInvalid(err) && strings.Contains(err.Error(), "restartPolicyRules"):
		return false, "the API server rejects RestartAllContainers (feature gate RestartAllContainersOnContainerExits off)", nil
	default:
		return false, "", fmt.Errorf("probe in-place restart support: %w", err)
	}
}
