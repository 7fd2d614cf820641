package virtual

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/prefixtrack"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/peerpolicy"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

var inf = math.Inf(1)

// Policy names.
const (
	PolicyRandom       = "random"
	PolicyRoundRobin   = "round-robin"
	PolicyLeastRequest = "least-request"
	PolicyLoad         = "load"
	PolicyPrefixCache  = "prefix-cache"
	PolicyDefault      = "default"
	// PolicyDefaultV1 is the default before issue 14 (presets.DefaultV1).
	PolicyDefaultV1 = presets.DefaultV1
	// PolicyPredicted is the scheduler's predicted-latency preset.
	PolicyPredicted = "predicted-latency"
	// PolicyDefaultV2 is the scheduler's default-v2 preset (the default
	// without predicted-latency's slack).
	PolicyDefaultV2 = presets.DefaultV2
	PolicyOracle    = "oracle"
	// PolicyPrecisePrefix is prefix-cache alone over the precise index fed
	// by the engines' KV events; PolicyPreciseDefault the default profile
	// over it.
	PolicyPrecisePrefix  = "precise-prefix"
	PolicyPreciseDefault = "precise-default"
	// PolicyPD serves the workload disaggregated (the scenario's pd block):
	// the router's PD planner over prefill and decode engines.
	PolicyPD = "pd"
	// The peers' default policies (presets.PeerSpecs).
	PolicyLLMD   = presets.PeerLLMD
	PolicyKthena = presets.PeerKthena
	PolicySGLang = presets.PeerSGLang
	PolicyAIBrix = presets.PeerAIBrix
)

// precise reports whether policy reads the precise index.
func precise(policy string) bool {
	return policy == PolicyPrecisePrefix || policy == PolicyPreciseDefault
}

// BuiltinPolicies lists the policies a scenario may name without defining
// them, in report order: the scheduler's presets (random, round-robin,
// least-request, load, default, default-v1, predicted-latency, default-v2),
// prefix-cache alone (the approximate prefix scorer with its default load
// override, nothing else), precise-prefix and
// precise-default (prefix-cache alone and the default profile, their
// prefix scorer reading the precise index fed by the engines' KV events),
// the peers' policies (llm-d, kthena, sglang, aibrix), and the oracle.
func BuiltinPolicies() []string {
	return []string{PolicyRandom, PolicyRoundRobin, PolicyLeastRequest, PolicyLoad, PolicyPrefixCache, PolicyDefault, PolicyDefaultV1, PolicyPredicted, PolicyDefaultV2,
		PolicyPrecisePrefix, PolicyPreciseDefault, PolicyLLMD, PolicyKthena, PolicySGLang, PolicyAIBrix, PolicyOracle}
}

// policySpec returns the profile of a built-in policy. Random and max-score
// pickers get a seed, so that runs repeat exactly.
func policySpec(name string, seed uint64) (config.ProfileSpec, error) {
	var spec config.ProfileSpec
	switch name {
	case PolicyPrefixCache, PolicyPrecisePrefix:
		spec = config.ProfileSpec{
			Scorers: []config.PluginSpec{{Type: prefixcache.Type}},
			Picker:  &config.PluginSpec{Type: maxscore.Type},
		}
	case PolicyOracle:
		spec = config.ProfileSpec{Picker: &config.PluginSpec{Type: OracleType}}
	case PolicyRandom, PolicyRoundRobin, PolicyLeastRequest, PolicyLoad, PolicyDefault, PolicyDefaultV1, PolicyPreciseDefault, PolicyPredicted, PolicyDefaultV2,
		PolicyLLMD, PolicyKthena, PolicySGLang, PolicyAIBrix:
		preset := name
		if name == PolicyPreciseDefault {
			preset = PolicyDefault
		}
		var ok bool
		spec, ok = presets.Specs()[preset]
		if !ok {
			return spec, fmt.Errorf("policy %q: the scheduler has no such preset", name)
		}
	default:
		return spec, fmt.Errorf("unknown policy %q (built-in: %v; or define it under profiles)", name, BuiltinPolicies())
	}
	return seeded(spec, seed), nil
}

// newRegistry registers every built-in scheduling plugin, explicitly, plus
// the oracle bound to this run.
func newRegistry(o *oracleState) (*framework.Registry, error) {
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		return nil, err
	}
	if err := reg.Register(OracleType, o.factory); err != nil {
		return nil, err
	}
	return reg, nil
}

// seeded returns spec with its random or max-score picker seeded (when it
// has no params), and the peers' scorers that break ties at random, so
// that runs repeat exactly.
func seeded(spec config.ProfileSpec, seed uint64) config.ProfileSpec {
	for i, sc := range spec.Scorers {
		if len(sc.Params) == 0 && (sc.Type == peerpolicy.SGLangType || sc.Type == peerpolicy.AIBrixType) {
			scorers := slices.Clone(spec.Scorers)
			scorers[i].Params, _ = json.Marshal(map[string]uint64{"seed": seed + 1})
			spec.Scorers = scorers
		}
	}
	if p := spec.Picker; p != nil && len(p.Params) == 0 && (p.Type == random.Type || p.Type == maxscore.Type) {
		s := *p
		s.Params, _ = json.Marshal(map[string]uint64{"seed": seed + 1}) // 0 means unseeded
		spec.Picker = &s
	}
	return spec
}

// newDirector builds one router's decision over the endpoints pools gives:
// the registry with the oracle, the profiles specs names (resolved by
// package decision as the router resolves its config's, presets beside
// them), and with a tracker the prefix-cache scorers reading its view
// through their handle, as in the router.
func newDirector(o *oracleState, tracker *prefixtrack.Tracker, blockSize int, clock func() time.Time, pools decision.Pools,
	specs map[string]config.ProfileSpec, pd map[string]config.PDSpec) (*decision.Director, error) {
	reg, err := newRegistry(o)
	if err != nil {
		return nil, err
	}
	h := scheduling.Handle{Clock: clock, Log: slog.New(slog.DiscardHandler)}
	if tracker != nil {
		h.Instances = map[string]any{prefixcache.SharedIndexKey: prefixcache.SharedIndex{
			BlockSize: blockSize,
			Wrap:      func(a *prefixindex.Approximate) prefixcache.Index { return tracker.View(a) },
		}}
	}
	return decision.New(decision.Options{
		Pools:    pools,
		Profiles: decision.NewProfiles(specs, presets.Specs(), reg, h),
		Handle:   h,
		PD:       pd,
	})
}
