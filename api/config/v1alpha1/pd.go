package v1alpha1

import (
	"fmt"
	"strconv"
	"time"
)

// Prefill/decode disaggregation modes: the engines' KV-transfer protocols.
const (
	// PDModeNixl is vLLM's NixlConnector exchange: a prefill request with
	// kv_transfer_params.do_remote_decode, then the decode request with the
	// prefill's kv_transfer_params copied unchanged.
	PDModeNixl = "nixl"
	// PDModeSGLang is SGLang's bootstrap exchange: bootstrap_host,
	// bootstrap_port and bootstrap_room added to one body sent to the
	// prefill and the decode endpoint at once.
	PDModeSGLang = "sglang"
)

// Defaults of the pd block.
const (
	DefaultPrefillProfile     = "prefill"
	DefaultDecodeProfile      = "decode"
	DefaultMinHeldShare       = 0.8
	DefaultPrefillTimeout     = 60 * time.Second
	DefaultMaxPrefillAttempts = 2
	// DefaultBootstrapPort is SGLang's --disaggregation-bootstrap-port
	// default.
	DefaultBootstrapPort = 8998
)

// LabelBootstrapPort is the endpoint label that gives an SGLang prefill
// endpoint's bootstrap port when it differs from the pool's pd.bootstrapPort.
const LabelBootstrapPort = "halyard.dev/bootstrap-port"

// PoolSpec configures one pool of endpoints. Pools exist through their
// endpoints (EndpointSpec.Pool, EngineSpec.Pool); an entry here only adds
// behaviour.
type PoolSpec struct {
	// Name is the pool's name.
	Name string `json:"name"`
	// PD, when set, makes the pool disaggregated: each request is prefilled
	// on an endpoint of role prefill and decoded on one of role decode.
	PD *PDSpec `json:"pd,omitempty"`
}

// PDSpec configures prefill/decode disaggregation for a pool.
type PDSpec struct {
	// Mode is the KV-transfer protocol: nixl (vLLM's NixlConnector) or
	// sglang (SGLang's bootstrap server). Required.
	Mode string `json:"mode"`
	// PrefillProfile and DecodeProfile name the scheduling profiles that
	// pick the prefill and the decode endpoint (router.profiles or a
	// preset); default the presets "prefill" and "decode".
	PrefillProfile string `json:"prefillProfile,omitempty"`
	DecodeProfile  string `json:"decodeProfile,omitempty"`
	// TopologyKey is an endpoint label (e.g. "zone"): the prefill endpoint
	// is chosen among those whose label equals the decode endpoint's when
	// any is available. Empty: no preference.
	TopologyKey string `json:"topologyKey,omitempty"`
	// DecodeFirst skips the remote prefill when the chosen decode endpoint
	// already holds most of the prompt.
	DecodeFirst DecodeFirstSpec `json:"decodeFirst,omitempty"`
	// MinPrefillTokens: prompts shorter than this many tokens are served by
	// the decode endpoint alone. 0 (default) disaggregates every request.
	MinPrefillTokens int `json:"minPrefillTokens,omitempty"`
	// PrefillTimeout bounds one prefill request (nixl: its whole answer;
	// sglang: the prefill endpoint's answer). Default 60s.
	PrefillTimeout Duration `json:"prefillTimeout,omitempty"`
	// MaxPrefillAttempts bounds the prefill endpoints tried for one
	// request, counting the first. Default 2.
	MaxPrefillAttempts int `json:"maxPrefillAttempts,omitempty"`
	// FallbackToLocalPrefill sends the request to the decode endpoint
	// without remote KV when every prefill attempt failed (counted in
	// halyard_router_pd_local_prefill_fallbacks_total). Default false: the
	// request fails with a 502 or 504.
	FallbackToLocalPrefill bool `json:"fallbackToLocalPrefill,omitempty"`
	// BootstrapPort is the SGLang prefill endpoints' bootstrap port unless
	// an endpoint's label halyard.dev/bootstrap-port says otherwise.
	// Default 8998. sglang mode only.
	BootstrapPort int `json:"bootstrapPort,omitempty"`
}

// DecodeFirstSpec configures the decode-first shortcut.
type DecodeFirstSpec struct {
	// Enabled turns decode-first on or off; default on.
	Enabled *bool `json:"enabled,omitempty"`
	// MinHeldShare is the share of the prompt's blocks, in (0,1], that the
	// decode endpoint must hold (by the router's prefix index) for the
	// remote prefill to be skipped. Default 0.8.
	MinHeldShare float64 `json:"minHeldShare,omitempty"`
}

// On reports whether decode-first is enabled.
func (d DecodeFirstSpec) On() bool { return d.Enabled == nil || *d.Enabled }

func (p *PoolSpec) defaultPD() {
	pd := p.PD
	if pd == nil {
		return
	}
	if pd.PrefillProfile == "" {
		pd.PrefillProfile = DefaultPrefillProfile
	}
	if pd.DecodeProfile == "" {
		pd.DecodeProfile = DefaultDecodeProfile
	}
	if pd.DecodeFirst.Enabled == nil {
		on := true
		pd.DecodeFirst.Enabled = &on
	}
	if pd.DecodeFirst.MinHeldShare == 0 {
		pd.DecodeFirst.MinHeldShare = DefaultMinHeldShare
	}
	setDur(&pd.PrefillTimeout, DefaultPrefillTimeout)
	if pd.MaxPrefillAttempts == 0 {
		pd.MaxPrefillAttempts = DefaultMaxPrefillAttempts
	}
	if pd.Mode == PDModeSGLang && pd.BootstrapPort == 0 {
		pd.BootstrapPort = DefaultBootstrapPort
	}
}

// PD returns the pd block of the named pool, or nil.
func (c *Config) PD(pool string) *PDSpec {
	for i := range c.Pools {
		if c.Pools[i].Name == pool {
			return c.Pools[i].PD
		}
	}
	return nil
}

// validatePools checks the pools block against the pools that endpoints
// and engines define.
func (c *Config) validatePools(known map[string]bool, add func(string, string, ...any)) {
	seen := map[string]int{}
	for i, p := range c.Pools {
		path := fmt.Sprintf("pools[%d]", i)
		switch {
		case p.Name == "":
			add(path+".name", "required")
		case !known[p.Name] && !DiscoveredPool(p.Name):
			add(path+".name", "no endpoint or engine has pool %q", p.Name)
		}
		if j, dup := seen[p.Name]; dup && p.Name != "" {
			add(path+".name", "%q is also the name of pools[%d]", p.Name, j)
		}
		seen[p.Name] = i
		if p.PD != nil {
			c.validatePD(path+".pd", p.Name, p.PD, add)
		}
	}
}

func (c *Config) validatePD(path, pool string, pd *PDSpec, add func(string, string, ...any)) {
	switch pd.Mode {
	case PDModeNixl, PDModeSGLang:
	case "":
		add(path+".mode", "required: %s or %s", PDModeNixl, PDModeSGLang)
	default:
		add(path+".mode", "must be %s or %s, got %q", PDModeNixl, PDModeSGLang, pd.Mode)
	}
	if s := pd.DecodeFirst.MinHeldShare; !(s > 0 && s <= 1) {
		add(path+".decodeFirst.minHeldShare", "must be in (0,1], got %v", s)
	}
	if pd.MinPrefillTokens < 0 {
		add(path+".minPrefillTokens", "must not be negative, got %d", pd.MinPrefillTokens)
	}
	if pd.PrefillTimeout.Duration <= 0 {
		add(path+".prefillTimeout", "must be positive, got %s", pd.PrefillTimeout.Duration)
	}
	if pd.MaxPrefillAttempts < 1 || pd.MaxPrefillAttempts > 10 {
		add(path+".maxPrefillAttempts", "must be between 1 and 10, got %d", pd.MaxPrefillAttempts)
	}
	if pd.Mode != PDModeSGLang && pd.BootstrapPort != 0 {
		add(path+".bootstrapPort", "only for mode %s", PDModeSGLang)
	}
	if pd.BootstrapPort < 0 || pd.BootstrapPort > 65535 {
		add(path+".bootstrapPort", "must be a port number, got %d", pd.BootstrapPort)
	}
	decode := false
	for i, e := range c.Endpoints {
		if e.Pool != pool {
			continue
		}
		decode = decode || e.Role == RoleDecode || e.Role == RoleBoth
		if v, ok := e.Labels[LabelBootstrapPort]; ok {
			if _, err := ParsePort(v); err != nil {
				add(fmt.Sprintf("endpoints[%d].labels.%s", i, LabelBootstrapPort), "%v", err)
			}
		}
	}
	for _, e := range c.Engines {
		decode = decode || (e.Pool == pool && (e.Role == RoleDecode || e.Role == RoleBoth))
	}
	if !decode && pool != "" && !DiscoveredPool(pool) {
		add(path, "pool %q has no endpoint or engine of role decode", pool)
	}
}

// ParsePort parses a TCP port number, 1 to 65535.
func ParsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("must be a port number, got %q", s)
	}
	return n, nil
}
