package controller

import (
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/placement"
)

// AgentOptions shape the injected agent container.
type AgentOptions struct {
	// Image runs `halyard agent`.
	Image string
	// Port serves /startup and /healthz; default servingv1.DefaultAgentPort.
	Port int32
	// InPlace adds the RestartAllContainers rule; false where the cluster
	// lacks the feature (the agent then only holds the barrier).
	InPlace bool
	// Env is added to the agent's environment, e.g. KUBERNETES_SERVICE_HOST
	// and KUBERNETES_SERVICE_PORT where the service network does not reach
	// the API server (a kubelet without kube-proxy).
	Env []corev1.EnvVar
}

// podInput is everything buildPod needs.
type podInput struct {
	ms         *servingv1.ModelServing
	group      int32
	member     member
	revision   string
	generation int64
	barrier    int64
	domain     string
	required   bool
	podGroup   string // Volcano PodGroup name, or ""
	agent      AgentOptions
	weights    WeightsOptions
}

// buildPod renders one pod of a group from its role's template.
func buildPod(in podInput) (*corev1.Pod, error) {
	ms := in.ms
	var role *servingv1.RoleSpec
	for i := range ms.Spec.Roles {
		if ms.Spec.Roles[i].Name == in.member.role {
			role = &ms.Spec.Roles[i]
		}
	}
	if role == nil {
		return nil, fmt.Errorf("role %q not in spec", in.member.role)
	}
	tmpl := role.Template.DeepCopy()
	if in.member.worker > 0 && role.WorkerTemplate != nil {
		tmpl = role.WorkerTemplate.DeepCopy()
	}
	name := podName(ms.Name, in.group, in.member)
	svc := serviceName(ms.Name, in.group, in.member.role)
	leader := podName(ms.Name, in.group, member{role: in.member.role, instance: in.member.instance})

	labels := map[string]string{}
	for k, v := range tmpl.Labels {
		labels[k] = v
	}
	labels[servingv1.LabelModelServing] = ms.Name
	labels[servingv1.LabelGroup] = itoa(in.group)
	labels[servingv1.LabelRole] = in.member.role
	labels[servingv1.LabelRevision] = in.revision
	labels[servingv1.LabelInstance] = itoa(in.member.instance)
	labels[servingv1.LabelWorker] = itoa(in.member.worker)

	annotations := map[string]string{}
	for k, v := range tmpl.Annotations {
		annotations[k] = v
	}
	annotations[servingv1.AnnotationRestartGeneration] = strconv.FormatInt(in.generation, 10)
	if in.barrier >= 0 {
		annotations[servingv1.AnnotationBarrier] = strconv.FormatInt(in.barrier, 10)
	}
	if in.domain != "" {
		annotations[servingv1.AnnotationDomain] = in.domain
	}
	if in.podGroup != "" {
		annotations[servingv1.AnnotationVolcanoGroupName] = in.podGroup
	}

	spec := tmpl.Spec
	spec.Hostname = name
	spec.Subdomain = svc
	if s := ms.Spec.Placement.SchedulerName; s != "" {
		spec.SchedulerName = s
	}
	spec.Affinity = placement.Merge(spec.Affinity, placement.Affinity(placement.Pod{
		TopologyKey:     ms.Spec.Placement.TopologyKey,
		Domain:          in.domain,
		Required:        in.required,
		GroupLabels:     groupLabels(ms.Name, in.group),
		PairTopologyKey: ms.Spec.Placement.PairTopologyKey,
		PairLabels: map[string]string{
			servingv1.LabelModelServing: ms.Name,
			servingv1.LabelGroup:        itoa(in.group),
			servingv1.LabelInstance:     itoa(in.member.instance),
			servingv1.LabelWorker:       itoa(in.member.worker),
		},
	}))

	workers := role.Workers
	env := []corev1.EnvVar{
		{Name: "HALYARD_MODEL", Value: ms.Spec.Model.Name},
		{Name: "HALYARD_MODEL_SOURCE", Value: ms.Spec.Model.Source},
		{Name: "HALYARD_ENGINE", Value: string(ms.Spec.Engine)},
		{Name: "HALYARD_MODEL_SERVING", Value: ms.Name},
		{Name: "HALYARD_GROUP", Value: itoa(in.group)},
		{Name: "HALYARD_ROLE", Value: in.member.role},
		{Name: "HALYARD_INSTANCE", Value: itoa(in.member.instance)},
		{Name: "HALYARD_WORKER_INDEX", Value: itoa(in.member.worker)},
		{Name: "HALYARD_GROUP_SIZE", Value: itoa(workers + 1)},
		{Name: "HALYARD_LEADER_ADDRESS", Value: fmt.Sprintf("%s.%s.%s.svc", leader, svc, ms.Namespace)},
	}
	for i := range spec.Containers {
		spec.Containers[i].Env = mergeEnv(spec.Containers[i].Env, env)
	}
	agent := in.agent
	if v, ok := tmpl.Annotations[servingv1.AnnotationAgentPort]; ok {
		port, err := agentPort(v)
		if err != nil {
			return nil, fmt.Errorf("annotation %s: %w", servingv1.AnnotationAgentPort, err)
		}
		agent.Port = port
	}
	spec.InitContainers = append(spec.InitContainers, agentContainer(agent))
	addWeights(&spec, ms, in.weights, in.agent.Image, env)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   ms.Namespace,
			Labels:      labels,
			Annotations: annotations,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ms,
				servingv1.GroupVersion.WithKind("ModelServing"))},
		},
		Spec: spec,
	}
	return pod, nil
}

// mergeEnv appends the variables of add that base does not set.
func mergeEnv(base, add []corev1.EnvVar) []corev1.EnvVar {
	have := map[string]bool{}
	for _, e := range base {
		have[e.Name] = true
	}
	out := append([]corev1.EnvVar(nil), base...)
	for _, e := range add {
		if !have[e.Name] {
			out = append(out, e)
		}
	}
	return out
}

// agentContainer is the restartable init container running `halyard agent`.
// Its startup probe passes only once the group's barrier is released, and
// main containers start only after it, so engines of a group start together.
func agentContainer(o AgentOptions) corev1.Container {
	port := o.Port
	if port == 0 {
		port = servingv1.DefaultAgentPort
	}
	always := corev1.ContainerRestartPolicyAlways
	c := corev1.Container{
		Name:          servingv1.AgentContainerName,
		Image:         o.Image,
		Args:          []string{"agent", "--port=" + strconv.Itoa(int(port))},
		RestartPolicy: &always,
		Env: append([]corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		}, o.Env...),
		StartupProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/startup", Port: intstr.FromInt32(port),
			}},
			PeriodSeconds:    1,
			FailureThreshold: 3600,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/healthz", Port: intstr.FromInt32(port),
			}},
			PeriodSeconds:    10,
			FailureThreshold: 3,
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("10m"),
				corev1.ResourceMemory: resource.MustParse("32Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
	}
	if o.InPlace {
		c.RestartPolicyRules = []corev1.ContainerRestartRule{restartRule()}
	}
	return c
}

// restartRule maps the agent's exit code 88 to RestartAllContainers.
func restartRule() corev1.ContainerRestartRule {
	return corev1.ContainerRestartRule{
		Action: corev1.ContainerRestartRuleActionRestartAllContainers,
		ExitCodes: &corev1.ContainerRestartRuleOnExitCodes{
			Operator: corev1.ContainerRestartRuleOnExitCodesOpIn,
			Values:   []int32{servingv1.ExitCodeRestartGroup},
		},
	}
}
