package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EngineKind is the inference engine a ModelServing runs.
// +kubebuilder:validation:Enum=vllm;sglang
type EngineKind string

// Engine kinds.
const (
	EngineVLLM   EngineKind = "vllm"
	EngineSGLang EngineKind = "sglang"
)

// ModelSpec says which model the engines serve.
type ModelSpec struct {
	// Name is the served model name: what the engine reports in /v1/models
	// and what a ModelRoute's targets resolve to.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`
	// Source is where the weights come from: hf://owner/repo,
	// modelscope://owner/repo, s3://..., gs://..., http(s)://...,
	// pvc://claim/path or file:///path.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(hf|modelscope|s3|gs|https?|pvc|file)://.+$')",message="source must be a URI with scheme hf, modelscope, s3, gs, http, https, pvc or file"
	// +optional
	Source string `json:"source,omitempty"`
	// Adapters are LoRA adapters the engines load at start.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Adapters []LoRAAdapter `json:"adapters,omitempty"`
	// Distribution is how the weights reach the nodes: direct (default),
	// dragonfly or none (see modelserving_weights.go).
	// +optional
	Distribution Distribution `json:"distribution,omitempty"`
	// Fetch tunes the weights' fetch.
	// +optional
	Fetch *FetchSpec `json:"fetch,omitempty"`
}

// LoRAAdapter is one LoRA adapter served on top of the base model.
type LoRAAdapter struct {
	// Name is the adapter's served name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`
	// Source is where the adapter's weights come from (same schemes as the
	// model's source).
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(hf|s3|gs|https?|pvc|file)://.+$')",message="source must be a URI with scheme hf, s3, gs, http, https, pvc or file"
	// +optional
	Source string `json:"source,omitempty"`
}

// RoleSpec is one role of a serving group, e.g. prefill, decode, or a single
// worker role. Each of its Replicas instances is a leader pod plus Workers
// worker pods (multi-node engines); single-node engines leave Workers at 0.
// +kubebuilder:validation:XValidation:rule="!has(self.workerTemplate) || self.workers > 0",message="workerTemplate is set but workers is 0"
// +kubebuilder:validation:XValidation:rule="has(self.template.spec) && size(self.template.spec.containers) > 0",message="template.spec.containers must name at least one container"
type RoleSpec struct {
	// Name of the role, a DNS label; prefill and decode have a meaning to
	// the router (disaggregated serving), other names serve both phases.
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=20
	Name string `json:"name"`
	// Replicas is the number of instances of this role in each group.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +optional
	Replicas int32 `json:"replicas,omitempty"`
	// Workers is the number of worker pods besides the leader in each
	// instance, for engines spanning several nodes.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=63
	// +optional
	Workers int32 `json:"workers,omitempty"`
	// Template is the leader's pod template, and the workers' when
	// WorkerTemplate is empty.
	Template corev1.PodTemplateSpec `json:"template"`
	// WorkerTemplate is the workers' pod template.
	// +optional
	WorkerTemplate *corev1.PodTemplateSpec `json:"workerTemplate,omitempty"`
}

// PlacementMode says whether packing a group into one domain is a hard
// requirement or a preference.
// +kubebuilder:validation:Enum=Required;Preferred
type PlacementMode string

// Placement modes.
const (
	PlacementRequired  PlacementMode = "Required"
	PlacementPreferred PlacementMode = "Preferred"
)

// PlacementSpec says where a group's pods go.
type PlacementSpec struct {
	// TopologyKey is a node label (e.g. topology.kubernetes.io/zone,
	// nvidia.com/gpu.clique); each group is packed inside one domain, a set
	// of nodes with one value of this label. Empty: no packing.
	// +kubebuilder:validation:MaxLength=317
	// +optional
	TopologyKey string `json:"topologyKey,omitempty"`
	// Mode is Required (default: the group's pods may only run in its
	// domain) or Preferred.
	// +kubebuilder:default=Required
	// +optional
	Mode PlacementMode `json:"mode,omitempty"`
	// PairTopologyKey is a finer node label (e.g. kubernetes.io/hostname or
	// a rack label): the instances with the same index of different roles
	// (a prefill and its decode) prefer one domain of it.
	// +kubebuilder:validation:MaxLength=317
	// +optional
	PairTopologyKey string `json:"pairTopologyKey,omitempty"`
	// SchedulerName is given to every pod. With "volcano" and Volcano's
	// PodGroup CRD installed, each group gets a PodGroup.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	SchedulerName string `json:"schedulerName,omitempty"`
	// GangTimeout bounds how long a new group may take until every pod is
	// scheduled; after it the controller deletes the group and creates it
	// again (all or nothing). Default 5m.
	// +optional
	GangTimeout *metav1.Duration `json:"gangTimeout,omitempty"`
	// Volcano tunes the PodGroup when Volcano schedules the group.
	// +optional
	Volcano *VolcanoSpec `json:"volcano,omitempty"`
}

// VolcanoSpec tunes the PodGroup of a group.
type VolcanoSpec struct {
	// Queue is the Volcano queue; empty uses Volcano's default.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Queue string `json:"queue,omitempty"`
	// HighestTierAllowed is the highest network tier (HyperNode level) a
	// group may span; default 1.
	// +kubebuilder:validation:Minimum=1
	// +optional
	HighestTierAllowed *int32 `json:"highestTierAllowed,omitempty"`
}

// RecoveryPolicy says what happens to a group when one of its pods fails.
// +kubebuilder:validation:Enum=InPlace;RecreateGroup;None
type RecoveryPolicy string

// Recovery policies.
const (
	// RecoveryInPlace restarts every pod of the group in place (same pods,
	// same nodes, RestartAllContainers) and recreates only pods whose node
	// is lost; it falls back to RecoveryRecreateGroup where the cluster
	// lacks the feature.
	RecoveryInPlace RecoveryPolicy = "InPlace"
	// RecoveryRecreateGroup deletes the whole group and creates it again.
	RecoveryRecreateGroup RecoveryPolicy = "RecreateGroup"
	// RecoveryNone only recreates missing pods.
	RecoveryNone RecoveryPolicy = "None"
)

// RecoverySpec configures group recovery.
type RecoverySpec struct {
	// Policy is InPlace (default), RecreateGroup or None.
	// +kubebuilder:default=InPlace
	// +optional
	Policy RecoveryPolicy `json:"policy,omitempty"`
	// RestartTimeout bounds an in-place restart, from the agents being told
	// until every pod has restarted; after it the group is recreated.
	// Default 5m.
	// +optional
	RestartTimeout *metav1.Duration `json:"restartTimeout,omitempty"`
	// MaxRestarts is how many in-place restarts a group may have before the
	// next failure recreates it; the count resets when a group is
	// recreated. Default 3.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxRestarts *int32 `json:"maxRestarts,omitempty"`
}

// RolloutSpec configures how a changed template reaches the groups.
type RolloutSpec struct {
	// MaxUnavailable is how many groups may be unavailable during a rollout;
	// default 1.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxUnavailable *int32 `json:"maxUnavailable,omitempty"`
	// Partition keeps groups with an index below it at their old revision
	// (a canary: partition = replicas-1 updates only the last group).
	// +kubebuilder:validation:Minimum=0
	// +optional
	Partition *int32 `json:"partition,omitempty"`
}

// MaxPodsPerGroup and MaxPods bound the pods of one ModelServing: a group
// holds, for each role, replicas × (1 + workers) pods; the ModelServing
// holds spec.replicas groups. Without them the field maxima allow
// 512 × 8 × 64 × 64, about 16.7 million pods. The CRD's CEL rules on
// ModelServingSpec repeat these numbers (a test keeps them equal) and the
// controller checks them again (the Valid condition).
const (
	MaxPodsPerGroup = 512
	MaxPods         = 4096
)

// PodsPerGroup is the number of pods in one serving group: for each role,
// its replicas (instances) times one leader plus its workers.
func (s *ModelServingSpec) PodsPerGroup() int64 {
	var n int64
	for _, r := range s.Roles {
		replicas := int64(r.Replicas)
		if replicas == 0 {
			replicas = 1 // the default
		}
		n += replicas * (1 + int64(r.Workers))
	}
	return n
}

// ModelServingSpec is the desired state of a ModelServing.
// +kubebuilder:validation:XValidation:rule="self.roles.map(r, (has(r.replicas) ? r.replicas : 1) * (1 + (has(r.workers) ? r.workers : 0))).sum() <= 512",message="a group may have at most 512 pods: the sum over roles of replicas × (1 + workers) is above it"
// +kubebuilder:validation:XValidation:rule="(has(self.replicas) ? self.replicas : 1) * self.roles.map(r, (has(r.replicas) ? r.replicas : 1) * (1 + (has(r.workers) ? r.workers : 0))).sum() <= 4096",message="a ModelServing may have at most 4096 pods: replicas × the pods of one group (the sum over roles of replicas × (1 + workers)) is above it"
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.autoscaling.pd) || (self.roles.exists(r, r.name == 'prefill') && self.roles.exists(r, r.name == 'decode'))",message="autoscaling.pd needs roles named prefill and decode"
type ModelServingSpec struct {
	// Model is what the engines serve.
	Model ModelSpec `json:"model"`
	// Engine is the inference engine: vllm or sglang.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="engine is immutable"
	Engine EngineKind `json:"engine"`
	// Replicas is the number of serving groups.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=512
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
	// Roles of each group.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Roles []RoleSpec `json:"roles"`
	// Placement of each group's pods.
	// +optional
	Placement PlacementSpec `json:"placement,omitempty"`
	// Recovery of failed groups.
	// +optional
	Recovery RecoverySpec `json:"recovery,omitempty"`
	// Rollout of template changes.
	// +optional
	Rollout RolloutSpec `json:"rollout,omitempty"`
	// Autoscaling sets replicas from the routers' load signals
	// (autoscaling_types.go, docs/autoscaling.md).
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`
}

// GroupPhase is where a serving group is in its life.
type GroupPhase string

// Group phases.
const (
	// GroupPending: pods are created, not all are scheduled yet.
	GroupPending GroupPhase = "Pending"
	// GroupStarting: every pod is scheduled and the barrier is released;
	// not every pod is ready yet.
	GroupStarting GroupPhase = "Starting"
	// GroupRunning: every pod is ready.
	GroupRunning GroupPhase = "Running"
	// GroupRestarting: an in-place restart is under way.
	GroupRestarting GroupPhase = "Restarting"
	// GroupRecreating: the group's pods are being deleted to create it
	// again (rollout, gang timeout, failed restart).
	GroupRecreating GroupPhase = "Recreating"
	// GroupDegraded: a pod failed and the policy does not restart the group.
	GroupDegraded GroupPhase = "Degraded"
)

// RoleStatus counts one role's pods in a group.
type RoleStatus struct {
	// Name of the role.
	Name string `json:"name"`
	// Pods the role should have in the group.
	Pods int32 `json:"pods"`
	// Ready pods.
	Ready int32 `json:"ready"`
}

// MemberStatus records a pod's restart baseline during an in-place restart.
type MemberStatus struct {
	// Pod name.
	Pod string `json:"pod"`
	// UID of the pod when the restart began.
	UID string `json:"uid,omitempty"`
	// Restarts is the sum of the pod's container restart counts when the
	// restart began.
	Restarts int32 `json:"restarts"`
	// AgentRestarts is the restart count of the pod's agent container when
	// the restart began: the pod has restarted in place once its agent runs
	// again with a higher count.
	// +optional
	AgentRestarts int32 `json:"agentRestarts,omitempty"`
	// Restarted is set once the pod has restarted in place or was recreated
	// and its agent runs again, holding the engines at the barrier.
	// +optional
	Restarted bool `json:"restarted,omitempty"`
}

// GroupStatus is the observed state of one serving group.
type GroupStatus struct {
	// Index of the group, 0..replicas-1.
	Index int32 `json:"index"`
	// Phase of the group.
	Phase GroupPhase `json:"phase"`
	// Revision the group's pods were built from.
	// +optional
	Revision string `json:"revision,omitempty"`
	// Domain is the topology domain the group is packed in.
	// +optional
	Domain string `json:"domain,omitempty"`
	// Roles with per-role readiness.
	// +optional
	Roles []RoleStatus `json:"roles,omitempty"`
	// Since is when the group entered its current incarnation (created or
	// recreated); the gang timeout counts from it.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// RestartGeneration counts the group's in-place restarts; pods carry it
	// in an annotation that the agents watch.
	// +optional
	RestartGeneration int64 `json:"restartGeneration,omitempty"`
	// Barrier is the highest restart generation whose barrier is released;
	// -1 while the first start is held.
	Barrier int64 `json:"barrier"`
	// Restarts is the number of in-place restarts since the group was last
	// created.
	// +optional
	Restarts int32 `json:"restarts,omitempty"`
	// Recreations counts how often the group was deleted and created again.
	// +optional
	Recreations int32 `json:"recreations,omitempty"`
	// RestartStarted is when the current in-place restart began.
	// +optional
	RestartStarted *metav1.Time `json:"restartStarted,omitempty"`
	// Members are the pods' restart baselines during an in-place restart.
	// +optional
	Members []MemberStatus `json:"members,omitempty"`
	// Reason is a CamelCase word for the last transition.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message says what happened last, for people.
	// +optional
	Message string `json:"message,omitempty"`
	// Weights is the group's share of status.weights.
	// +optional
	Weights *GroupWeightsStatus `json:"weights,omitempty"`
}

// ModelServingStatus is the observed state of a ModelServing.
type ModelServingStatus struct {
	// ObservedGeneration is the spec generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Replicas is the number of groups that exist.
	// +optional
	Replicas int32 `json:"replicas"`
	// ReadyReplicas is the number of groups whose every pod is ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`
	// UpdatedReplicas is the number of groups at the update revision.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas"`
	// UpdateRevision is the revision built from the current spec.
	// +optional
	UpdateRevision string `json:"updateRevision,omitempty"`
	// Selector selects every pod of this ModelServing (scale subresource).
	// +optional
	Selector string `json:"selector,omitempty"`
	// InPlaceRestart says whether in-place group restart is in use:
	// Enabled, or why not.
	// +optional
	InPlaceRestart string `json:"inPlaceRestart,omitempty"`
	// Groups, by index.
	// +listType=map
	// +listMapKey=index
	// +optional
	Groups []GroupStatus `json:"groups,omitempty"`
	// Weights sums the pods' weights fetches (when the controller fetches).
	// +optional
	Weights *WeightsStatus `json:"weights,omitempty"`
	// Autoscaling is the autoscaler's last decision, when spec.autoscaling
	// is set.
	// +optional
	Autoscaling *AutoscalingStatus `json:"autoscaling,omitempty"`
	// Conditions: Available, Progressing, Recovering, Valid, WeightsReady,
	// and with autoscaling ScalingActive and ScalingLimited.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ModelServing runs one model on one engine kind as replicated serving
// groups of pods, each group with its roles (e.g. prefill and decode),
// placed together, rolled out group by group and recovered as a whole.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=ms;mserv,categories=halyard
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.spec.model.name`
// +kubebuilder:printcolumn:name="Engine",type=string,JSONPath=`.spec.engine`
// +kubebuilder:printcolumn:name="Groups",type=integer,JSONPath=`.spec.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Updated",type=integer,JSONPath=`.status.updatedReplicas`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Available")].reason`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.autoscaling.desiredGroups`
// +kubebuilder:printcolumn:name="Weights",type=string,priority=1,JSONPath=`.status.weights.progress`
// +kubebuilder:printcolumn:name="Scaling",type=string,priority=1,JSONPath=`.status.autoscaling.reason`
// +kubebuilder:printcolumn:name="Revision",type=string,priority=1,JSONPath=`.status.updateRevision`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must start with a letter and hold only lowercase letters, digits and '-' (it names services)"
// +kubebuilder:validation:XValidation:rule="self.spec.roles.all(r, size(self.metadata.name) + size(r.name) <= 48)",message="metadata.name and each role name together may have at most 48 characters (pod hostnames are limited to 63)"
type ModelServing struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ModelServingSpec   `json:"spec"`
	Status ModelServingStatus `json:"status,omitempty"`
}

// ModelServingList is a list of ModelServings.
// +kubebuilder:object:root=true
type ModelServingList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ModelServing `json:"items"`
}
