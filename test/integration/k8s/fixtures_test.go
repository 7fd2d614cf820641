package k8s

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// engineTemplate is a pod template running one engine container.
func engineTemplate(cpu string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "llm"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "engine",
				Image: "vllm/vllm-openai:v0.11.0",
				Args:  []string{"--model", "Qwen/Qwen3-8B"},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8000}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse(cpu),
				}},
			}},
			Tolerations: []corev1.Toleration{{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
}

// pdServing is a ModelServing whose groups hold prefill x2 and decode x1.
func pdServing(ns, name string, replicas int32) *servingv1.ModelServing {
	return &servingv1.ModelServing{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: servingv1.ModelServingSpec{
			Model:    servingv1.ModelSpec{Name: "qwen3-8b", Source: "hf://Qwen/Qwen3-8B"},
			Engine:   servingv1.EngineVLLM,
			Replicas: ptr.To(replicas),
			Roles: []servingv1.RoleSpec{
				{Name: "prefill", Replicas: 2, Template: engineTemplate("1")},
				{Name: "decode", Replicas: 1, Template: engineTemplate("1")},
			},
		},
	}
}

func create(t *testing.T, k *cluster, obj *servingv1.ModelServing) {
	t.Helper()
	if err := k.c.Create(context.Background(), obj); err != nil {
		t.Fatalf("create modelserving: %v", err)
	}
}

// group returns the status of group idx, or nil.
func group(ms *servingv1.ModelServing, idx int32) *servingv1.GroupStatus {
	for i := range ms.Status.Groups {
		if ms.Status.Groups[i].Index == idx {
			return &ms.Status.Groups[i]
		}
	}
	return nil
}
