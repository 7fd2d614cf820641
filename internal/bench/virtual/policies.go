package virtual

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/health"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/roundrobin"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/kvutilization"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/leastrequest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/queuedepth"
)

var inf = math.Inf(1)

// Policy names.
const (
	PolicyRandom       = "random"
	PolicyRoundRobin   = "round-robin"
	PolicyLeastRequest = "least-request"
	PolicyQueueDepth   = "queue-depth"
	PolicyKVUtil       = "kv-utilization"
	PolicyPrefixCache  = "prefix-cache"
	PolicyDefault      = "default"
	PolicyOracle       = "oracle"
)

// BuiltinPolicies lists the policies a scenario may name without defining
// them, in report order.
func BuiltinPolicies() []string {
	names := make([]string, 0, len(policyBuilders))
	for n := range policyBuilders {
		names = append(names, n)
	}
	order := map[string]int{PolicyRandom: 0, PolicyRoundRobin: 1, PolicyLeastRequest: 2, PolicyQueueDepth: 3,
		PolicyKVUtil: 4, PolicyPrefixCache: 5, PolicyDefault: 6, PolicyOracle: 7}
	sort.Slice(names, func(i, j int) bool { return order[names[i]] < order[names[j]] })
	return names
}

func seedParams(seed uint64) json.RawMessage {
	b, _ := json.Marshal(map[string]uint64{"seed": seed + 1}) // 0 would mean "unseeded"
	return b
}

func plugin(typ string, params json.RawMessage) config.PluginSpec {
	return config.PluginSpec{Type: typ, Params: params}
}

func weighted(typ string, w float64) config.PluginSpec {
	return config.PluginSpec{Type: typ, Weight: &w}
}

// policyBuilders map a built-in policy to its scheduling profile.
var policyBuilders = map[string]func(seed uint64) config.ProfileSpec{
	PolicyRandom: func(seed uint64) config.ProfileSpec {
		p := plugin(random.Type, seedParams(seed))
		return config.ProfileSpec{Picker: &p}
	},
	PolicyRoundRobin: func(uint64) config.ProfileSpec {
		p := plugin(roundrobin.Type, nil)
		return config.ProfileSpec{Picker: &p}
	},
	PolicyLeastRequest: func(seed uint64) config.ProfileSpec {
		p := plugin(maxscore.Type, seedParams(seed))
		return config.ProfileSpec{Scorers: []config.PluginSpec{weighted(leastrequest.Type, 1)}, Picker: &p}
	},
	PolicyQueueDepth: func(seed uint64) config.ProfileSpec {
		p := plugin(maxscore.Type, seedParams(seed))
		return config.ProfileSpec{Scorers: []config.PluginSpec{weighted(queuedepth.Type, 1)}, Picker: &p}
	},
	PolicyKVUtil: func(seed uint64) config.ProfileSpec {
		p := plugin(maxscore.Type, seedParams(seed))
		return config.ProfileSpec{Scorers: []config.PluginSpec{weighted(kvutilization.Type, 1)}, Picker: &p}
	},
	PolicyOracle: func(uint64) config.ProfileSpec {
		p := plugin(OracleType, nil)
		return config.ProfileSpec{Picker: &p}
	},
}

// policySpec returns the profile of a built-in policy.
func policySpec(name string, seed uint64) (config.ProfileSpec, error) {
	b, ok := policyBuilders[name]
	if !ok {
		return config.ProfileSpec{}, fmt.Errorf("unknown policy %q (built-in: %v; or define it under profiles)", name, BuiltinPolicies())
	}
	return b(seed), nil
}

// newRegistry registers the scheduling plugins a virtual fleet can use,
// explicitly, plus the oracle bound to this run.
func newRegistry(o *oracleState) (*framework.Registry, error) {
	reg := &framework.Registry{}
	for typ, f := range map[string]framework.Factory{
		health.Type:        health.Factory,
		maxscore.Type:      maxscore.Factory,
		random.Type:        random.Factory,
		roundrobin.Type:    roundrobin.Factory,
		leastrequest.Type:  leastrequest.Factory,
		queuedepth.Type:    queuedepth.Factory,
		kvutilization.Type: kvutilization.Factory,
		OracleType:         o.factory,
	} {
		if err := reg.Register(typ, f); err != nil {
			return nil, err
		}
	}
	return reg, nil
}
