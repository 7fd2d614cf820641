package presets

import (
	"encoding/json"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/role"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/roundrobin"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/kvutilization"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/leastrequest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/queuedepth"
)

// Names of the presets.
const (
	// Default is the profile routes use unless they name another.
	Default      = config.DefaultProfile
	Random       = "random"
	RoundRobin   = "round-robin"
	LeastRequest = "least-request"
	Load         = "load"
	Prefill      = "prefill"
	Decode       = "decode"
)

// Weights of the default profile's scorers; docs/scheduling.md gives the
// reasoning and the figures behind them.
const (
	DefaultPrefixWeight = 3
	DefaultQueueWeight  = 1
	DefaultKVWeight     = 1
)

// plugin is the spec of one plugin: its type, a weight (scorers; 0 for
// none) and its typed params (nil for none), encoded as the plugin's
// factory decodes them.
func plugin(typ string, weight float64, params any) config.PluginSpec {
	ps := config.PluginSpec{Type: typ}
	if weight != 0 {
		ps.Weight = &weight
	}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			panic("presets: " + typ + " params do not encode: " + err.Error()) // a programming error: typed params always encode
		}
		ps.Params = b
	}
	return ps
}

func picker(typ string) *config.PluginSpec {
	p := plugin(typ, 0, nil)
	return &p
}

// DefaultSpec returns the default profile: prefix-cache (weight 3, with
// its parameters, load-over-affinity thresholds included, written out),
// queue-depth (1) and kv-utilization (1), picked by max-score. No filter:
// candidates are chosen before the profile runs (package decision).
func DefaultSpec() config.ProfileSpec {
	return config.ProfileSpec{
		Scorers: []config.PluginSpec{
			plugin(prefixcache.Type, DefaultPrefixWeight, prefixcache.DefaultParams()),
			plugin(queuedepth.Type, DefaultQueueWeight, nil),
			plugin(kvutilization.Type, DefaultKVWeight, nil),
		},
		Picker: picker(maxscore.Type),
	}
}

// Specs returns the built-in profiles by name: Default; the baselines
// Random, RoundRobin and LeastRequest; Load (queue-depth and
// kv-utilization, no affinity); and Prefill and Decode for disaggregated
// pools (prefill by prefix and queue, decode by KV headroom and running
// requests). Each call returns fresh values.
func Specs() map[string]config.ProfileSpec {
	return map[string]config.ProfileSpec{
		Default:    DefaultSpec(),
		Random:     {Picker: picker(random.Type)},
		RoundRobin: {Picker: picker(roundrobin.Type)},
		LeastRequest: {
			Scorers: []config.PluginSpec{plugin(leastrequest.Type, 0, nil)},
			Picker:  picker(maxscore.Type),
		},
		Load: {
			Scorers: []config.PluginSpec{plugin(queuedepth.Type, 1, nil), plugin(kvutilization.Type, 1, nil)},
			Picker:  picker(maxscore.Type),
		},
		Prefill: {
			Filters: []config.PluginSpec{plugin(role.Type, 0, role.Params{Role: framework.RolePrefill})},
			Scorers: []config.PluginSpec{
				plugin(prefixcache.Type, DefaultPrefixWeight, nil),
				plugin(queuedepth.Type, DefaultQueueWeight, nil),
			},
			Picker: picker(maxscore.Type),
		},
		Decode: {
			Filters: []config.PluginSpec{plugin(role.Type, 0, role.Params{Role: framework.RoleDecode})},
			Scorers: []config.PluginSpec{
				plugin(kvutilization.Type, 1, nil),
				plugin(leastrequest.Type, 1, nil),
			},
			Picker: picker(maxscore.Type),
		},
	}
}
