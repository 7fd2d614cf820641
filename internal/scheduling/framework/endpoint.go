package framework

import "time"

// Role is the part an endpoint plays in serving a model.
type Role string

// Endpoint roles. An engine that prefills and decodes its own requests is
// RoleBoth.
const (
	RoleBoth    Role = "both"
	RolePrefill Role = "prefill"
	RoleDecode  Role = "decode"
)

// EndpointMetadata is what discovery knows about an endpoint. It does not
// change while the endpoint exists; a change of metadata is a new endpoint.
type EndpointMetadata struct {
	// Name identifies the endpoint uniquely within a router.
	Name string
	// Address is the engine's base URL, e.g. "http://10.0.0.7:8000".
	Address string
	// Model is the base model the engine serves.
	Model string
	// Role is prefill, decode or both.
	Role Role
	// Labels carry topology and grouping (zone, group, rack, ...).
	Labels map[string]string
	// Adapters are LoRA adapters known to be loadable on this endpoint.
	Adapters []string
}

// Metrics is a snapshot of an engine's own counters, as last scraped. A
// snapshot is never modified after it is published; scrapers publish a new one.
type Metrics struct {
	// UpdateTime is when the snapshot was taken; zero if never scraped.
	UpdateTime time.Time
	// RunningRequests is vllm:num_requests_running.
	RunningRequests int
	// WaitingRequests is vllm:num_requests_waiting.
	WaitingRequests int
	// KVCacheUsage is vllm:kv_cache_usage_perc, in [0,1].
	KVCacheUsage float64
	// BlockSize and NumBlocks come from vllm:cache_config_info; zero if unknown.
	BlockSize int
	NumBlocks int
	// PrefixCacheQueries and PrefixCacheHits are the engine's counters in tokens.
	PrefixCacheQueries float64
	PrefixCacheHits    float64
	// MaxLoRA, RunningAdapters and WaitingAdapters come from
	// vllm:lora_requests_info (the newest series).
	MaxLoRA         int
	RunningAdapters []string
	WaitingAdapters []string
}

// Endpoint is the view of one engine that plugins read. Implementations are
// safe for concurrent use and cheap to call on every scheduling cycle.
type Endpoint interface {
	// Metadata never returns nil and never changes.
	Metadata() *EndpointMetadata
	// Metrics returns the latest scraped snapshot; never nil (an empty
	// snapshot before the first scrape).
	Metrics() *Metrics
	// InFlight returns the router's own count of requests it has sent to the
	// endpoint that have not finished, and their prompt plus max output tokens.
	// Unlike Metrics it is exact at every instant.
	InFlight() (requests, tokens int64)
}
