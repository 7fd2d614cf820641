package k8s

import (
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// autoscalingScale wraps the scale subresource's object.
type autoscalingScale struct{ s autoscalingv1.Scale }

func (a *autoscalingScale) obj() client.Object { return &a.s }
