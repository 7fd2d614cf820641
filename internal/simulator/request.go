package simulator

import (
	"errors"
	"time"

	"github.com/halyard-dev/halyard/internal/simulator/kvcache"
)

// Errors that Submit and the adapter methods return. Callers branch on them
// with errors.Is; the HTTP face maps them to status codes.
var (
	// ErrInvalidRequest: the request is malformed (empty prompt, bad
	// max tokens, duplicate id, no sink).
	ErrInvalidRequest = errors.New("invalid request")
	// ErrContextLength: prompt plus max tokens exceed the model's context,
	// or the prompt needs more KV blocks than the engine has.
	ErrContextLength = errors.New("context length exceeded")
	// ErrUnknownAdapter: the request or unload names an adapter that is
	// not loaded.
	ErrUnknownAdapter = errors.New("unknown LoRA adapter")
	// ErrAdapterLoaded: the adapter is already loaded.
	ErrAdapterLoaded = errors.New("LoRA adapter already loaded")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("engine closed")
)

// FinishReason tells why a request ended, with vLLM's words.
type FinishReason string

const (
	// FinishLength: MaxTokens were generated.
	FinishLength FinishReason = "length"
	// FinishStop: an end-of-sequence token was drawn (Config.EOSProbability).
	FinishStop FinishReason = "stop"
	// FinishAbort: the request was aborted (client gone, engine closed).
	FinishAbort FinishReason = "abort"
)

// Request is one generation request given as token ids.
type Request struct {
	// ID must be unique among the engine's live requests.
	ID string
	// Prompt is the prompt's token ids, at least one. Submit copies it,
	// so the caller may reuse the slice.
	Prompt []uint32
	// MaxTokens is the number of tokens to generate, at least 1.
	MaxTokens int
	// MinTokens is the number of tokens generated before an
	// end-of-sequence token may be drawn.
	MinTokens int
	// IgnoreEOS never ends the request before MaxTokens.
	IgnoreEOS bool
	// Seed, when non-zero, selects the output tokens together with
	// Config.Seed; zero derives them from the prompt.
	Seed uint64
	// LoRA names a loaded adapter, or "" for the base model.
	LoRA string
	// Sink receives the request's tokens and its end. Required.
	Sink Sink
	// KeepBlocks keeps the request's KV blocks allocated after it finishes
	// (a prefill engine keeping KV for a remote decode engine). Result.Held
	// names them; Engine.Release frees them.
	KeepBlocks bool
	// Remote, when set, says that KV for the first Remote.Tokens prompt
	// tokens arrives from another engine instead of being computed here.
	Remote *RemoteKV
	// StopAfter, when set, is asked after each generated token (id, and
	// its 0-based index) once MinTokens are out; true ends the request
	// with FinishStop after that token (a stop string, as vLLM checks
	// them). It is called on the engine's step, with the engine's lock
	// held: it must be quick and must not call the engine.
	StopAfter func(id uint32, index int) bool
}

// RemoteKV describes prompt KV transferred from another engine (the decode
// side of prefill/decode disaggregation). At admission the engine allocates
// the prompt's blocks, waits Tokens × PerToken (only for tokens not already
// in its own prefix cache), then decodes as if it had computed them.
type RemoteKV struct {
	Tokens   int
	PerToken time.Duration
}

// Sink receives the output of one request. The engine calls a sink's methods
// one at a time, in order, never with its lock held, from the goroutine that
// drives the clock (a timer goroutine on the real clock, the loop's goroutine
// on a virtual clock). A sink may call Submit or Abort. It must not block for
// long: on the real clock every request of the engine waits for it.
type Sink interface {
	// Token delivers output token number index (from 0), produced at the
	// engine clock's time at.
	Token(id uint32, index int, at time.Time)
	// Done is the last call, once per accepted request.
	Done(r Result)
}

// SinkFuncs adapts two functions to Sink; nil functions are skipped.
type SinkFuncs struct {
	OnToken func(id uint32, index int, at time.Time)
	OnDone  func(r Result)
}

// Token calls OnToken.
func (s SinkFuncs) Token(id uint32, index int, at time.Time) {
	if s.OnToken != nil {
		s.OnToken(id, index, at)
	}
}

// Done calls OnDone.
func (s SinkFuncs) Done(r Result) {
	if s.OnDone != nil {
		s.OnDone(r)
	}
}

var _ Sink = SinkFuncs{}

// Result summarises a finished request. Times are on the engine's clock.
type Result struct {
	ID     string
	Reason FinishReason
	// PromptTokens is the prompt length.
	PromptTokens int
	// CachedTokens is the prefix-cache hit of the first admission, in
	// tokens (usage.prompt_tokens_details.cached_tokens).
	CachedTokens int
	// OutputTokens is the number of tokens generated.
	OutputTokens int
	// Preemptions counts how often the request was preempted.
	Preemptions int
	// Arrival is when Submit accepted the request; Scheduled when it was
	// first admitted to a batch (zero if never); FirstToken when its first
	// token was produced (zero if none); Finished when it ended.
	Arrival, Scheduled, FirstToken, Finished time.Time
	// Held names the blocks kept with Request.KeepBlocks; nil otherwise.
	Held *HeldBlocks
}

// TTFT is FirstToken − Arrival, or 0 when no token was produced.
func (r Result) TTFT() time.Duration {
	if r.FirstToken.IsZero() {
		return 0
	}
	return r.FirstToken.Sub(r.Arrival)
}

// E2E is Finished − Arrival.
func (r Result) E2E() time.Duration { return r.Finished.Sub(r.Arrival) }

// QueueTime is Scheduled − Arrival, or E2E when never scheduled.
func (r Result) QueueTime() time.Duration {
	if r.Scheduled.IsZero() {
		return r.E2E()
	}
	return r.Scheduled.Sub(r.Arrival)
}

// HeldBlocks are KV blocks that a finished request left allocated.
type HeldBlocks struct {
	// Blocks are the block ids, in sequence order.
	Blocks []kvcache.BlockID
	// Tokens is the number of tokens whose KV the blocks hold.
	Tokens int
}
