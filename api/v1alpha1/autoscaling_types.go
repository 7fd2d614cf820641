package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AutoscalingTargets are the load one engine should carry; the autoscaler
// asks for as many engines as the routers' observed totals divided by these.
// Unset targets are not used; at least one load target is required.
// +kubebuilder:validation:XValidation:rule="has(self.waitingPerEngine) || has(self.runningPerEngine) || has(self.kvUsagePercent) || has(self.prefillTokensPerEngine) || has(self.tokensPerSecondPerEngine) || has(self.requestsPerSecondPerEngineMilli)",message="at least one of waitingPerEngine, runningPerEngine, kvUsagePercent, prefillTokensPerEngine, tokensPerSecondPerEngine, requestsPerSecondPerEngineMilli is required"
type AutoscalingTargets struct {
	// WaitingPerEngine is the requests waiting in an engine's queue.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	WaitingPerEngine *int32 `json:"waitingPerEngine,omitempty"`
	// RunningPerEngine is the requests an engine runs at once (its
	// concurrency).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	RunningPerEngine *int32 `json:"runningPerEngine,omitempty"`
	// KVUsagePercent is the share of an engine's KV cache in use.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	KVUsagePercent *int32 `json:"kvUsagePercent,omitempty"`
	// PrefillTokensPerEngine is the prompt tokens sent to an engine and
	// not yet prefilled.
	// +kubebuilder:validation:Minimum=1
	// +optional
	PrefillTokensPerEngine *int32 `json:"prefillTokensPerEngine,omitempty"`
	// TokensPerSecondPerEngine is the tokens one engine generates per
	// second.
	// +kubebuilder:validation:Minimum=1
	// +optional
	TokensPerSecondPerEngine *int32 `json:"tokensPerSecondPerEngine,omitempty"`
	// RequestsPerSecondPerEngineMilli is the arrival rate one engine
	// serves within the objectives, in thousandths of a request per
	// second (5000: 5 req/s); unlike running and waiting requests, a
	// backlog during a cold start does not inflate it.
	// +kubebuilder:validation:Minimum=1
	// +optional
	RequestsPerSecondPerEngineMilli *int32 `json:"requestsPerSecondPerEngineMilli,omitempty"`
	// AttainmentPercent is the share of requests that must meet the TTFT
	// and TPOT objectives (the routers' SLO): below it a group is added
	// even when the load targets are met, and none is removed.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	AttainmentPercent *int32 `json:"attainmentPercent,omitempty"`
}

// AutoscalingScaleUp limits how fast groups are added.
type AutoscalingScaleUp struct {
	// StabilizationWindow: scale up only to the lowest recommendation of
	// this window; default 0s (at once).
	// +optional
	StabilizationWindow *metav1.Duration `json:"stabilizationWindow,omitempty"`
	// MaxGroups is how many groups may be added per Period; default 4.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=512
	// +optional
	MaxGroups *int32 `json:"maxGroups,omitempty"`
	// Period for MaxGroups; default 15s.
	// +optional
	Period *metav1.Duration `json:"period,omitempty"`
}

// AutoscalingScaleDown limits how fast groups are removed, and how.
type AutoscalingScaleDown struct {
	// StabilizationWindow: scale down only to the highest recommendation
	// of this window; default 5m.
	// +optional
	StabilizationWindow *metav1.Duration `json:"stabilizationWindow,omitempty"`
	// MaxGroups is how many groups may be removed per Period; default 1.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=512
	// +optional
	MaxGroups *int32 `json:"maxGroups,omitempty"`
	// Period for MaxGroups; default 60s.
	// +optional
	Period *metav1.Duration `json:"period,omitempty"`
	// DrainGrace bounds how long a removed group's requests in flight may
	// run after the routers stopped sending it new ones; default 5m.
	// +optional
	DrainGrace *metav1.Duration `json:"drainGrace,omitempty"`
}

// AutoscalingPD scales the prefill and decode roles apart (each role's
// replicas in every group), keeping their ratio within bounds.
// +kubebuilder:validation:XValidation:rule="!has(self.minRatioPercent) || !has(self.maxRatioPercent) || self.minRatioPercent <= self.maxRatioPercent",message="minRatioPercent must not exceed maxRatioPercent"
type AutoscalingPD struct {
	// Prefill and Decode are each role's per-engine targets.
	Prefill AutoscalingTargets `json:"prefill"`
	Decode  AutoscalingTargets `json:"decode"`
	// MinRatioPercent and MaxRatioPercent bound prefill instances per 100
	// decode instances (e.g. 50 and 200: between 1:2 and 2:1).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MinRatioPercent *int32 `json:"minRatioPercent,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	MaxRatioPercent *int32 `json:"maxRatioPercent,omitempty"`
}

// AutoscalingSpec makes the controller set spec.replicas (and, with pd,
// the prefill and decode roles' replicas) from the load the routers see.
// Precedence with the scale subresource (kubectl scale, an HPA, KEDA):
// without spec.autoscaling, or with paused, they own spec.replicas; with
// it, a change of spec.replicas that the autoscaler did not make is a
// manual override: the autoscaler keeps it for manualOverride, within
// minGroups and maxGroups, then resumes from it (docs/autoscaling.md).
// +kubebuilder:validation:XValidation:rule="!has(self.minGroups) || self.minGroups <= self.maxGroups",message="minGroups must not exceed maxGroups"
// +kubebuilder:validation:XValidation:rule="!has(self.panicWindow) || !has(self.stableWindow) || duration(self.panicWindow) <= duration(self.stableWindow)",message="panicWindow must not exceed stableWindow"
// +kubebuilder:validation:XValidation:rule="has(self.targets) != has(self.pd)",message="give either targets or pd"
type AutoscalingSpec struct {
	// Paused stops the autoscaler; spec.replicas is then left to its
	// owner (kubectl scale, an HPA).
	// +optional
	Paused bool `json:"paused,omitempty"`
	// MinGroups may be 0: after idleToZero without a request the model has
	// no group, and the routers hold its requests in their waiting room
	// until one is ready. Default 1.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=512
	// +optional
	MinGroups *int32 `json:"minGroups,omitempty"`
	// MaxGroups bounds the groups.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=512
	MaxGroups int32 `json:"maxGroups"`
	// Targets are the per-engine targets (not with pd).
	// +optional
	Targets *AutoscalingTargets `json:"targets,omitempty"`
	// StableWindow is the window signals are averaged over; default 60s.
	// +optional
	StableWindow *metav1.Duration `json:"stableWindow,omitempty"`
	// PanicWindow is the short window that detects a step in demand;
	// default 6s. When it asks for PanicThresholdPercent of the ready
	// groups or more (default 200), the autoscaler scales on it and does
	// not scale down for a stable window. 0 turns panic mode off.
	// +optional
	PanicWindow *metav1.Duration `json:"panicWindow,omitempty"`
	// +kubebuilder:validation:Minimum=101
	// +kubebuilder:validation:Maximum=10000
	// +optional
	PanicThresholdPercent *int32 `json:"panicThresholdPercent,omitempty"`
	// ScaleUp and ScaleDown limit the speed of changes.
	// +optional
	ScaleUp AutoscalingScaleUp `json:"scaleUp,omitempty"`
	// +optional
	ScaleDown AutoscalingScaleDown `json:"scaleDown,omitempty"`
	// ColdStart is the time a new group is assumed to take until it serves,
	// until starts have been observed; default 2m. The autoscaler scales
	// for the demand its trend predicts one cold start ahead.
	// +optional
	ColdStart *metav1.Duration `json:"coldStart,omitempty"`
	// IdleToZero is how long a model with minGroups 0 must see no request
	// before its last group goes; default 10m.
	// +optional
	IdleToZero *metav1.Duration `json:"idleToZero,omitempty"`
	// ManualOverride is how long a manual change of spec.replicas is kept
	// before the autoscaler resumes; default 10m.
	// +optional
	ManualOverride *metav1.Duration `json:"manualOverride,omitempty"`
	// PD scales the prefill and decode roles apart (instead of targets).
	// +optional
	PD *AutoscalingPD `json:"pd,omitempty"`
}

// AutoscalingSignals are the signal values of the last decision, averaged
// over the stable window and summed over the ready engines (quantities as
// decimal strings, so that no float enters the API).
type AutoscalingSignals struct {
	// Engines is the ready engines the values cover.
	Engines int32 `json:"engines"`
	// Waiting is requests waiting in the engines' queues.
	Waiting string `json:"waiting,omitempty"`
	// Running is requests the engines run.
	Running string `json:"running,omitempty"`
	// KVUsage is the sum of the engines' KV-cache usage (0–1 each).
	KVUsage string `json:"kvUsage,omitempty"`
	// PrefillTokens is prompt tokens not yet prefilled.
	PrefillTokens string `json:"prefillTokens,omitempty"`
	// TokensPerSecond is generated tokens per second.
	TokensPerSecond string `json:"tokensPerSecond,omitempty"`
	// RequestsPerSecond is requests arriving per second.
	RequestsPerSecond string `json:"requestsPerSecond,omitempty"`
	// Attainment is the share of requests meeting the objectives.
	Attainment string `json:"attainment,omitempty"`
	// WaitingRoom is requests held while no engine was ready.
	WaitingRoom string `json:"waitingRoom,omitempty"`
}

// AutoscalingStatus is the autoscaler's last decision.
type AutoscalingStatus struct {
	// DesiredGroups is what the autoscaler last asked for; CurrentGroups
	// the groups that existed then.
	DesiredGroups int32 `json:"desiredGroups"`
	CurrentGroups int32 `json:"currentGroups"`
	// DesiredPrefill and DesiredDecode are the role replicas under pd.
	// +optional
	DesiredPrefill int32 `json:"desiredPrefill,omitempty"`
	// +optional
	DesiredDecode int32 `json:"desiredDecode,omitempty"`
	// LastDecision is when the autoscaler last decided; LastScale when it
	// last changed spec.replicas.
	// +optional
	LastDecision *metav1.Time `json:"lastDecision,omitempty"`
	// +optional
	LastScale *metav1.Time `json:"lastScale,omitempty"`
	// Reason is the last decision's explanation.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Signals are the values the last decision saw.
	// +optional
	Signals AutoscalingSignals `json:"signals,omitempty"`
	// ColdStart is the observed time a new group takes to serve.
	// +optional
	ColdStart *metav1.Duration `json:"coldStart,omitempty"`
	// ManualOverrideUntil is set while a manual scale is kept.
	// +optional
	ManualOverrideUntil *metav1.Time `json:"manualOverrideUntil,omitempty"`
	// Draining are the groups chosen for removal whose requests in flight
	// are finishing; each is retired (spec.retiredGroups) when the routers
	// report none left on it, or at drainGrace.
	// +listType=map
	// +listMapKey=index
	// +optional
	Draining []DrainingGroup `json:"draining,omitempty"`
}

// DrainingGroup is a group being drained before its removal.
type DrainingGroup struct {
	// Index of the group.
	Index int32 `json:"index"`
	// Since is when the drain began.
	Since metav1.Time `json:"since"`
	// UniqueHot is the decayed prefix-cache hits only this group held when
	// it was chosen (what its removal costs; the lowest of the groups).
	// +optional
	UniqueHot string `json:"uniqueHot,omitempty"`
}

// Autoscaling condition types on a ModelServing.
const (
	// ConditionScalingActive: the autoscaler decides (False: paused,
	// overridden, or no signals, with the reason).
	ConditionScalingActive = "ScalingActive"
	// ConditionScalingLimited: the desired groups hit minGroups, maxGroups
	// or a rate limit.
	ConditionScalingLimited = "ScalingLimited"
)
