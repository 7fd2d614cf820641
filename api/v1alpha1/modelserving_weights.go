package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Model weights (DESIGN.md §9 and §14): how the controller brings a model's
// weights onto the nodes before the engines start, and what it reports.

// Distribution says how a model's weights reach the nodes.
// +kubebuilder:validation:Enum=direct;dragonfly;none
type Distribution string

// Distributions.
const (
	// DistributionDirect: an init container runs `halyard fetch` from the
	// origin into the node cache (the default when the controller has a
	// node cache).
	DistributionDirect Distribution = "direct"
	// DistributionDragonfly: as direct, but the fetch goes through the
	// node's Dragonfly peer (falling back to the origin when the peer
	// fails), and the controller preheats a new revision into Dragonfly's
	// seed peers when a manager is configured.
	DistributionDragonfly Distribution = "dragonfly"
	// DistributionNone: the controller fetches nothing; the engine loads
	// the model itself.
	DistributionNone Distribution = "none"
)

// FetchSpec tunes the fetch of a model's weights.
type FetchSpec struct {
	// Include limits the fetch to files matching these globs (the hub
	// client's fnmatch rules: "*" also matches "/"), e.g. "*.safetensors",
	// "config.json", "tokenizer*". Empty: every file.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=256
	// +optional
	Include []string `json:"include,omitempty"`
	// Exclude skips files matching these globs.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=256
	// +optional
	Exclude []string `json:"exclude,omitempty"`
	// CredentialsSecret names a Secret in the ModelServing's namespace
	// whose keys become environment variables of the fetch container only
	// (never of the engines): HF_TOKEN, AWS_ACCESS_KEY_ID,
	// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, GOOGLE_OAUTH_ACCESS_TOKEN.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	CredentialsSecret string `json:"credentialsSecret,omitempty"`
}

// WeightsStatus sums the weights of a ModelServing's pods.
type WeightsStatus struct {
	// Pods is the number of pods that need the weights; Ready of them have
	// them on their node.
	Pods  int32 `json:"pods"`
	Ready int32 `json:"ready"`
	// DoneBytes and TotalBytes sum the pods' fetches, as their fetchers
	// report them (a pod whose node had the model counts it as done).
	// +optional
	DoneBytes int64 `json:"doneBytes,omitempty"`
	// +optional
	TotalBytes int64 `json:"totalBytes,omitempty"`
	// Progress says the same for people, e.g. "3/8 pods, 1.5 GiB of 16 GiB".
	// +optional
	Progress string `json:"progress,omitempty"`
	// Fallbacks counts files that pods fetched from the origin because the
	// node's Dragonfly peer failed.
	// +optional
	Fallbacks int64 `json:"fallbacks,omitempty"`
	// Preheat is the Dragonfly preheat of the update revision, if any.
	// +optional
	Preheat *PreheatStatus `json:"preheat,omitempty"`
}

// GroupWeightsStatus is one group's share of WeightsStatus.
type GroupWeightsStatus struct {
	Pods  int32 `json:"pods"`
	Ready int32 `json:"ready"`
	// +optional
	DoneBytes int64 `json:"doneBytes,omitempty"`
	// +optional
	TotalBytes int64 `json:"totalBytes,omitempty"`
}

// PreheatStatus is a Dragonfly manager preheat job.
type PreheatStatus struct {
	// Revision is the ModelServing revision the job preheats.
	Revision string `json:"revision"`
	// Source is the model source the job preheats.
	// +optional
	Source string `json:"source,omitempty"`
	// JobID is the manager's job id (0 when the job could not be created).
	// +optional
	JobID int64 `json:"jobID,omitempty"`
	// State is Pending, Success, Failure or Skipped.
	State string `json:"state"`
	// Files is the number of URLs preheated.
	// +optional
	Files int32 `json:"files,omitempty"`
	// Message says why a job failed or was skipped.
	// +optional
	Message string `json:"message,omitempty"`
	// StartedAt is when the job was created; the first pods of the
	// revision wait for the job from then until the controller's preheat
	// gate elapses.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
}

// Weights wiring shared by the controller, which injects the fetch init
// container, and `halyard fetch`, which reports through it.
const (
	// FetchContainerName is the injected init container running
	// `halyard fetch`.
	FetchContainerName = "halyard-fetch"
	// WeightsVolumeName is the node cache volume (a hostPath).
	WeightsVolumeName = "halyard-weights"
	// LabelWeightsReport marks the Event a fetcher keeps up to date with
	// its progress (value: the pod's name).
	LabelWeightsReport = "serving.halyard.dev/weights-report"
	// Annotations of that Event: bytes done and total, files fetched from
	// the origin after the Dragonfly peer failed, the state (Fetching, Done,
	// Failed) and, for Failed, the reason.
	AnnotationWeightsDone      = "serving.halyard.dev/weights-done-bytes"
	AnnotationWeightsTotal     = "serving.halyard.dev/weights-total-bytes"
	AnnotationWeightsFallbacks = "serving.halyard.dev/weights-fallbacks"
	AnnotationWeightsState     = "serving.halyard.dev/weights-state"
	AnnotationWeightsReason    = "serving.halyard.dev/weights-reason"
)
