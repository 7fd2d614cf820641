package v1alpha1

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"time"
)

// AdmissionConfig configures the router's admission stage: shared budgets
// and the per-model fair queue (DESIGN.md §13). Tenants and authentication
// are top-level blocks (Config.Tenants, Config.Auth).
type AdmissionConfig struct {
	// Store, when set, is a redis:// URL (redis://host:port/db, or
	// rediss:// for TLS): budgets are then shared by every router using
	// it. Absent means budgets are per router.
	Store string `json:"store,omitempty"`
	// StoreTimeout bounds one round trip to the store. Default 50ms.
	StoreTimeout Duration `json:"storeTimeout,omitempty"`
	// OnStoreError is what the router does while the store cannot be
	// reached: "local" (default) enforces localFraction of each limit on
	// this router alone; "reject" answers 503.
	OnStoreError string `json:"onStoreError,omitempty"`
	// LocalFraction is the share of each limit one router enforces while
	// the store is unreachable, in (0,1]. Default 1.
	LocalFraction float64 `json:"localFraction,omitempty"`
	// Queue bounds the per-model fair queue.
	Queue QueueConfig `json:"queue,omitempty"`
	// Unmeetable is what admission does with a request that states
	// objectives (x-halyard-slo-ttft-ms, x-halyard-slo-tpot-ms, or the
	// profile's defaults) when the route's predicted-latency scorer finds
	// no endpoint predicted to meet them: "serve" (default) sends it where
	// the profile picks, late; "shed" refuses it with 429 before it
	// reaches an engine (halyard_admission_shed_total reason
	// slo_unmeetable), its budgets refunded, so that capacity goes to
	// requests that can still be on time.
	Unmeetable string `json:"unmeetable,omitempty"`
}

// QueueConfig bounds the per-model fair queue that holds requests while
// every candidate endpoint of their model is saturated.
type QueueConfig struct {
	// MaxPerModel is the most requests waiting for one model; beyond it
	// the lowest priority is shed with 429. Default 1024.
	MaxPerModel int `json:"maxPerModel,omitempty"`
	// MaxWait is the longest a request waits before it is shed with 429.
	// Default 30s.
	MaxWait Duration `json:"maxWait,omitempty"`
	// NoEndpointWait is how long a request for a model with no endpoint at
	// all waits (so that scale-from-zero can catch up) before 503.
	// Default 5s.
	NoEndpointWait Duration `json:"noEndpointWait,omitempty"`
	// EndpointConcurrency, when positive, is how many requests this router
	// sends to one endpoint at a time before the endpoint counts as
	// saturated (set it near the engine's max_num_seqs). 0 means the
	// engine's metrics alone decide.
	EndpointConcurrency int `json:"endpointConcurrency,omitempty"`
	// EngineWaiting: an endpoint whose engine reports at least this many
	// waiting requests is saturated. Default 1 without
	// endpointConcurrency, -1 (ignore the engine's queue) with it.
	EngineWaiting int `json:"engineWaiting,omitempty"`
	// KVUtilization: an endpoint whose KV cache is at least this full
	// (0-1) is saturated. Default 0.95.
	KVUtilization float64 `json:"kvUtilization,omitempty"`
	// PrefillTokens, when positive, bounds the prompt tokens this router
	// has sent one endpoint whose first token has not come back (its
	// outstanding prefill, less what the prefix scorer says is cached): an
	// endpoint at the bound takes no new request (one request always
	// fits), and the router picks, among the endpoints that have room, one
	// that is not prefilling. The excess waits in the router's fair queue,
	// where weights apply, instead of in the engine's own queue, where a
	// light tenant's prefill shares a step with a heavy tenant's. -1 turns
	// it off. Default 1 (one prefill at a time per endpoint) with
	// endpointConcurrency, else off.
	PrefillTokens int `json:"prefillTokens,omitempty"`
	// Reserve is the share (0-0.5) of a model's slots, and of maxPerModel,
	// kept for tenants under their weighted fair share of the slots: a
	// tenant holding its share or more is admitted only below
	// (1-reserve) of the slots and refused on arrival past (1-reserve) of
	// the queue, so that a light tenant is admitted on arrival while a
	// heavy one saturates the model. Default 0.05 (rounded up to whole
	// slots).
	Reserve float64 `json:"reserve,omitempty"`
	// Disabled turns the queue off: requests go straight to scheduling.
	Disabled bool `json:"disabled,omitempty"`
}

// AuthConfig says how callers are authenticated. Absent means no
// authentication: every caller is the tenant "anonymous".
type AuthConfig struct {
	// APIKeys configures bearer API keys (the keys live under tenants).
	APIKeys APIKeysConfig `json:"apiKeys,omitempty"`
	// JWT, when set, accepts bearer JWTs verified against a JWKS.
	JWT *JWTConfig `json:"jwt,omitempty"`
	// ReloadInterval is how often key files and a JWKS file are re-read.
	// Default 10s.
	ReloadInterval Duration `json:"reloadInterval,omitempty"`
}

// APIKeysConfig configures API-key authentication.
type APIKeysConfig struct {
	// Required: a caller without credentials gets 401. When false such a
	// caller is the tenant "anonymous". Default true when an auth block
	// is present.
	Required *bool `json:"required,omitempty"`
}

// RequiredOrDefault reports whether credentials are required (default true).
func (a APIKeysConfig) RequiredOrDefault() bool { return a.Required == nil || *a.Required }

// JWTConfig verifies bearer JWTs.
type JWTConfig struct {
	// JWKS is a file path or an http(s) URL of a JSON Web Key Set.
	JWKS string `json:"jwks"`
	// RefreshInterval is how often a JWKS URL is fetched again. Default 5m.
	RefreshInterval Duration `json:"refreshInterval,omitempty"`
	// Issuer, when set, must equal the token's iss.
	Issuer string `json:"issuer,omitempty"`
	// Audience, when set, must be in the token's aud.
	Audience string `json:"audience,omitempty"`
	// TenantClaim names the claim whose string value is the tenant's name.
	// Default sub.
	TenantClaim string `json:"tenantClaim,omitempty"`
	// Leeway is the clock skew allowed on exp, nbf and iat. Default 30s,
	// at most 5m.
	Leeway Duration `json:"leeway,omitempty"`
}

// Priority classes.
const (
	PriorityCritical  = "critical"
	PriorityStandard  = "standard"
	PrioritySheddable = "sheddable"
)

// TenantSpec is one caller of the router.
type TenantSpec struct {
	// Name identifies the tenant in metrics, logs and JWT claims.
	Name string `json:"name"`
	// APIKeys are the tenant's keys, stored as the hex SHA-256 of the key.
	APIKeys []APIKeySpec `json:"apiKeys,omitempty"`
	// KeysFrom reads more keys from a file, re-read every
	// auth.reloadInterval (rotation without restart). A Kubernetes Secret
	// mounted as a volume is such a file.
	KeysFrom *KeysFromSpec `json:"keysFrom,omitempty"`
	// Models the tenant may call; absent means all.
	Models []string `json:"models,omitempty"`
	// Limits are the tenant's budgets over all models.
	Limits *LimitsSpec `json:"limits,omitempty"`
	// ModelLimits are budgets per model, beside the tenant's.
	ModelLimits map[string]LimitsSpec `json:"modelLimits,omitempty"`
	// Weight is the tenant's share in the fair queue. Default 1.
	Weight float64 `json:"weight,omitempty"`
	// Priority is the tenant's class: critical, standard (default) or
	// sheddable.
	Priority string `json:"priority,omitempty"`
	// MaxPriority is the highest class the tenant may ask for with the
	// x-halyard-priority header. Default: its priority (the header can
	// only lower it).
	MaxPriority string `json:"maxPriority,omitempty"`
	// CanExplain lets the tenant see decision headers (x-halyard-route
	// when it sends x-halyard-explain).
	CanExplain bool `json:"canExplain,omitempty"`
}

// APIKeySpec is one API key, by its hash.
type APIKeySpec struct {
	// SHA256 is the lowercase hex SHA-256 of the key.
	SHA256 string `json:"sha256"`
}

// KeysFromSpec names where more keys of a tenant are: a file (or a
// directory) or a Kubernetes Secret, one of them.
type KeysFromSpec struct {
	// File holds one key hash (hex SHA-256) per line; "#" starts a comment.
	// Lines "key: <plain key>" are hashed on load (a Secret's data).
	File string `json:"file,omitempty"`
	// Secret is a Kubernetes Secret followed through an informer (the
	// router needs get, list and watch on it): each data entry is one
	// plain key, hashed on arrival. Rotating it (editing the Secret)
	// changes the keys without a restart; deleting it revokes them.
	Secret *SecretRef `json:"secret,omitempty"`
}

// SecretRef names a Kubernetes Secret.
type SecretRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// LimitsSpec are budgets. Zero means unlimited.
type LimitsSpec struct {
	RequestsPerMinute int64 `json:"requestsPerMinute,omitempty"`
	TokensPerMinute   int64 `json:"tokensPerMinute,omitempty"`
	Concurrency       int64 `json:"concurrency,omitempty"`
}

// Defaults of admission and authentication.
const (
	DefaultStoreTimeout      = 50 * time.Millisecond
	DefaultQueueMaxPerModel  = 1024
	DefaultQueueMaxWait      = 30 * time.Second
	DefaultNoEndpointWait    = 5 * time.Second
	DefaultEngineWaiting     = 1
	DefaultKVUtilization     = 0.95
	DefaultQueueReserve      = 0.05
	DefaultPrefillTokens     = 1
	DefaultAuthReload        = 10 * time.Second
	DefaultJWKSRefresh       = 5 * time.Minute
	DefaultJWTLeeway         = 30 * time.Second
	MaxJWTLeeway             = 5 * time.Minute
	DefaultTenantClaim       = "sub"
	StoreErrorLocal          = "local"
	StoreErrorReject         = "reject"
	UnmeetableServe          = "serve"
	UnmeetableShed           = "shed"
	AnonymousTenant          = "anonymous"
	DefaultTenantWeight      = 1.0
	DefaultLocalFractionFull = 1.0
)

func (c *Config) defaultAdmission() {
	if a := c.Router.Admission; a != nil {
		setDur(&a.StoreTimeout, DefaultStoreTimeout)
		if a.OnStoreError == "" {
			a.OnStoreError = StoreErrorLocal
		}
		if a.LocalFraction == 0 {
			a.LocalFraction = DefaultLocalFractionFull
		}
		if a.Unmeetable == "" {
			a.Unmeetable = UnmeetableServe
		}
		q := &a.Queue
		if q.MaxPerModel == 0 {
			q.MaxPerModel = DefaultQueueMaxPerModel
		}
		setDur(&q.MaxWait, DefaultQueueMaxWait)
		setDur(&q.NoEndpointWait, DefaultNoEndpointWait)
		if q.EngineWaiting == 0 {
			q.EngineWaiting = DefaultEngineWaiting
			if q.EndpointConcurrency > 0 {
				// The router's own bound holds the excess; the engine's
				// queue then holds only prefills past one step's token
				// budget, a normal state that must not stall the queue.
				q.EngineWaiting = -1
			}
		}
		if q.KVUtilization == 0 {
			q.KVUtilization = DefaultKVUtilization
		}
		if q.PrefillTokens == 0 {
			q.PrefillTokens = -1
			if q.EndpointConcurrency > 0 {
				q.PrefillTokens = DefaultPrefillTokens
			}
		}
		if q.Reserve == 0 {
			q.Reserve = DefaultQueueReserve
		}
	}
	if a := c.Auth; a != nil {
		setDur(&a.ReloadInterval, DefaultAuthReload)
		if j := a.JWT; j != nil {
			setDur(&j.RefreshInterval, DefaultJWKSRefresh)
			setDur(&j.Leeway, DefaultJWTLeeway)
			if j.TenantClaim == "" {
				j.TenantClaim = DefaultTenantClaim
			}
		}
	}
	for i := range c.Tenants {
		t := &c.Tenants[i]
		if t.Weight == 0 {
			t.Weight = DefaultTenantWeight
		}
		if t.Priority == "" {
			t.Priority = PriorityStandard
		}
		if t.MaxPriority == "" {
			t.MaxPriority = t.Priority
		}
	}
}

// PriorityRank orders classes: critical 2, standard 1, sheddable 0, and
// -1 for an unknown name.
func PriorityRank(p string) int {
	switch p {
	case PriorityCritical:
		return 2
	case PriorityStandard:
		return 1
	case PrioritySheddable:
		return 0
	}
	return -1
}

func (c *Config) validateAdmission(add func(string, string, ...any)) {
	if a := c.Router.Admission; a != nil {
		if a.Store != "" {
			u, err := url.Parse(a.Store)
			if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
				add("router.admission.store", "must be a redis:// or rediss:// URL with a host, got %q", a.Store)
			}
		}
		if a.StoreTimeout.Duration <= 0 {
			add("router.admission.storeTimeout", "must be positive, got %s", a.StoreTimeout.Duration)
		}
		if a.OnStoreError != StoreErrorLocal && a.OnStoreError != StoreErrorReject {
			add("router.admission.onStoreError", "must be %s or %s, got %q", StoreErrorLocal, StoreErrorReject, a.OnStoreError)
		}
		if a.LocalFraction <= 0 || a.LocalFraction > 1 {
			add("router.admission.localFraction", "must be in (0,1], got %v", a.LocalFraction)
		}
		if a.Unmeetable != UnmeetableServe && a.Unmeetable != UnmeetableShed {
			add("router.admission.unmeetable", "must be %s or %s, got %q", UnmeetableServe, UnmeetableShed, a.Unmeetable)
		}
		q := a.Queue
		if q.MaxPerModel < 0 {
			add("router.admission.queue.maxPerModel", "must be positive, got %d", q.MaxPerModel)
		}
		if q.MaxWait.Duration <= 0 {
			add("router.admission.queue.maxWait", "must be positive, got %s", q.MaxWait.Duration)
		}
		if q.NoEndpointWait.Duration < 0 {
			add("router.admission.queue.noEndpointWait", "must not be negative, got %s", q.NoEndpointWait.Duration)
		}
		if q.EndpointConcurrency < 0 {
			add("router.admission.queue.endpointConcurrency", "must not be negative, got %d", q.EndpointConcurrency)
		}
		if q.EngineWaiting < -1 {
			add("router.admission.queue.engineWaiting", "must be positive or -1, got %d", q.EngineWaiting)
		}
		if q.KVUtilization <= 0 || q.KVUtilization > 1 {
			add("router.admission.queue.kvUtilization", "must be in (0,1], got %v", q.KVUtilization)
		}
		if q.PrefillTokens < -1 {
			add("router.admission.queue.prefillTokens", "must be positive or -1, got %d", q.PrefillTokens)
		}
		if q.Reserve < 0 || q.Reserve > 0.5 {
			add("router.admission.queue.reserve", "must be in [0,0.5], got %v", q.Reserve)
		}
	}
	if a := c.Auth; a != nil {
		if a.ReloadInterval.Duration <= 0 {
			add("auth.reloadInterval", "must be positive, got %s", a.ReloadInterval.Duration)
		}
		if j := a.JWT; j != nil {
			if j.JWKS == "" {
				add("auth.jwt.jwks", "required: a file path or an http(s) URL")
			}
			if j.Leeway.Duration < 0 || j.Leeway.Duration > MaxJWTLeeway {
				add("auth.jwt.leeway", "must be between 0 and %s, got %s", MaxJWTLeeway, j.Leeway.Duration)
			}
			if j.RefreshInterval.Duration <= 0 {
				add("auth.jwt.refreshInterval", "must be positive, got %s", j.RefreshInterval.Duration)
			}
		}
	}
	names := map[string]int{}
	hashes := map[string]string{}
	for i, t := range c.Tenants {
		path := fmt.Sprintf("tenants[%d]", i)
		if t.Name == "" {
			add(path+".name", "required")
		} else if j, dup := names[t.Name]; dup {
			add(path+".name", "%q is also the name of tenants[%d]", t.Name, j)
		}
		names[t.Name] = i
		for k, key := range t.APIKeys {
			kp := fmt.Sprintf("%s.apiKeys[%d].sha256", path, k)
			b, err := hex.DecodeString(key.SHA256)
			if err != nil || len(b) != 32 {
				add(kp, "must be 64 hex digits (the SHA-256 of the key)")
				continue
			}
			if other, dup := hashes[key.SHA256]; dup {
				add(kp, "the same key is also a key of tenant %q", other)
			}
			hashes[key.SHA256] = t.Name
		}
		if kf := t.KeysFrom; kf != nil {
			switch {
			case kf.File == "" && kf.Secret == nil:
				add(path+".keysFrom", "give file or secret")
			case kf.File != "" && kf.Secret != nil:
				add(path+".keysFrom", "give file or secret, not both")
			case kf.Secret != nil && (kf.Secret.Name == "" || kf.Secret.Namespace == ""):
				add(path+".keysFrom.secret", "namespace and name are required")
			}
		}
		if t.Weight < 0 {
			add(path+".weight", "must be positive, got %v", t.Weight)
		}
		if PriorityRank(t.Priority) < 0 {
			add(path+".priority", "must be critical, standard or sheddable, got %q", t.Priority)
		}
		if PriorityRank(t.MaxPriority) < 0 {
			add(path+".maxPriority", "must be critical, standard or sheddable, got %q", t.MaxPriority)
		}
		checkLimits(path+".limits", t.Limits, add)
		for _, m := range sortedKeys(t.ModelLimits) {
			l := t.ModelLimits[m]
			checkLimits(path+".modelLimits."+m, &l, add)
		}
	}
}

func checkLimits(path string, l *LimitsSpec, add func(string, string, ...any)) {
	if l == nil {
		return
	}
	if l.RequestsPerMinute < 0 {
		add(path+".requestsPerMinute", "must not be negative, got %d", l.RequestsPerMinute)
	}
	if l.TokensPerMinute < 0 {
		add(path+".tokensPerMinute", "must not be negative, got %d", l.TokensPerMinute)
	}
	if l.Concurrency < 0 {
		add(path+".concurrency", "must not be negative, got %d", l.Concurrency)
	}
}
