package presets

import (
	"encoding/json"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/filter/role"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/peerpolicy"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/maxscore"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/random"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/picker/roundrobin"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/kvutilization"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/leastrequest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/queuedepth"
)

// Names of the presets.
const (
	// Default is the profile routes use unless they name another
	// (DefaultSpec): default-v2 with predicted-latency's slack, since
	// issue 14's sixth session.
	Default = config.DefaultProfile
	// DefaultV1 is the default before issue 14 (DefaultV1Spec): prefix
	// affinity, queue depth and KV headroom.
	DefaultV1    = "default-v1"
	Random       = "random"
	RoundRobin   = "round-robin"
	LeastRequest = "least-request"
	Load         = "load"
	// Prefill and Decode pick the pair of a disaggregated pool by the
	// predicted-latency scorer's estimates, since issue 14's seventh
	// session (PrefillSpec, DecodeSpec); PrefillV1 and DecodeV1 are the
	// profiles before: prefix affinity and queue depth, KV headroom and
	// running requests.
	Prefill   = "prefill"
	Decode    = "decode"
	PrefillV1 = "prefill-v1"
	DecodeV1  = "decode-v1"
	// PredictedLatency picks by predicted latency (the predicted-latency
	// scorer).
	PredictedLatency = "predicted-latency"
	// DefaultV2 is the default's scorers without predicted-latency's slack
	// (issue 14's fourth session; DefaultV2Spec): the old default's prefix
	// affinity and KV headroom, Kthena's count balance in place of
	// queue-depth, and predicted-latency at weight 6.
	DefaultV2 = "default-v2"

	// The peers' default policies, reproduced from their published
	// configuration (docs/scheduling.md cites each source).
	PeerLLMD   = "llm-d"
	PeerKthena = "kthena"
	PeerSGLang = "sglang"
	PeerAIBrix = "aibrix"
)

// Weights of the default-v1 profile's scorers (the prefix and count
// weights also the prefill preset's, the prefix and KV weights also
// default-v2's); docs/scheduling.md gives the reasoning and the figures
// behind them.
const (
	DefaultPrefixWeight = 3
	DefaultQueueWeight  = 1
	DefaultKVWeight     = 1
)

// weight is a scorer's weight.
func weight(w float64) *float64 { return &w }

// plugin is the spec of one plugin: its type, a weight (scorers; nil for
// the default) and its typed params (nil for none), encoded as the
// plugin's factory decodes them.
func plugin(typ string, weight *float64, params any) config.PluginSpec {
	ps := config.PluginSpec{Type: typ, Weight: weight}
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
	p := plugin(typ, nil, nil)
	return &p
}

// DefaultSlackShare and DefaultSlackMaxMs are the predicted-latency slack
// of the default profile: an endpoint whose predicted cost is within twice
// the least, and at most 500 ms above it, counts as the cheapest, so that
// the profile's other scorers (prefix affinity, count balance, KV
// headroom) choose among the endpoints a request would be about as fast
// on. docs/benchmarks.md ("Switching the default: the slack") has the
// sweep behind it.
const (
	DefaultSlackShare = 1
	DefaultSlackMaxMs = 500
)

// DefaultSpec returns the default profile: default-v2 (DefaultV2Spec) with
// the predicted-latency scorer's slack (DefaultSlackShare,
// DefaultSlackMaxMs) and honoring the prefix-cache scorer's load override
// (honorLoadOverride: past the queue or KV gap, an endpoint's cached
// prefix no longer makes it look cheap), picked by max-score. No filter:
// candidates are chosen before the profile runs (package decision).
func DefaultSpec() config.ProfileSpec {
	pl := predictedlatency.DefaultParams()
	pl.SlackShare, pl.SlackMaxMs = DefaultSlackShare, DefaultSlackMaxMs
	pl.HonorLoadOverride = true
	return defaultV2(pl)
}

// DefaultV1Spec returns the default profile before issue 14:
// prefix-cache (weight 3, with its parameters, load-over-affinity
// thresholds included, written out), queue-depth (1) and kv-utilization
// (1), picked by max-score.
func DefaultV1Spec() config.ProfileSpec {
	return config.ProfileSpec{
		Scorers: []config.PluginSpec{
			plugin(prefixcache.Type, weight(DefaultPrefixWeight), prefixcache.DefaultParams()),
			plugin(queuedepth.Type, weight(DefaultQueueWeight), nil),
			plugin(kvutilization.Type, weight(DefaultKVWeight), nil),
		},
		Picker: picker(maxscore.Type),
	}
}

// PredictedLatencySpec returns the predicted-latency preset: the
// prefix-cache scorer at weight 0 (it only predicts what each endpoint
// holds, for the next scorer; its load override is off) and
// predicted-latency (weight 1), picked by max-score: the endpoint of least
// predicted cost.
func PredictedLatencySpec() config.ProfileSpec {
	pp := prefixcache.DefaultParams()
	pp.LoadOverride = prefixcache.LoadOverride{}
	return config.ProfileSpec{
		Scorers: []config.PluginSpec{
			plugin(prefixcache.Type, weight(0), pp),
			plugin(predictedlatency.Type, weight(1), nil),
		},
		Picker: picker(maxscore.Type),
	}
}

// Weights of the default-v2 profile's scorers: the old default's
// prefix-cache (3) and kv-utilization (1), kthena-least-request (1) in
// place of queue-depth, and predicted-latency (6). docs/benchmarks.md
// ("Switching the default") has the sweeps behind them.
const (
	DefaultV2PrefixWeight    = DefaultPrefixWeight
	DefaultV2CountWeight     = 1
	DefaultV2KVWeight        = DefaultKVWeight
	DefaultV2PredictedWeight = 6
)

// DefaultV2Spec returns the default-v2 profile: prefix-cache (weight 3,
// its default params, load override included), kthena-least-request (1:
// in-flight requests plus 100 for each one the engine has not started),
// kv-utilization (1) and predicted-latency (6), picked by max-score. The
// old default's load balance keeps decode batches even where a request's
// predicted cost differs little between endpoints, and predicted-latency
// moves requests off engines whose queued prefill would delay them.
func DefaultV2Spec() config.ProfileSpec { return defaultV2(nil) }

// defaultV2 is default-v2's profile with the predicted-latency scorer's
// params (nil for its defaults).
func defaultV2(predicted any) config.ProfileSpec {
	return config.ProfileSpec{
		Scorers: []config.PluginSpec{
			plugin(prefixcache.Type, weight(DefaultV2PrefixWeight), prefixcache.DefaultParams()),
			plugin(peerpolicy.KthenaLeastType, weight(DefaultV2CountWeight), nil),
			plugin(kvutilization.Type, weight(DefaultV2KVWeight), nil),
			plugin(predictedlatency.Type, weight(DefaultV2PredictedWeight), predicted),
		},
		Picker: picker(maxscore.Type),
	}
}

// prefixOnly returns the prefix-cache scorer's params with its load
// override off and at most maxBlocks blocks hashed per prompt: the peers'
// prefix scorers have no load override, and each caps the blocks it
// matches.
func prefixOnly(maxBlocks int) prefixcache.Params {
	p := prefixcache.DefaultParams()
	p.LoadOverride = prefixcache.LoadOverride{}
	p.MaxPromptBlocks = maxBlocks
	return p
}

// PeerSpecs returns the peers' default policies as profiles:
//
//   - llm-d: the llm-d router's default EndpointPickerConfig: queue-scorer
//     (weight 2, the scraped waiting queue only), kv-cache-utilization-scorer
//     (2) and prefix-cache-scorer (3, 256 blocks matched at most), max-score.
//   - kthena: Kthena's Helm chart: the least-request filter (fewer than 10
//     waiting) and the scorers least-request, gpu-usage and prefix-cache
//     (128 blocks), weight 1 each, highest total wins. Its fourth scorer,
//     least-latency, ranks engines by their own recent TTFT and TPOT, which
//     Halyard does not scrape; it is left out (docs/scheduling.md).
//   - sglang: SGLang model gateway's cache_aware policy with its default
//     thresholds.
//   - aibrix: AIBrix's prefix-cache router with its defaults.
func PeerSpecs() map[string]config.ProfileSpec {
	return map[string]config.ProfileSpec{
		PeerLLMD: {
			Scorers: []config.PluginSpec{
				plugin(queuedepth.Type, weight(2), queuedepth.Params{EngineOnly: true}),
				plugin(kvutilization.Type, weight(2), nil),
				plugin(prefixcache.Type, weight(3), prefixOnly(256)),
			},
			Picker: picker(maxscore.Type),
		},
		PeerKthena: {
			Filters: []config.PluginSpec{plugin(peerpolicy.MaxWaitingType, nil, peerpolicy.MaxWaitingParams{MaxWaiting: 10})},
			Scorers: []config.PluginSpec{
				plugin(peerpolicy.KthenaLeastType, weight(1), nil),
				plugin(kvutilization.Type, weight(1), nil),
				plugin(prefixcache.Type, weight(1), prefixOnly(128)),
			},
			Picker: picker(maxscore.Type),
		},
		PeerSGLang: {
			Scorers: []config.PluginSpec{
				plugin(prefixcache.Type, weight(0), prefixOnly(prefixcache.DefaultMaxPromptBlocks)),
				plugin(peerpolicy.SGLangType, weight(1), nil),
			},
			Picker: picker(maxscore.Type),
		},
		PeerAIBrix: {
			Scorers: []config.PluginSpec{
				plugin(prefixcache.Type, weight(0), prefixOnly(prefixcache.DefaultMaxPromptBlocks)),
				plugin(peerpolicy.AIBrixType, weight(1), nil),
			},
			Picker: picker(maxscore.Type),
		},
	}
}

// PrefillSpec returns the prefill preset of disaggregated pools: prefill
// endpoints only (the role filter), the prefix-cache scorer at weight 0
// (what each endpoint holds of the prompt, for the next scorer; its load
// override off) and predicted-latency (1): the prefill endpoint where the
// request's first token is predicted soonest, its queued prefill and the
// prompt's uncached part counted, with remoteDecode (the request decodes
// on the decode endpoint: only its TTFT objective is checked here).
func PrefillSpec() config.ProfileSpec {
	spec := PredictedLatencySpec()
	spec.Filters = []config.PluginSpec{plugin(role.Type, nil, role.Params{Role: framework.RolePrefill})}
	p := predictedlatency.DefaultParams()
	p.RemoteDecode = true
	spec.Scorers[1] = plugin(predictedlatency.Type, weight(1), p)
	return spec
}

// DecodeSpec returns the decode preset of disaggregated pools: decode
// endpoints only, kv-utilization (1: KV headroom, which the latency model
// does not see, against preemption) and predicted-latency (2) with
// remotePrefill (the prompt arrives by KV transfer, so no prefill of its
// own is predicted there) and decodeWeight 1: the decode endpoint where
// the request's decode steps are predicted shortest, its decode batch and
// the contexts in it counted.
func DecodeSpec() config.ProfileSpec {
	p := predictedlatency.DefaultParams()
	p.RemotePrefill, p.DecodeWeight = true, 1
	return config.ProfileSpec{
		Filters: []config.PluginSpec{plugin(role.Type, nil, role.Params{Role: framework.RoleDecode})},
		Scorers: []config.PluginSpec{plugin(kvutilization.Type, weight(1), nil), plugin(predictedlatency.Type, weight(2), p)},
		Picker:  picker(maxscore.Type),
	}
}

// Specs returns the built-in profiles by name: Default; the baselines
// Random, RoundRobin and LeastRequest; Load (queue-depth and
// kv-utilization, no affinity); Prefill and Decode for disaggregated
// pools (by predicted TTFT on the prefill endpoint and predicted decode
// time on the decode endpoint) and PrefillV1 and DecodeV1 (prefill by
// prefix and queue, decode by KV headroom and running requests); and the
// peers' policies (PeerSpecs). Each call returns fresh values.
func Specs() map[string]config.ProfileSpec {
	specs := map[string]config.ProfileSpec{
		Default:          DefaultSpec(),
		DefaultV1:        DefaultV1Spec(),
		PredictedLatency: PredictedLatencySpec(),
		DefaultV2:        DefaultV2Spec(),
		Random:           {Picker: picker(random.Type)},
		RoundRobin:       {Picker: picker(roundrobin.Type)},
		LeastRequest: {
			Scorers: []config.PluginSpec{plugin(leastrequest.Type, nil, nil)},
			Picker:  picker(maxscore.Type),
		},
		Load: {
			Scorers: []config.PluginSpec{plugin(queuedepth.Type, weight(1), nil), plugin(kvutilization.Type, weight(1), nil)},
			Picker:  picker(maxscore.Type),
		},
		Prefill: PrefillSpec(),
		Decode:  DecodeSpec(),
		PrefillV1: {
			Filters: []config.PluginSpec{plugin(role.Type, nil, role.Params{Role: framework.RolePrefill})},
			Scorers: []config.PluginSpec{
				plugin(prefixcache.Type, weight(DefaultPrefixWeight), nil),
				plugin(queuedepth.Type, weight(DefaultQueueWeight), nil),
			},
			Picker: picker(maxscore.Type),
		},
		DecodeV1: {
			Filters: []config.PluginSpec{plugin(role.Type, nil, role.Params{Role: framework.RoleDecode})},
			Scorers: []config.PluginSpec{
				plugin(kvutilization.Type, weight(1), nil),
				plugin(leastrequest.Type, weight(1), nil),
			},
			Picker: picker(maxscore.Type),
		},
	}
	for name, spec := range PeerSpecs() {
		specs[name] = spec
	}
	return specs
}
