package framework

import (
	"context"
	"log/slog"
	"time"
)

// Plugin is the part every scheduling plugin shares.
type Plugin interface {
	// TypedName returns the plugin's registered type and its instance name.
	TypedName() TypedName
}

// TypedName names a plugin instance: its registered type ("queue-depth") and
// the name given in the profile (defaults to the type).
type TypedName struct {
	Type string
	Name string
}

func (t TypedName) String() string {
	if t.Name == "" || t.Name == t.Type {
		return t.Type
	}
	return t.Type + "/" + t.Name
}

// Filter removes endpoints that must not serve the request. It returns the
// survivors, in their original order; it may reuse the input slice's storage.
type Filter interface {
	Plugin
	Filter(ctx context.Context, state *CycleState, req *Request, endpoints []Endpoint) []Endpoint
}

// Scorer rates endpoints for a request. It writes one score in [0,1] per
// endpoint into scores (len(scores) == len(endpoints)); higher is better.
// Scores outside [0,1] are clamped by the scheduler.
type Scorer interface {
	Plugin
	Score(ctx context.Context, state *CycleState, req *Request, endpoints []Endpoint, scores []float64)
}

// ScoredEndpoint is an endpoint with its weighted total score.
type ScoredEndpoint struct {
	Endpoint Endpoint
	Score    float64
}

// Picker chooses the endpoint(s) to use from the scored candidates. It
// returns them best first in a slice of its own (the scheduler reuses the
// input's storage); an empty result means no endpoint can serve.
type Picker interface {
	Plugin
	Pick(ctx context.Context, state *CycleState, req *Request, scored []ScoredEndpoint) []Endpoint
}

// PreRequest is implemented by plugins that must learn which endpoint was
// picked before the request is sent (for example to remember the prefix
// blocks now cached there).
type PreRequest interface {
	Plugin
	PreRequest(ctx context.Context, state *CycleState, req *Request, picked Endpoint)
}

// ResponseComplete is implemented by plugins that want to know when a request
// has finished on an endpoint.
type ResponseComplete interface {
	Plugin
	ResponseComplete(ctx context.Context, req *Request, endpoint Endpoint, outcome Outcome)
}

// FirstToken is implemented by plugins that want to know when the first
// token (or, for a response that is not streamed, its first byte) of a
// request came back from an endpoint: its prefill is over and it decodes.
// The host calls it at most once per request and endpoint, before
// ResponseComplete; a request may end without it.
type FirstToken interface {
	Plugin
	FirstToken(ctx context.Context, req *Request, endpoint Endpoint)
}

// Outcome summarises how a request ended on an endpoint.
type Outcome struct {
	// Err is nil on success.
	Err error
	// PromptTokens, CachedTokens and CompletionTokens come from the engine's
	// usage report when it sent one, else zero.
	PromptTokens     int
	CachedTokens     int
	CompletionTokens int
}

// Handle gives plugins what they may need from their host at construction.
type Handle interface {
	// Now returns the current time of the host's clock (virtual in
	// simulations).
	Now() time.Time
	// Logger returns the logger for the plugin.
	Logger() *slog.Logger
}
