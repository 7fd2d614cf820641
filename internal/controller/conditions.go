package controller

// Condition types on a ModelServing.
const (
	// ConditionAvailable is True when every group is ready.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while groups are created, rolled out or
	// scaled.
	ConditionProgressing = "Progressing"
	// ConditionRecovering is True while a group restarts or is recreated
	// after a failure.
	ConditionRecovering = "Recovering"
	// ConditionValid is False when the spec cannot be turned into pods.
	ConditionValid = "Valid"
)

// Reasons on conditions, group statuses and events.
const (
	ReasonAllGroupsReady     = "AllGroupsReady"
	ReasonGroupsNotReady     = "GroupsNotReady"
	ReasonNoGroups           = "NoGroups"
	ReasonRollingUpdate      = "RollingUpdate"
	ReasonRolloutComplete    = "RolloutComplete"
	ReasonScaling            = "Scaling"
	ReasonCreating           = "Creating"
	ReasonIdle               = "Idle"
	ReasonInvalidSpec        = "InvalidSpec"
	ReasonSpecValid          = "SpecValid"
	ReasonPodCreateFailed    = "PodCreateFailed"
	ReasonMemberFailed       = "MemberFailed"
	ReasonAgentsTold         = "AgentsTold"
	ReasonBarrierReleased    = "BarrierReleased"
	ReasonGroupScheduled     = "GroupScheduled"
	ReasonGangTimeout        = "GangTimeout"
	ReasonRestartTimedOut    = "RestartTimedOut"
	ReasonRestartLimit       = "RestartLimitReached"
	ReasonInPlaceUnavailable = "InPlaceUnavailable"
	ReasonRecreatePolicy     = "RecreatePolicy"
	ReasonGroupRecreated     = "GroupRecreated"
	ReasonPodReplaced        = "PodReplaced"
	ReasonNoDomainFits       = "NoDomainFits"
	ReasonScaledDown         = "ScaledDown"
)
