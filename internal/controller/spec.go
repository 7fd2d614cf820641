package controller

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"time"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// Defaults for fields the API server leaves empty (the CRD defaults what it
// can; these cover objects written before a default existed and pointers).
const (
	DefaultGangTimeout    = 5 * time.Minute
	DefaultRestartTimeout = 5 * time.Minute
	DefaultMaxRestarts    = 3
)

// settings is a ModelServing's spec with every default applied.
type settings struct {
	replicas int32
	// groups are the indices of the replicas groups, ascending: the
	// lowest not in spec.retiredGroups.
	groups         []int32
	maxUnavailable int32
	partition      int32
	gangTimeout    time.Duration
	restartTimeout time.Duration
	maxRestarts    int32
	policy         servingv1.RecoveryPolicy
	required       bool
}

func resolve(s *servingv1.ModelServingSpec) settings {
	out := settings{
		replicas:       1,
		maxUnavailable: 1,
		gangTimeout:    DefaultGangTimeout,
		restartTimeout: DefaultRestartTimeout,
		maxRestarts:    DefaultMaxRestarts,
		policy:         s.Recovery.Policy,
		required:       s.Placement.Mode != servingv1.PlacementPreferred,
	}
	if s.Replicas != nil {
		out.replicas = *s.Replicas
	}
	if v := s.Rollout.MaxUnavailable; v != nil && *v > 0 {
		out.maxUnavailable = *v
	}
	if v := s.Rollout.Partition; v != nil && *v > 0 {
		out.partition = *v
	}
	if v := s.Placement.GangTimeout; v != nil && v.Duration > 0 {
		out.gangTimeout = v.Duration
	}
	if v := s.Recovery.RestartTimeout; v != nil && v.Duration > 0 {
		out.restartTimeout = v.Duration
	}
	if v := s.Recovery.MaxRestarts; v != nil && *v >= 0 {
		out.maxRestarts = *v
	}
	if out.policy == "" {
		out.policy = servingv1.RecoveryInPlace
	}
	out.groups = ActiveGroups(out.replicas, s.RetiredGroups)
	return out
}

// has reports whether group idx is one of the groups.
func (s settings) has(idx int32) bool {
	_, ok := slices.BinarySearch(s.groups, idx)
	return ok
}

// ActiveGroups returns the indices of replicas groups: the lowest not in
// retired, ascending.
func ActiveGroups(replicas int32, retired []int32) []int32 {
	skip := make(map[int32]bool, len(retired))
	for _, i := range retired {
		skip[i] = true
	}
	out := make([]int32, 0, max(replicas, 0))
	for i := int32(0); int32(len(out)) < replicas; i++ {
		if !skip[i] {
			out = append(out, i)
		}
	}
	return out
}

// validate checks what the CRD schema cannot; its error becomes the Valid
// condition's message.
func validate(s *servingv1.ModelServingSpec) error {
	// The CRD's CEL rules bound the pod count too; objects stored before
	// those rules (or written with validation ratcheting) meet them here.
	perGroup := s.PodsPerGroup()
	if perGroup > servingv1.MaxPodsPerGroup {
		return fmt.Errorf("spec.roles: a group would have %d pods, at most %d are allowed (the sum over roles of replicas × (1 + workers))", perGroup, servingv1.MaxPodsPerGroup)
	}
	groups := int64(1)
	if s.Replicas != nil {
		groups = int64(*s.Replicas)
	}
	if total := groups * perGroup; total > servingv1.MaxPods {
		return fmt.Errorf("spec.replicas: %d groups of %d pods make %d pods, at most %d are allowed", groups, perGroup, total, servingv1.MaxPods)
	}
	for i, r := range s.Roles {
		if err := checkAgentPort(fmt.Sprintf("spec.roles[%d].template", i), r.Template.Annotations); err != nil {
			return err
		}
		if r.WorkerTemplate != nil {
			if err := checkAgentPort(fmt.Sprintf("spec.roles[%d].workerTemplate", i), r.WorkerTemplate.Annotations); err != nil {
				return err
			}
		}
		for _, t := range []struct {
			path string
			ok   bool
			c    func() []string
		}{
			{fmt.Sprintf("spec.roles[%d].template", i), true, func() []string { return containerNames(r.Template.Spec.Containers, r.Template.Spec.InitContainers) }},
			{fmt.Sprintf("spec.roles[%d].workerTemplate", i), r.WorkerTemplate != nil, func() []string {
				return containerNames(r.WorkerTemplate.Spec.Containers, r.WorkerTemplate.Spec.InitContainers)
			}},
		} {
			if !t.ok {
				continue
			}
			for _, n := range t.c() {
				if n == servingv1.AgentContainerName {
					return fmt.Errorf("%s: container name %q is reserved for the injected agent", t.path, n)
				}
			}
		}
	}
	return nil
}

// checkAgentPort checks a template's agent port annotation, if any.
func checkAgentPort(path string, ann map[string]string) error {
	v, ok := ann[servingv1.AnnotationAgentPort]
	if !ok {
		return nil
	}
	if _, err := agentPort(v); err != nil {
		return fmt.Errorf("%s: annotation %s: %w", path, servingv1.AnnotationAgentPort, err)
	}
	return nil
}

// agentPort parses the agent port annotation.
func agentPort(v string) (int32, error) {
	p, err := strconv.ParseInt(v, 10, 32)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("%q is not a port number", v)
	}
	return int32(p), nil
}

// elasticRoles: under a PD autoscaling policy the prefill and decode
// roles' replicas change inside running groups (instances added, or
// drained and removed) rather than by recreating the groups.
func elasticRoles(s *servingv1.ModelServingSpec) bool {
	return s.Autoscaling != nil && s.Autoscaling.PD != nil
}

// revisionInput is everything that shapes a pod; its hash is the revision.
type revisionInput struct {
	Model      servingv1.ModelSpec
	Engine     servingv1.EngineKind
	Roles      []servingv1.RoleSpec
	Key        string
	Mode       servingv1.PlacementMode
	PairKey    string
	Scheduler  string
	AgentImage string
	InPlace    bool
}

// revision hashes the pod-shaping part of the spec (FNV-64a over its JSON).
func revision(s *servingv1.ModelServingSpec, agentImage string, inPlace bool) string {
	roles := s.Roles
	if elasticRoles(s) { // role instances come and go inside running groups
		roles = make([]servingv1.RoleSpec, len(s.Roles))
		for i, r := range s.Roles {
			roles[i] = *r.DeepCopy()
			if r.Name == "prefill" || r.Name == "decode" {
				roles[i].Replicas = 0
			}
		}
	}
	b, err := json.Marshal(revisionInput{
		Model: s.Model, Engine: s.Engine, Roles: roles,
		Key: s.Placement.TopologyKey, Mode: s.Placement.Mode, PairKey: s.Placement.PairTopologyKey,
		Scheduler: s.Placement.SchedulerName, AgentImage: agentImage, InPlace: inPlace,
	})
	if err != nil { // cannot happen for these types
		return "unknown"
	}
	h := fnv.New64a()
	h.Write(b)
	return fmt.Sprintf("%010x", h.Sum64())[:10]
}
