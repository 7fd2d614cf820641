// Package controller reconciles Halyard's custom resources: ModelServing to
// pods, headless services and (with Volcano) PodGroups per serving group and
// role, with gang creation, topology packing (internal/placement), group-by-
// group rollout, scaling and in-place group recovery through the in-pod
// agent (internal/agent); ModelRoute to Accepted and ResolvedRefs
// conditions. NewManager wires both into a controller-runtime manager with
// leader election, health probes and the halyard_controller_* metrics.
//
// The reconciler is level-based: it records its intent (a restart
// generation, a group to recreate) in the ModelServing's status first, then
// acts idempotently from that status and the pods it observes, so a crash or
// a stale cache at any point leads to the same end state.
package controller
