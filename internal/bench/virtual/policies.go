package virtual

import (
	"encoding/json"
	"fmt"
	"math"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/prefixtrack"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
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
	// PolicyPredicted is the scheduler's predicted-latency preset.
	PolicyPredicted = "predicted-latency"
	PolicyOracle    = "oracle"
	// PolicyPrecisePrefix is prefix-cache alone over the precise index fed
	// by the engines' KV events; PolicyPreciseDefault the default profile
	// over it.
	PolicyPrecisePrefix  = "precise-prefix"
	PolicyPreciseDefault = "precise-default"
	// PolicyPD serves the workload disaggregated (the scenario's pd block):
	// the router's PD planner over prefill and decode engines.
	PolicyPD = "pd"
)

// precise reports whether policy reads the precise index.
func precise(policy string) bool {
	return policy == PolicyPrecisePrefix || policy == PolicyPreciseDefault
}

// BuiltinPolicies lists the policies a scenario may name without defining
// them, in report order: the scheduler's presets (random, round-robin,
// least-request, load, default), prefix-cache alone (the approximate prefix
// scorer with its default load override, nothing else), precise-prefix and
// precise-default (prefix-cache alone and the default profile, their
// prefix scorer reading the precise index fed by the engines' KV events),
// and the oracle.
func BuiltinPolicies() []string {
	return []string{PolicyRandom, PolicyRoundRobin, PolicyLeastRequest, PolicyLoad, PolicyPrefixCache, PolicyDefault, PolicyPredicted,
		PolicyPrecisePrefix, PolicyPreciseDefault, PolicyOracle}
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
	case PolicyRandom, PolicyRoundRobin, PolicyLeastRequest, PolicyLoad, PolicyDefault, PolicyPreciseDefault, PolicyPredicted:
		preset := name
		if name == PolicyPreciseDefault {
			preset = PolicyDefault
		}
		var ok bool
		spec, ok = scheduling.PresetProfileSpecs()[preset]
		if !ok {
			return spec, fmt.Errorf("policy %q: the scheduler has no such preset", name)
		}
	default:
		return spec, fmt.Errorf("unknown policy %q (built-in: %v; or define it under profiles)", name, BuiltinPolicies())
	}
	if p := spec.Picker; p != nil && len(p.Params) == 0 && (p.Type == random.Type || p.Type == maxscore.Type) {
		seeded := *p
		seeded.Params, _ = json.Marshal(map[string]uint64{"seed": seed + 1}) // 0 means unseeded
		spec.Picker = &seeded
	}
	return spec, nil
}

// newRegistry registers every built-in scheduling plugin, explicitly, plus
// the oracle bound to this run. With a tracker, the prefix-cache scorers it
// builds read the tracker's view (the precise index) instead of their
// approximate index alone.
func newRegistry(o *oracleState, tracker *prefixtrack.Tracker) (*framework.Registry, error) {
	reg := &framework.Registry{}
	if tracker != nil {
		err := reg.Register(prefixcache.Type, prefixcache.FactoryWith(func(a *prefixindex.Approximate) prefixcache.Index {
			return tracker.View(a)
		}))
		if err != nil {
			return nil, err
		}
	}
	for typ, f := range plugins.BuiltIn() {
		if tracker != nil && typ == prefixcache.Type {
			continue
		}
		if err := reg.Register(typ, f); err != nil {
			return nil, err
		}
	}
	if err := reg.Register(OracleType, o.factory); err != nil {
		return nil, err
	}
	return reg, nil
}
