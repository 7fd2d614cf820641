package v1alpha1

import (
	"encoding/json"
	"fmt"
	"net"
	"strconv"
	"time"
)

// APIVersion and Kind identify the document.
const (
	APIVersion = "config.halyard.dev/v1alpha1"
	Kind       = "Config"
)

// Config is the whole configuration document.
type Config struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Router configures the data plane.
	Router RouterConfig `json:"router"`
	// Endpoints is static discovery: engines the router sends traffic to.
	Endpoints []EndpointSpec `json:"endpoints,omitempty"`
	// Routes map public model names to pools of endpoints.
	Routes []RouteSpec `json:"routes,omitempty"`
	// Pools configure pools beyond their membership, such as
	// prefill/decode disaggregation. A pool needs no entry here.
	Pools []PoolSpec `json:"pools,omitempty"`
	// Engines are simulated engines that `halyard up` starts and adds as
	// endpoints. The router ignores this block.
	Engines []EngineSpec `json:"engines,omitempty"`
	// Models say how the router tokenises each engine model's prompts, for
	// precise prefix routing from KV events.
	Models []ModelSpec `json:"models,omitempty"`
	// Auth authenticates callers; absent means none (tenant "anonymous").
	Auth *AuthConfig `json:"auth,omitempty"`
	// Tenants are the callers, with their keys, models, budgets and
	// fair-queue weights.
	Tenants []TenantSpec `json:"tenants,omitempty"`
	// Tracing sends OpenTelemetry traces of the router (and, under
	// `halyard up`, of the simulated engines) over OTLP (HTTP or gRPC). Absent:
	// off unless the standard OTEL_* environment variables turn it on.
	Tracing *TracingConfig `json:"tracing,omitempty"`
}

// TracingConfig configures OpenTelemetry tracing (docs/observability.md).
// The OTEL_* environment variables fill what is not set here.
type TracingConfig struct {
	// Enabled turns tracing on.
	Enabled bool `json:"enabled,omitempty"`
	// Endpoint is the OTLP collector URL, e.g. http://127.0.0.1:4318 for
	// OTLP/HTTP (traces go to /v1/traces) or http://127.0.0.1:4317 for
	// gRPC (https: TLS). Default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
	// OTEL_EXPORTER_OTLP_ENDPOINT.
	Endpoint string `json:"endpoint,omitempty"`
	// Protocol is "http/protobuf" or "grpc". Default:
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, else
	// http/protobuf.
	Protocol string `json:"protocol,omitempty"`
	// SampleRatio is the share of new traces sampled, 0 to 1; a request
	// whose traceparent is sampled is always traced (parent-based).
	// Default: OTEL_TRACES_SAMPLER(_ARG), else 1.
	SampleRatio *float64 `json:"sampleRatio,omitempty"`
}

// RouterConfig configures the router process.
type RouterConfig struct {
	// Listen is the address to serve on. Default 127.0.0.1:8080.
	Listen string `json:"listen,omitempty"`
	// AdminListen is the address of the admin listener: /metrics,
	// /debug/route, pprof when debug.pprof is on, and whatever else is
	// mounted there (the console). These are never on the public listener.
	// Default: 127.0.0.1 and the public port plus one (127.0.0.1:8081 for
	// the default listen; 127.0.0.1:0 when the public port is 0); "off"
	// serves no admin listener. See AdminAddress.
	AdminListen string `json:"adminListen,omitempty"`
	// ForwardAuthorization sends the client's Authorization header on to
	// the engines. Off by default: the router's clients' credentials are
	// not the engines' business.
	ForwardAuthorization bool `json:"forwardAuthorization,omitempty"`
	// Limits bound what clients can make the router hold: connections,
	// buffered bytes, slow and stalled clients.
	Limits LimitsConfig `json:"limits,omitempty"`
	// ScrapeInterval is how often engine /metrics are scraped. Default 100ms.
	ScrapeInterval Duration `json:"scrapeInterval,omitempty"`
	// MaxBodyBytes caps request bodies; larger ones get 413. Default 16 MiB.
	MaxBodyBytes int64 `json:"maxBodyBytes,omitempty"`
	// MaxAttempts bounds the tries of one request on different endpoints
	// before any byte reached the client. Default 3.
	MaxAttempts int `json:"maxAttempts,omitempty"`
	// SessionHeader names the header that carries a session key for session
	// affinity; the body's "user" field is used when the header is absent.
	// Default x-session-id.
	SessionHeader string `json:"sessionHeader,omitempty"`
	// Timeouts bound the router's conversations with engines.
	Timeouts TimeoutsConfig `json:"timeouts,omitempty"`
	// Health decides when an endpoint is taken out of rotation and when it
	// comes back.
	Health HealthConfig `json:"health,omitempty"`
	// RetryOnTimeout also retries, on another endpoint, a request that timed
	// out after the engine may have admitted it (timeouts.firstByte, or
	// timeouts.streamIdle before anything reached the client). Off by
	// default: such a retry can run the generation twice and adds load to a
	// fleet that is already slow. Connect and responseHeader timeouts are
	// always retried.
	RetryOnTimeout bool `json:"retryOnTimeout,omitempty"`
	// DefaultOutputTokens is the output length the router assumes, for its
	// in-flight token accounting, when a request sets neither max_tokens nor
	// max_completion_tokens. Default 256.
	DefaultOutputTokens int `json:"defaultOutputTokens,omitempty"`
	// Debug controls what the router reveals about its decisions.
	Debug DebugConfig `json:"debug,omitempty"`
	// Profiles are the scheduling profiles by name. A "default" profile is
	// provided when absent.
	Profiles map[string]ProfileSpec `json:"profiles,omitempty"`
	// PrefixIndex tunes precise prefix routing from KV events and the
	// prefix-hit drift alarm; absent means the defaults.
	PrefixIndex *PrefixIndexConfig `json:"prefixIndex,omitempty"`
	// Admission turns on budgets and the fair queue; absent means requests
	// are admitted as they come (authentication still follows auth).
	Admission *AdmissionConfig `json:"admission,omitempty"`
}

// TimeoutsConfig bounds the router's conversations with clients and
// engines. Zero values take the defaults; there is no way to ask for "no
// timeout" except a very large value. docs/router.md explains which are
// retried.
type TimeoutsConfig struct {
	// Connect bounds dialling an engine. Default 2s.
	Connect Duration `json:"connect,omitempty"`
	// ResponseHeader bounds the wait for a streamed response's headers after
	// the request was sent. vLLM and SGLang send them as soon as they accept
	// a stream, before queueing or prefill, so missing headers mean a hung
	// engine. A non-streamed answer brings its headers with it: FirstByte
	// bounds that. Default 30s.
	ResponseHeader Duration `json:"responseHeader,omitempty"`
	// FirstByte bounds the wait from sending a request to the first byte of
	// its answer: a stream's first chunk (queueing plus prefill) or a
	// non-streamed answer (the whole generation). Default 300s.
	FirstByte Duration `json:"firstByte,omitempty"`
	// StreamIdle bounds the silence after the first byte: between two chunks
	// of a stream (the stream ends with an error event), or inside a
	// non-streamed body (504). Default 60s.
	StreamIdle Duration `json:"streamIdle,omitempty"`
	// RequestBody bounds reading a client's request body. Default 60s.
	RequestBody Duration `json:"requestBody,omitempty"`
	// Scrape bounds one /metrics scrape and one health probe. Default 1s.
	Scrape Duration `json:"scrape,omitempty"`
}

// DebugConfig controls what the router reveals about its decisions on its
// public port. /debug/route is on the admin listener whatever these say.
type DebugConfig struct {
	// Explain honours the x-halyard-explain request header on the public
	// listener (answered with x-halyard-route). Unset means off; `halyard
	// up` turns it on.
	Explain *bool `json:"explain,omitempty"`
	// EndpointHeader sets X-Halyard-Endpoint, the endpoint that served (a
	// pod name on Kubernetes), on every proxied response. Unset means off;
	// `halyard up` turns it on.
	EndpointHeader *bool `json:"endpointHeader,omitempty"`
	// Pprof serves Go's /debug/pprof/ on the admin listener. Default off.
	Pprof bool `json:"pprof,omitempty"`
}

// ExplainEnabled reports whether explanations are on (unset means off).
func (d DebugConfig) ExplainEnabled() bool { return d.Explain != nil && *d.Explain }

// EndpointHeaderEnabled reports whether X-Halyard-Endpoint is set (unset
// means off).
func (d DebugConfig) EndpointHeaderEnabled() bool {
	return d.EndpointHeader != nil && *d.EndpointHeader
}

// LimitsConfig bounds what clients can make the router hold. docs/router.md
// ("Limits and timeouts") says what a client sees when each trips.
type LimitsConfig struct {
	// MaxConnections caps the client connections open at once; beyond it
	// new connections wait in the kernel's accept queue. Default 10000.
	MaxConnections int `json:"maxConnections,omitempty"`
	// MaxIdleConnections caps the idle keep-alive client connections; the
	// oldest idle ones are closed beyond it. Default 1000.
	MaxIdleConnections int `json:"maxIdleConnections,omitempty"`
	// IdleTimeout closes a keep-alive client connection idle this long.
	// Default 30s.
	IdleTimeout Duration `json:"idleTimeout,omitempty"`
	// BufferBytes is the budget of request and response bytes the router
	// buffers at once (bodies being read, non-streamed answers). A request
	// whose declared body does not fit gets 503 with Retry-After before its
	// body is read. Default: a quarter of the cgroup's memory limit, or of
	// the machine's memory without one (at least 64 MiB).
	BufferBytes int64 `json:"bufferBytes,omitempty"`
	// MinBodyRate is the slowest a request body may arrive, in bytes per
	// second, after its first second (a trickled body); slower gets 408.
	// Default 1024; -1 turns it off (timeouts.requestBody still bounds it).
	MinBodyRate int64 `json:"minBodyRate,omitempty"`
	// WriteStall bounds one write to a client: a stream whose client reads
	// nothing for this long is ended and its engine request cancelled.
	// Default 30s.
	WriteStall Duration `json:"writeStall,omitempty"`
}

// HealthConfig sets how endpoint health is tracked.
type HealthConfig struct {
	// FailureThreshold is the number of consecutive failed checks (a health
	// probe that is not 200, a failed scrape) or connection errors that take
	// an endpoint out. Default 3.
	FailureThreshold int `json:"failureThreshold,omitempty"`
	// SuccessThreshold is the number of consecutive successful checks that
	// bring an unhealthy endpoint back. Default 2.
	SuccessThreshold int `json:"successThreshold,omitempty"`
	// Path is probed with GET before every scrape; anything but 200 is a
	// failed check (vLLM and SGLang answer 200 once ready). Default
	// /health; "none" turns probing off, leaving the scrape as the check.
	Path string `json:"path,omitempty"`
	// Outlier takes out, for a while, an endpoint whose engine answers
	// server errors in a row while its health probe still passes.
	Outlier OutlierConfig `json:"outlier,omitempty"`
}

// OutlierConfig is passive outlier ejection (as Envoy's consecutive_5xx).
type OutlierConfig struct {
	// Consecutive5xx is how many 5xx answers in a row eject an endpoint.
	// Default 5; -1 turns ejection off.
	Consecutive5xx int `json:"consecutive5xx,omitempty"`
	// EjectionTime is how long an ejected endpoint stays out of rotation.
	// Default 30s. When every candidate of a pool is ejected, they are all
	// used anyway.
	EjectionTime Duration `json:"ejectionTime,omitempty"`
}

// ProfileSpec is one scheduling profile: filters, weighted scorers, a picker.
type ProfileSpec struct {
	Filters []PluginSpec `json:"filters,omitempty"`
	Scorers []PluginSpec `json:"scorers,omitempty"`
	Picker  *PluginSpec  `json:"picker,omitempty"`
}

// PluginSpec names a plugin instance and its parameters.
type PluginSpec struct {
	// Type is the registered plugin type, e.g. "queue-depth".
	Type string `json:"type"`
	// Name distinguishes two instances of one type; defaults to Type.
	Name string `json:"name,omitempty"`
	// Weight multiplies a scorer's score. Scorers only; default 1.
	Weight *float64 `json:"weight,omitempty"`
	// Params are decoded strictly by the plugin's factory.
	Params json.RawMessage `json:"params,omitempty"`
}

// EndpointSpec is one statically configured engine.
// +kubebuilder:object:generate=true
type EndpointSpec struct {
	// Name must be unique; defaults to the URL's host:port.
	Name string `json:"name,omitempty"`
	// URL is the engine's base URL, e.g. http://127.0.0.1:8101.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (self.startsWith('http://') || self.startsWith('https://'))",message="url must be an http or https URL"
	URL string `json:"url"`
	// Model is the base model the engine serves.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Model string `json:"model"`
	// Pool groups endpoints that routes target; defaults to Model.
	Pool string `json:"pool,omitempty"`
	// Role is prefill, decode or both (default).
	Role string `json:"role,omitempty"`
	// Labels carry topology and grouping.
	Labels map[string]string `json:"labels,omitempty"`
	// Adapters are LoRA adapters the engine can serve.
	Adapters []string `json:"adapters,omitempty"`
	// KVEvents, when set, is where the engine publishes its KV-cache
	// events: the router follows them for precise prefix routing.
	KVEvents *KVEventsSpec `json:"kvEvents,omitempty"`
}

// RouteSpec maps one public model name to targets. The ModelRoute custom
// resource's spec embeds this type.
// +kubebuilder:object:generate=true
type RouteSpec struct {
	// Model is the public model name clients ask for.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Model string `json:"model"`
	// Adapter, when set, makes this a LoRA route: requests go to the
	// targets' base-model pools and ask the engine for this adapter.
	Adapter string `json:"adapter,omitempty"`
	// Profile names the scheduling profile: one of router.profiles or a
	// built-in preset (default, random, round-robin, least-request, load,
	// prefill, decode); default "default". The router checks the name.
	Profile string `json:"profile,omitempty"`
	// Rules are tried in order before Targets; the first whose header
	// matches all hold decides the targets.
	// +kubebuilder:validation:MaxItems=32
	Rules []RouteRule `json:"rules,omitempty"`
	// Targets split traffic by weight.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Targets []TargetSpec `json:"targets"`
	// Fallback is used when no endpoint of the chosen target can serve.
	// +kubebuilder:validation:MaxItems=32
	Fallback []TargetSpec `json:"fallback,omitempty"`
}

// RouteRule sends requests whose headers all match to its own targets.
// +kubebuilder:object:generate=true
type RouteRule struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Headers []HeaderMatch `json:"headers"`
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Targets []TargetSpec `json:"targets"`
}

// Header match types.
const (
	MatchExact             = "Exact"
	MatchRegularExpression = "RegularExpression"
)

// HeaderMatch matches one request header.
// +kubebuilder:object:generate=true
type HeaderMatch struct {
	// Name is the header name (case-insensitive).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Name string `json:"name"`
	// Value is the value to compare with.
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
	// Type is Exact (default) or RegularExpression.
	// +kubebuilder:validation:Enum=Exact;RegularExpression
	Type string `json:"type,omitempty"`
}

// TargetSpec is a weighted destination of a route.
// +kubebuilder:object:generate=true
type TargetSpec struct {
	// Pool names a pool of endpoints (EndpointSpec.Pool, or a ModelServing on
	// Kubernetes).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Pool string `json:"pool"`
	// Weight is the relative share of traffic; default 1.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	Weight *int32 `json:"weight,omitempty"`
	// Model overrides the model name sent to the engine; default the route's
	// adapter, or else the pool's model.
	Model string `json:"model,omitempty"`
}

// EngineSpec describes simulated engines that `halyard up` starts.
type EngineSpec struct {
	// Model is the served model name.
	Model string `json:"model"`
	// Pool for the endpoints; defaults to Model.
	Pool string `json:"pool,omitempty"`
	// Replicas is the number of engines; default 1.
	Replicas int `json:"replicas,omitempty"`
	// Profile names a simulator profile (h100-llama3-8b, a100-llama3-8b,
	// zero) or a YAML file path; default h100-llama3-8b.
	Profile string `json:"profile,omitempty"`
	// BasePort is the first engine's port on 127.0.0.1; the next replicas
	// take the following ports. 0 picks free ports.
	BasePort int `json:"basePort,omitempty"`
	// Role is prefill, decode or both (default).
	Role string `json:"role,omitempty"`
	// Labels are given to the endpoints.
	Labels map[string]string `json:"labels,omitempty"`
	// Adapters are LoRA adapters the engines serve from the start.
	Adapters []string `json:"adapters,omitempty"`
	// Args are extra `halyard sim` flags, e.g. ["--max-num-seqs=64"].
	Args []string `json:"args,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("100ms").
type Duration struct{ time.Duration }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string such as "250ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"100ms\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// AdminAddress is the address the admin listener serves on, "" when it is
// off: AdminListen when set, else 127.0.0.1 with the public listener's
// port plus one (port 0 when the public port is 0, so that tests and
// several local routers never collide).
func (r RouterConfig) AdminAddress() string {
	switch r.AdminListen {
	case "off":
		return ""
	case "":
	default:
		return r.AdminListen
	}
	port := 0
	if _, p, err := net.SplitHostPort(r.Listen); err == nil {
		if n, err := strconv.Atoi(p); err == nil && n > 0 && n < 65535 {
			port = n + 1
		}
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}
