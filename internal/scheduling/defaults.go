package scheduling

import (
	"encoding/json"
	"fmt"
	"sort"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/role"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/roundrobin"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/kvutilization"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/leastrequest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/queuedepth"
)

// DefaultProfile is the name of the profile routes use unless they name
// another.
const DefaultProfile = "default"

// Weights of the default profile's scorers; docs/scheduling.md gives the
// reasoning and the figures behind them.
const (
	DefaultPrefixWeight = 3
	DefaultQueueWeight  = 1
	DefaultKVWeight     = 1
)

func weightOf(w float64) *float64 { return &w }

// DefaultProfileSpec returns the default profile: prefix-cache (weight 3,
// with its load-over-affinity thresholds written out), queue-depth (1) and
// kv-utilization (1), picked by max-score. No filter: the datastore hands the
// scheduler only ready endpoints.
func DefaultProfileSpec() config.ProfileSpec {
	pp := prefixcache.DefaultParams()
	return config.ProfileSpec{
		Scorers: []config.PluginSpec{
			{Type: prefixcache.Type, Weight: weightOf(DefaultPrefixWeight), Params: json.RawMessage(fmt.Sprintf(
				`{"loadOverride":{"queueGap":%d,"kvUsageGap":%g}}`, pp.LoadOverride.QueueGap, pp.LoadOverride.KVUsageGap))},
			{Type: queuedepth.Type, Weight: weightOf(DefaultQueueWeight)},
			{Type: kvutilization.Type, Weight: weightOf(DefaultKVWeight)},
		},
		Picker: &config.PluginSpec{Type: maxscore.Type},
	}
}

// PredictedLatencyProfile is the name of the preset that picks by predicted
// latency.
const PredictedLatencyProfile = "predicted-latency"

// PredictedLatencyProfileSpec returns the predicted-latency preset: the
// prefix-cache scorer at weight 0 (it only predicts what each endpoint holds,
// for the next scorer; its load override is off) and predicted-latency
// (weight 1), picked by max-score: the endpoint of least predicted cost.
func PredictedLatencyProfileSpec() config.ProfileSpec {
	return config.ProfileSpec{
		Scorers: []config.PluginSpec{
			{Type: prefixcache.Type, Weight: weightOf(0), Params: json.RawMessage(`{"loadOverride":{"queueGap":0,"kvUsageGap":0}}`)},
			{Type: predictedlatency.Type, Weight: weightOf(1)},
		},
		Picker: &config.PluginSpec{Type: maxscore.Type},
	}
}

// PresetProfileSpecs returns the built-in profiles by name: "default"; the
// baselines "random", "round-robin" and "least-request"; "load"
// (queue-depth and kv-utilization, no affinity); and "prefill" and "decode"
// for disaggregated pools (prefill by prefix and queue, decode by KV headroom
// and running requests). Each call returns fresh values.
func PresetProfileSpecs() map[string]config.ProfileSpec {
	return map[string]config.ProfileSpec{
		DefaultProfile:          DefaultProfileSpec(),
		PredictedLatencyProfile: PredictedLatencyProfileSpec(),
		"random":                {Picker: &config.PluginSpec{Type: random.Type}},
		"round-robin":           {Picker: &config.PluginSpec{Type: roundrobin.Type}},
		"least-request": {
			Scorers: []config.PluginSpec{{Type: leastrequest.Type}},
			Picker:  &config.PluginSpec{Type: maxscore.Type},
		},
		"load": {
			Scorers: []config.PluginSpec{{Type: queuedepth.Type, Weight: weightOf(1)}, {Type: kvutilization.Type, Weight: weightOf(1)}},
			Picker:  &config.PluginSpec{Type: maxscore.Type},
		},
		"prefill": {
			Filters: []config.PluginSpec{{Type: role.Type, Params: json.RawMessage(`{"role":"` + framework.RolePrefill + `"}`)}},
			Scorers: []config.PluginSpec{
				{Type: prefixcache.Type, Weight: weightOf(DefaultPrefixWeight)},
				{Type: queuedepth.Type, Weight: weightOf(DefaultQueueWeight)},
			},
			Picker: &config.PluginSpec{Type: maxscore.Type},
		},
		"decode": {
			Filters: []config.PluginSpec{{Type: role.Type, Params: json.RawMessage(`{"role":"` + framework.RoleDecode + `"}`)}},
			Scorers: []config.PluginSpec{
				{Type: kvutilization.Type, Weight: weightOf(1)},
				{Type: leastrequest.Type, Weight: weightOf(1)},
			},
			Picker: &config.PluginSpec{Type: maxscore.Type},
		},
	}
}

// NewProfiles builds every profile of specs through reg, adding the default
// profile when specs has none named "default". Errors name the field path.
func NewProfiles(specs map[string]config.ProfileSpec, reg *framework.Registry, h framework.Handle) (map[string]*Profile, error) {
	names := make([]string, 0, len(specs)+1)
	for n := range specs {
		names = append(names, n)
	}
	if _, ok := specs[DefaultProfile]; !ok {
		names = append(names, DefaultProfile)
	}
	sort.Strings(names)
	out := make(map[string]*Profile, len(names))
	for _, n := range names {
		spec, ok := specs[n]
		if !ok {
			spec = DefaultProfileSpec()
		}
		p, err := NewProfile(n, spec, reg, h)
		if err != nil {
			return nil, err
		}
		out[n] = p
	}
	return out, nil
}
