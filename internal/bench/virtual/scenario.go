package virtual

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"sigs.k8s.io/yaml"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/bench/arrival"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/bench/workload"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/simulator"
)

// Scenario is a virtual-time benchmark: a fleet, a workload, arrivals and
// the policies to compare. It is read from YAML (docs/bench.md).
type Scenario struct {
	// Model is the model name; default llama-3-8b.
	Model string `json:"model,omitempty"`
	// Fleet is the simulated engines.
	Fleet Fleet `json:"fleet"`
	// API is chat (default; prompts go through the simulator's chat
	// template) or completions.
	API string `json:"api,omitempty"`
	// ScrapeInterval is how often endpoint metrics are refreshed, as the
	// router scrapes; default 100ms.
	ScrapeInterval config.Duration `json:"scrapeInterval,omitempty"`
	// Workload is what to send.
	Workload workload.Spec `json:"workload"`
	// Arrival is when to send it.
	Arrival Arrival `json:"arrival,omitempty"`
	// MaxRequests caps the requests of each run (0: all).
	MaxRequests int `json:"maxRequests,omitempty"`
	// Duration stops sending after this much virtual time (0: no limit).
	Duration config.Duration `json:"duration,omitempty"`
	// SLO for goodput, e.g. "ttft=2s,tpot=100ms".
	SLO string `json:"slo,omitempty"`
	// SLOHeaders makes every request declare the SLO's TTFT and TPOT
	// objectives in the headers x-halyard-slo-ttft-ms and
	// x-halyard-slo-tpot-ms, as a client that states its objectives
	// would, under every policy (those without the predicted-latency
	// scorer ignore them).
	SLOHeaders bool `json:"sloHeaders,omitempty"`
	// Seed seeds the workload, the arrivals and the random pickers.
	Seed uint64 `json:"seed,omitempty"`
	// Policies to compare; default all built-in policies.
	Policies []string `json:"policies,omitempty"`
	// Profiles defines extra policies as scheduling profiles, by name.
	Profiles map[string]config.ProfileSpec `json:"profiles,omitempty"`
	// KVEvents sets how the engines' KV events reach the precise index of
	// the precise-* policies.
	KVEvents KVEvents `json:"kvEvents,omitempty"`
	// Routers is the number of router instances in front of the fleet
	// (default 1). Requests go to them in turn, as a load balancer in
	// front of replicated routers would send them; each has its own
	// profile, prefix indexes and in-flight counts, and all scrape the
	// same engines and, under precise-* policies, follow their events.
	Routers int `json:"routers,omitempty"`
	// PD, when set, lets the policy "pd" serve the workload disaggregated:
	// the first PD.Prefill engines of the fleet prefill, the others decode,
	// through the router's PD planner.
	PD *PDScenario `json:"pd,omitempty"`
	// Autoscaling, when set, compares fleet policies (static fleets and
	// autoscalers, autoscaling.go) under each routing policy.
	Autoscaling *AutoscalingScenario `json:"autoscaling,omitempty"`
	// Tenants split the requests among callers: each request is sent as
	// one tenant, drawn by share with the scenario's seed.
	Tenants []TenantLoad `json:"tenants,omitempty"`
	// Admission, when set, runs the router's admission stage (package
	// admission, with decision's capacity as its gate, as the router does)
	// with this router.admission block and the tenants' specs. Each policy
	// then runs with admission ("on"), without ("off"), and, for each
	// tenant marked alone, with that tenant's requests only; every run
	// reports each tenant's TTFT p90 against its p90 alone. The pd policy
	// is not admitted.
	Admission *config.AdmissionConfig `json:"admission,omitempty"`
}

// TenantLoad is a tenant of the scenario: its spec as in the router's
// config (name, weight, priority, limits), its share of the requests, and
// whether to run it alone for comparison.
type TenantLoad struct {
	config.TenantSpec `json:",inline"`
	// Share is the tenant's relative share of the requests.
	Share float64 `json:"share"`
	// Alone adds a run with this tenant's requests only.
	Alone bool `json:"alone,omitempty"`
}

// KVEvents configures the precise-* policies.
type KVEvents struct {
	// Delay is the time from the end of the engine step that produced an
	// event batch to the index applying it (publisher, network,
	// subscriber); default 0: the same instant, after the step.
	Delay config.Duration `json:"delay,omitempty"`
	// PendingTTL is router.prefixIndex.pendingTTL: how long a request just
	// routed counts as cached on its endpoint unless the engine reports
	// it. Default 10s; "0s" turns it off.
	PendingTTL *config.Duration `json:"pendingTTL,omitempty"`
}

// PDScenario configures the "pd" policy's disaggregated fleet.
type PDScenario struct {
	// Prefill is how many of fleet.engines are prefill engines; the rest
	// decode. Required, at least 1 and fewer than fleet.engines.
	Prefill int `json:"prefill"`
	// TransferPerToken is the modelled KV transfer time per prompt token
	// the decode engine does not hold; default 5µs, as `halyard sim`.
	TransferPerToken config.Duration `json:"transferPerToken,omitempty"`
	// PrefillProfile and DecodeProfile name the scheduling profiles (a
	// preset or one under profiles); default "prefill" and "decode".
	PrefillProfile string `json:"prefillProfile,omitempty"`
	DecodeProfile  string `json:"decodeProfile,omitempty"`
	// DecodeFirst, MinPrefillTokens and TopologyKey are as in the router's
	// pd block (docs/pd.md). Engines get the label zone=a or zone=b,
	// alternating, so TopologyKey "zone" pairs within a zone.
	DecodeFirst      config.DecodeFirstSpec `json:"decodeFirst,omitempty"`
	MinPrefillTokens int                    `json:"minPrefillTokens,omitempty"`
	TopologyKey      string                 `json:"topologyKey,omitempty"`
}

// Fleet describes identical simulated engines.
type Fleet struct {
	// Engines is the number of engines; default 1.
	Engines int `json:"engines"`
	// Profile is a simulator profile name or YAML path; default the
	// simulator's default.
	Profile string `json:"profile,omitempty"`
	// Capacity overrides of the profile (0 keeps the profile's value).
	NumGPUBlocks        int `json:"numGPUBlocks,omitempty"`
	BlockSize           int `json:"blockSize,omitempty"`
	MaxNumSeqs          int `json:"maxNumSeqs,omitempty"`
	MaxNumBatchedTokens int `json:"maxNumBatchedTokens,omitempty"`
	MaxModelLen         int `json:"maxModelLen,omitempty"`
}

// Arrival is the scenario's arrival process: one of Rates (a Poisson ladder;
// 0 means all at once), Concurrency (closed loop) or Trace (the trace's
// timestamps, sped up by TimeScale). Default: Trace for trace workloads,
// else all at once.
type Arrival struct {
	Rates       []float64 `json:"rates,omitempty"`
	Concurrency int       `json:"concurrency,omitempty"`
	Trace       bool      `json:"trace,omitempty"`
	TimeScale   float64   `json:"timeScale,omitempty"`
	// Shape time-warps the workload onto a changing rate (shape.go);
	// not with rates or concurrency.
	Shape *Shape `json:"shape,omitempty"`
}

// Load reads a scenario file strictly, defaults and validates it.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	s, err := parse(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

// resolvePaths makes the scenario's relative file paths (workload.trace,
// and fleet.profile when it is not a built-in profile) relative to dir, the
// scenario file's folder, so that a scenario runs from any working
// directory. The vendored default traces stay relative to the working
// directory.
func (s *Scenario) resolvePaths(dir string) {
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	s.Workload.Trace = rel(s.Workload.Trace)
	if !slices.Contains(simulator.BuiltinProfiles(), s.Fleet.Profile) {
		s.Fleet.Profile = rel(s.Fleet.Profile)
	}
}

// Parse decodes a scenario strictly (unknown fields are errors), defaults
// and validates it.
func Parse(data []byte) (*Scenario, error) { return parse(data, "") }

// parse is Parse with relative paths resolved against dir (none when "").
func parse(data []byte, dir string) (*Scenario, error) {
	var s Scenario
	if err := yaml.UnmarshalStrict(data, &s); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dir != "" {
		s.resolvePaths(dir)
	}
	s.Default()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Default fills unset fields.
func (s *Scenario) Default() {
	if s.Model == "" {
		s.Model = "llama-3-8b"
	}
	if s.Fleet.Engines == 0 {
		s.Fleet.Engines = 1
	}
	if s.API == "" {
		s.API = "chat"
	}
	if s.ScrapeInterval.Duration == 0 {
		s.ScrapeInterval.Duration = 100 * time.Millisecond
	}
	if len(s.Policies) == 0 {
		s.Policies = BuiltinPolicies()
		if s.PD != nil {
			s.Policies = append(s.Policies, PolicyPD)
		}
	}
	if pd := s.PD; pd != nil {
		if pd.TransferPerToken.Duration == 0 {
			pd.TransferPerToken.Duration = defaultTransferPerToken
		}
		if pd.PrefillProfile == "" {
			pd.PrefillProfile = config.DefaultPrefillProfile
		}
		if pd.DecodeProfile == "" {
			pd.DecodeProfile = config.DefaultDecodeProfile
		}
		if pd.DecodeFirst.Enabled == nil {
			on := true
			pd.DecodeFirst.Enabled = &on
		}
		if pd.DecodeFirst.MinHeldShare == 0 {
			pd.DecodeFirst.MinHeldShare = config.DefaultMinHeldShare
		}
	}
	if s.Routers == 0 {
		s.Routers = 1
	}
	if s.KVEvents.PendingTTL == nil {
		s.KVEvents.PendingTTL = &config.Duration{Duration: config.DefaultPendingTTL}
	}
	s.Workload.Default()
	if s.Autoscaling != nil {
		s.Autoscaling.defaults()
	}
}

// Validate checks the scenario; errors name the field path.
func (s *Scenario) Validate() error {
	var errs []error
	if s.Fleet.Engines < 1 || s.Fleet.Engines > 10000 {
		errs = append(errs, fmt.Errorf("fleet.engines: must be 1 to 10000, got %d", s.Fleet.Engines))
	}
	if _, err := s.engineConfig(); err != nil {
		errs = append(errs, fmt.Errorf("fleet: %w", err))
	}
	if s.API != "chat" && s.API != "completions" {
		errs = append(errs, fmt.Errorf("api: want chat or completions, got %q", s.API))
	}
	if s.ScrapeInterval.Duration < 0 {
		errs = append(errs, fmt.Errorf("scrapeInterval: must be positive, got %s", s.ScrapeInterval.Duration))
	}
	if err := s.Workload.Validate("workload"); err != nil {
		errs = append(errs, err)
	}
	a := s.Arrival
	set := 0
	for _, b := range []bool{len(a.Rates) > 0, a.Concurrency != 0, a.Trace} {
		if b {
			set++
		}
	}
	if set > 1 {
		errs = append(errs, errors.New("arrival: give only one of rates, concurrency and trace"))
	}
	for i, r := range a.Rates {
		if r < 0 {
			errs = append(errs, fmt.Errorf("arrival.rates[%d]: must not be negative, got %v", i, r))
		}
	}
	if a.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("arrival.concurrency: must be positive, got %d", a.Concurrency))
	}
	if a.TimeScale < 0 {
		errs = append(errs, fmt.Errorf("arrival.timeScale: must be positive, got %v", a.TimeScale))
	}
	if s.MaxRequests < 0 {
		errs = append(errs, fmt.Errorf("maxRequests: must not be negative, got %d", s.MaxRequests))
	}
	if s.Duration.Duration < 0 {
		errs = append(errs, fmt.Errorf("duration: must not be negative, got %s", s.Duration.Duration))
	}
	if s.Routers < 1 || s.Routers > 64 {
		errs = append(errs, fmt.Errorf("routers: must be 1 to 64, got %d", s.Routers))
	}
	if d := s.KVEvents.Delay.Duration; d < 0 {
		errs = append(errs, fmt.Errorf("kvEvents.delay: must not be negative, got %s", d))
	}
	if p := s.KVEvents.PendingTTL; p != nil && p.Duration < 0 {
		errs = append(errs, fmt.Errorf("kvEvents.pendingTTL: must not be negative, got %s", p.Duration))
	}
	if _, err := stats.ParseSLO(s.SLO); err != nil {
		errs = append(errs, fmt.Errorf("slo: %w", err))
	}
	if len(s.Policies) == 0 {
		errs = append(errs, errors.New("policies: at least one required"))
	}
	if pd := s.PD; pd != nil {
		if pd.Prefill < 1 || pd.Prefill >= s.Fleet.Engines {
			errs = append(errs, fmt.Errorf("pd.prefill: must be 1 to fleet.engines-1 (%d), got %d", s.Fleet.Engines-1, pd.Prefill))
		}
		if pd.TransferPerToken.Duration < 0 {
			errs = append(errs, fmt.Errorf("pd.transferPerToken: must not be negative, got %s", pd.TransferPerToken.Duration))
		}
		if v := pd.DecodeFirst.MinHeldShare; !(v > 0 && v <= 1) {
			errs = append(errs, fmt.Errorf("pd.decodeFirst.minHeldShare: must be in (0,1], got %v", v))
		}
		if pd.MinPrefillTokens < 0 {
			errs = append(errs, fmt.Errorf("pd.minPrefillTokens: must not be negative, got %d", pd.MinPrefillTokens))
		}
		for _, n := range []struct{ field, name string }{{"pd.prefillProfile", pd.PrefillProfile}, {"pd.decodeProfile", pd.DecodeProfile}} {
			if _, ok := s.Profiles[n.name]; !ok {
				if _, ok := presets.Specs()[n.name]; !ok {
					errs = append(errs, fmt.Errorf("%s: %q is neither under profiles nor a scheduler preset", n.field, n.name))
				}
			}
		}
	}
	if sh := a.Shape; sh != nil {
		if len(a.Rates) > 0 || a.Concurrency > 0 {
			errs = append(errs, errors.New("arrival.shape: not with rates or concurrency"))
		}
		if err := sh.validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if as := s.Autoscaling; as != nil {
		if err := as.validate(); err != nil {
			errs = append(errs, err)
		}
		if s.PD != nil || slices.Contains(s.Policies, PolicyOracle) || slices.Contains(s.Policies, PolicyPD) {
			errs = append(errs, errors.New("autoscaling: not with pd or the oracle policy (their fleets are fixed)"))
		}
		if s.Admission != nil || len(s.Tenants) > 0 {
			errs = append(errs, errors.New("autoscaling: not with admission or tenants yet"))
		}
	}
	if s.Admission != nil || len(s.Tenants) > 0 {
		if _, err := s.admissionConfig(); err != nil {
			errs = append(errs, err)
		}
	}
	for i, t := range s.Tenants {
		if !(t.Share > 0) {
			errs = append(errs, fmt.Errorf("tenants[%d].share: must be positive, got %v", i, t.Share))
		}
	}
	seen := map[string]bool{}
	for i, p := range s.Policies {
		if seen[p] {
			errs = append(errs, fmt.Errorf("policies[%d]: %q appears twice", i, p))
		}
		seen[p] = true
		if _, ok := s.Profiles[p]; ok {
			continue
		}
		if p == PolicyPD {
			if s.PD == nil {
				errs = append(errs, fmt.Errorf("policies[%d]: %q needs a pd block", i, p))
			}
			continue
		}
		if _, err := policySpec(p, 0); err != nil {
			errs = append(errs, fmt.Errorf("policies[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// engineConfig builds the simulated engines' configuration.
func (s *Scenario) engineConfig() (simulator.Config, error) {
	prof, err := simulator.LoadProfile(s.Fleet.Profile)
	if err != nil {
		return simulator.Config{}, fmt.Errorf("profile: %w", err)
	}
	cfg := prof.Config(s.Model)
	set := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	set(&cfg.Capacity.NumGPUBlocks, s.Fleet.NumGPUBlocks)
	set(&cfg.Capacity.BlockSize, s.Fleet.BlockSize)
	set(&cfg.Capacity.MaxNumSeqs, s.Fleet.MaxNumSeqs)
	set(&cfg.Capacity.MaxNumBatchedTokens, s.Fleet.MaxNumBatchedTokens)
	set(&cfg.Capacity.MaxModelLen, s.Fleet.MaxModelLen)
	cfg.Seed = s.Seed
	if err := cfg.Validate(); err != nil {
		return simulator.Config{}, err
	}
	return cfg, nil
}

// arrivals returns one spec per run step.
func (s *Scenario) arrivals(timed bool) []arrival.Spec {
	a := s.Arrival
	switch {
	case len(a.Rates) > 0:
		out := make([]arrival.Spec, len(a.Rates))
		for i, r := range a.Rates {
			if r == 0 {
				r = inf
			}
			out[i] = arrival.Spec{Kind: arrival.Poisson, Rate: r, Seed: s.Seed + uint64(i)}
		}
		return out
	case a.Concurrency > 0:
		return []arrival.Spec{{Kind: arrival.Concurrency, Concurrency: a.Concurrency}}
	case a.Trace || timed:
		return []arrival.Spec{{Kind: arrival.Trace, TimeScale: a.TimeScale}}
	}
	return []arrival.Spec{{Kind: arrival.Poisson, Rate: inf, Seed: s.Seed}}
}

// admissionConfig is the router configuration admission is built from:
// the admission block and the tenants, defaulted and validated as the
// router's config file is.
func (s *Scenario) admissionConfig() (*config.Config, error) {
	cfg := &config.Config{APIVersion: config.APIVersion, Kind: config.Kind, Tenants: make([]config.TenantSpec, len(s.Tenants))}
	if s.Admission != nil {
		a := *s.Admission
		cfg.Router.Admission = &a
	}
	for i, t := range s.Tenants {
		cfg.Tenants[i] = t.TenantSpec
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	return cfg, nil
}
