package v1alpha1

// Labels the controller puts on every pod and service it creates (DESIGN.md
// §9). The router's Kubernetes discovery reads the same keys.
const (
	// LabelModelServing names the owning ModelServing.
	LabelModelServing = "serving.halyard.dev/model-serving"
	// LabelGroup is the serving group's index, "0", "1", ...
	LabelGroup = "serving.halyard.dev/group"
	// LabelRole is the role's name within the group, e.g. "prefill".
	LabelRole = "serving.halyard.dev/role"
	// LabelRevision is the hash of the pod-shaping part of the spec the pod
	// was built from; a rollout replaces groups whose revision is outdated.
	LabelRevision = "serving.halyard.dev/revision"
	// LabelInstance is the index of the role instance (a leader and its
	// workers) within the group.
	LabelInstance = "serving.halyard.dev/instance"
	// LabelWorker is the pod's index within its role instance: "0" is the
	// leader, 1..workers the workers.
	LabelWorker = "serving.halyard.dev/worker"
)

// Annotations on pods: the channel between the controller and the in-pod
// agent (internal/agent).
const (
	// AnnotationRestartGeneration is the group's restart generation. An
	// agent that started under generation g exits with ExitCodeRestartGroup
	// once it sees a larger value, which makes the kubelet restart every
	// container of its pod (RestartAllContainers).
	AnnotationRestartGeneration = "serving.halyard.dev/restart-generation"
	// AnnotationBarrier is the highest generation whose barrier the
	// controller has released. The agent reports started (its startup
	// probe passes, so the engine containers start) once the barrier is at
	// least the generation it started under.
	AnnotationBarrier = "serving.halyard.dev/barrier"
	// AnnotationDomain is the topology domain (value of the placement's
	// topology key) the group is packed in.
	AnnotationDomain = "serving.halyard.dev/domain"
	// AnnotationDraining on a pod (its value: when the drain began,
	// RFC 3339) asks routers to send it no new requests; the autoscaler
	// removes its group once the requests in flight on it finished.
	AnnotationDraining = "serving.halyard.dev/draining"
	// AnnotationVolcanoGroupName ties a pod to its Volcano PodGroup.
	AnnotationVolcanoGroupName = "scheduling.k8s.io/group-name"
	// AnnotationAgentPort, on a role's pod template, sets the port of the
	// agent injected into the pods of that template (default the
	// controller's --agent-port). Pods with hostNetwork that share a node
	// need distinct ports.
	AnnotationAgentPort = "serving.halyard.dev/agent-port"
)

// Agent wiring shared by the controller, which injects the agent, and the
// agent itself.
const (
	// AgentContainerName is the name of the injected restartable init
	// container.
	AgentContainerName = "halyard-agent"
	// ExitCodeRestartGroup is the agent's exit code that the container
	// restart rule maps to RestartAllContainers.
	ExitCodeRestartGroup = 88
	// DefaultAgentPort serves the agent's /startup (barrier) and /healthz.
	DefaultAgentPort = 8099
)
