package vllmapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi/wire"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// Defaults of Options.
const (
	// DefaultMaxTokens is the completions default of vLLM and OpenAI's
	// legacy API.
	DefaultMaxTokens = 16
	// DefaultChatMaxTokens is the simulator's chat default. vLLM defaults
	// to the rest of the context window, which makes runaway generations
	// in tests; 256 is a typical chat answer. Documented in
	// docs/simulator.md.
	DefaultChatMaxTokens = 256
	// DefaultMaxBodyBytes caps request bodies.
	DefaultMaxBodyBytes = 64 << 20
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Tokenizer turns prompts into token ids; default tokenizer.Pseudo{}.
	Tokenizer tokenizer.Tokenizer
	// VocabSize bounds token ids in prompts; default
	// tokenizer.DefaultVocabSize.
	VocabSize int
	// ReadyDelay keeps /health at 503 (and generation requests refused)
	// for this long after New: a slow engine start.
	ReadyDelay time.Duration
	// Faults are injected from the start.
	Faults Faults
	// FaultSeed seeds the fault draws.
	FaultSeed uint64
	// DefaultMaxTokens and DefaultChatMaxTokens apply when a request names
	// no max tokens; defaults DefaultMaxTokens and DefaultChatMaxTokens.
	DefaultMaxTokens, DefaultChatMaxTokens int
	// MaxBodyBytes caps request bodies (413 beyond); default
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// LoRAPaths are the paths of adapters loaded at start, reported by
	// /v1/models as their root.
	LoRAPaths map[string]string
	// EnableLoRA is vLLM's --enable-lora: it exposes
	// vllm:lora_requests_info. Adapters loaded at start or at run time
	// enable LoRA too.
	EnableLoRA bool
	// OnResult, when set, is called with the engine's result of every
	// finished generation request (not aborted ones), on the request's
	// handler goroutine before its response ends, so concurrently for
	// different requests. Times are on the engine clock.
	OnResult func(simulator.Result)
	// TracerProvider, when set, emits the spans of each finished request
	// (engine.request, engine.queue, engine.prefill, engine.decode) in the
	// trace its traceparent header names; nil: none.
	TracerProvider trace.TracerProvider
	// Logger receives request logs; nil discards them.
	Logger *slog.Logger
	// Role is the engine's disaggregation role: RoleBoth (default),
	// RolePrefill or RoleDecode.
	Role string
	// PD configures the prefill and decode roles.
	PD PDSpec

	// kv is the engine's KV-event publisher (Spec.Build), closed with the
	// server; its metrics join /metrics.
	kv *kvPublisher
}

// Server serves one simulated engine over vLLM's HTTP API.
type Server struct {
	engine  *simulator.Engine
	opts    Options
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *metrics
	faults  faultState
	readyAt time.Time
	seq     atomic.Uint64
	// inflight counts generation requests being answered.
	inflight sync.WaitGroup
	kv       *kvPublisher
	pd       *pdState

	mu        sync.Mutex
	loraPaths map[string]string
	// loraOn says LoRA is enabled (Options.EnableLoRA, or an adapter was
	// ever loaded).
	loraOn atomic.Bool
	// allow maps each served path to its methods (for 405 answers).
	allow map[string][]string
	// tracer is nil when tracing is off.
	tracer trace.Tracer
}

// New returns a server for eng.
func New(eng *simulator.Engine, opts Options) (*Server, error) {
	if eng == nil {
		return nil, errors.New("vllmapi: nil engine")
	}
	if err := opts.Faults.Validate(); err != nil {
		return nil, fmt.Errorf("faults: %w", err)
	}
	if err := opts.PD.Validate(opts.Role); err != nil {
		return nil, err
	}
	if opts.Tokenizer == nil {
		opts.Tokenizer = tokenizer.Pseudo{}
	}
	var tracer trace.Tracer
	if opts.TracerProvider != nil {
		tracer = opts.TracerProvider.Tracer(TracerName)
	}
	if opts.VocabSize <= 0 {
		opts.VocabSize = tokenizer.DefaultVocabSize
	}
	if opts.DefaultMaxTokens <= 0 {
		opts.DefaultMaxTokens = DefaultMaxTokens
	}
	if opts.DefaultChatMaxTokens <= 0 {
		opts.DefaultChatMaxTokens = DefaultChatMaxTokens
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		engine:    eng,
		opts:      opts,
		tracer:    tracer,
		log:       log,
		mux:       http.NewServeMux(),
		readyAt:   eng.Clock().Now().Add(opts.ReadyDelay),
		loraPaths: map[string]string{},
		allow:     map[string][]string{},
		kv:        opts.kv,
	}
	s.metrics = newMetrics(eng, s.loraOn.Load)
	s.loraOn.Store(opts.EnableLoRA || len(eng.Config().LoRAs) > 0)
	for k, v := range opts.LoRAPaths {
		s.loraPaths[k] = v
	}
	s.pd = newPDState(opts.Role, opts.PD, eng, log)
	if s.pd.role != RoleBoth {
		s.pd.m.register(s.metrics.registry)
	}
	s.faults.rng = rand.New(rand.NewPCG(opts.FaultSeed, 0x9e3779b97f4a7c15))
	s.applyFaults(opts.Faults)

	s.handle("POST /v1/completions", s.handleGenerate(false))
	s.handle("POST /v1/chat/completions", s.handleGenerate(true))
	s.handle("GET /v1/models", http.HandlerFunc(s.handleModels))
	s.handle("GET /health", http.HandlerFunc(s.handleHealth))
	s.handle("GET /metrics", promhttp.HandlerFor(s.gatherer(), promhttp.HandlerOpts{}))
	s.handle("POST /v1/load_lora_adapter", http.HandlerFunc(s.handleLoadLoRA))
	s.handle("POST /v1/unload_lora_adapter", http.HandlerFunc(s.handleUnloadLoRA))
	s.handle("POST /tokenize", http.HandlerFunc(s.handleTokenize))
	s.handle("POST /detokenize", http.HandlerFunc(s.handleDetokenize))
	s.handle("POST /reset_prefix_cache", http.HandlerFunc(s.handleResetPrefixCache))
	s.handle("GET /version", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": "halyard-sim"})
	}))
	s.handle("GET /admin/faults", http.HandlerFunc(s.handleFaults))
	s.handle("POST /admin/faults", http.HandlerFunc(s.handleFaults))
	s.handle("GET /admin/pd", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.pd.status()) }))
	s.mux.HandleFunc("/", s.handleUnrouted)
	return s, nil
}

// handle registers h for pattern ("METHOD /path") and notes the method
// for the path's 405 answer; GET implies HEAD, as in FastAPI.
func (s *Server) handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	method, path, _ := strings.Cut(pattern, " ")
	s.allow[path] = append(s.allow[path], method)
	if method == http.MethodGet {
		s.allow[path] = append(s.allow[path], http.MethodHead)
	}
	sort.Strings(s.allow[path])
}

// handleUnrouted answers what no route matched as vLLM's FastAPI app does:
// 405 with an Allow header for a known path, 404 otherwise.
func (s *Server) handleUnrouted(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if methods, ok := s.allow[r.URL.Path]; ok {
		w.Header().Set("Allow", strings.Join(methods, ", "))
		w.WriteHeader(http.StatusMethodNotAllowed)
		_, _ = io.WriteString(w, `{"detail":"Method Not Allowed"}`)
		return
	}
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, `{"detail":"Not Found"}`)
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// gatherer is the registry /metrics serves: the engine's vLLM metrics,
// and the KV-event publisher's when there is one.
func (s *Server) gatherer() prometheus.Gatherer {
	if s.kv == nil {
		return s.metrics.registry
	}
	return prometheus.Gatherers{s.metrics.registry, s.kv.metrics}
}

// close closes the engine, then the KV-event publisher (flushing the
// engine's last events).
func (s *Server) close() {
	s.engine.Close()
	s.kv.close()
}

// Engine returns the engine behind the server.
func (s *Server) Engine() *simulator.Engine { return s.engine }

// Faults returns the faults in force.
func (s *Server) Faults() Faults { return s.faults.get() }

// SetFaults replaces the faults in force.
func (s *Server) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	s.applyFaults(f)
	return nil
}

// waitIdle waits until no generation request is in flight, or d passes.
func (s *Server) waitIdle(d time.Duration) {
	done := make(chan struct{})
	go func() {
		s.inflight.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

func (s *Server) ready() bool {
	return !s.faults.get().Unhealthy && !s.engine.Clock().Now().Before(s.readyAt)
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if !s.ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *wire.Error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, wire.TooLarge(mbe.Limit)
		}
		return nil, wire.BadRequest("", "read body: %v", err)
	}
	return body, nil
}

// resolveModel maps a request's model name to an adapter ("" for the base
// model), or a 404 as vLLM gives.
func (s *Server) resolveModel(name string) (string, *wire.Error) {
	if name == s.engine.Config().Model {
		return "", nil
	}
	if s.engine.HasAdapter(name) {
		return name, nil
	}
	return "", wire.NotFound("model", "The model `%s` does not exist.", name)
}

func (s *Server) handleGenerate(chat bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Done()
		if !s.ready() {
			writeError(w, wire.Unavailable("the engine is not ready"))
			return
		}
		body, aerr := s.readBody(w, r)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		capa := s.engine.Config().Capacity
		p, aerr := wire.ParseGeneration(body, chat, s.opts.Tokenizer, wire.Limits{
			MaxModelLen: capa.MaxModelLen, VocabSize: s.opts.VocabSize,
			DefaultMaxTokens: s.opts.DefaultMaxTokens, DefaultChatMaxTokens: s.opts.DefaultChatMaxTokens,
		})
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		lora, aerr := s.resolveModel(p.Model)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		fail, crashAfter := s.faults.draw()
		if fail {
			writeError(w, wire.Internal("injected fault: internal server error"))
			return
		}
		action, aerr := s.pd.classify(p)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		prefix := "cmpl-"
		if chat {
			prefix = "chatcmpl-"
		}
		// The engine's id is unique; the response's id follows vLLM, which
		// takes a client's X-Request-Id when there is one.
		id := prefix + strconv.FormatUint(s.seq.Add(1), 10)
		respID := id
		if xid := r.Header.Get("X-Request-Id"); xid != "" {
			respID = prefix + xid
		}
		var remote *simulator.RemoteKV
		switch action {
		case pdPullNixl, pdPullRoom:
			tokens, aerr := s.pd.pull(r.Context(), action, p, lora, r.Header.Get("X-Request-Id"))
			if aerr != nil {
				writeError(w, aerr)
				return
			}
			remote = &simulator.RemoteKV{Tokens: tokens, PerToken: s.pd.spec.TransferPerToken}
		case pdKeepRoom:
			p.MaxTokens = 1 // an SGLang prefill engine answers with its first token
		}
		sink := newRequestSink()
		var stop *stopMatcher
		var stopAfter func(uint32, int) bool
		if len(p.Stop) > 0 {
			stop = newStopMatcher(p.Stop)
			stopAfter = stop.after
		}
		err := s.engine.Submit(simulator.Request{
			ID: id, Prompt: p.Prompt, MaxTokens: p.MaxTokens, MinTokens: min(p.MinTokens, p.MaxTokens),
			IgnoreEOS: p.IgnoreEOS, Seed: p.Seed, LoRA: lora, Sink: sink,
			KeepBlocks: action == pdKeepNixl || action == pdKeepRoom, Remote: remote, StopAfter: stopAfter,
		})
		if err != nil {
			s.pd.prefillFailed(action, p, err.Error())
			writeError(w, submitError(err, p.Model))
			return
		}
		g := &generation{s: s, w: w, r: r, p: p, id: id, respID: respID, sink: sink, crashAfter: crashAfter,
			created: s.engine.Clock().Now().Unix(), action: action, lora: lora, stop: stop}
		if p.Stream {
			g.stream()
		} else {
			g.respond()
		}
	}
}

func submitError(err error, model string) *wire.Error {
	switch {
	case errors.Is(err, simulator.ErrContextLength):
		return wire.BadRequest("", "%v", err)
	case errors.Is(err, simulator.ErrUnknownAdapter):
		return wire.NotFound("model", "The model `%s` does not exist.", model)
	case errors.Is(err, simulator.ErrInvalidRequest):
		return wire.BadRequest("", "%v", err)
	case errors.Is(err, simulator.ErrClosed):
		return wire.Unavailable("the engine is shutting down")
	default:
		return wire.Internal("%v", err)
	}
}

func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	cfg := s.engine.Config()
	created := s.engine.Clock().Now().Unix()
	list := modelList{Object: "list", Data: []modelCard{{
		ID: cfg.Model, Object: "model", Created: created, OwnedBy: "vllm", Root: cfg.Model, MaxModelLen: cfg.Capacity.MaxModelLen,
	}}}
	base := cfg.Model
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, name := range s.engine.Snapshot().LoadedLoRAs {
		root := s.loraPaths[name]
		if root == "" {
			root = name
		}
		list.Data = append(list.Data, modelCard{
			ID: name, Object: "model", Created: created, OwnedBy: "vllm", Root: root, Parent: &base, MaxModelLen: cfg.Capacity.MaxModelLen,
		})
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) decodeStrict(w http.ResponseWriter, r *http.Request, v any) bool {
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return false
	}
	if aerr := wire.Decode(body, v); aerr != nil {
		writeError(w, aerr)
		return false
	}
	return true
}

func (s *Server) handleLoadLoRA(w http.ResponseWriter, r *http.Request) {
	var req loraRequest
	if !s.decodeStrict(w, r, &req) {
		return
	}
	if req.LoRAName == "" || req.LoRAPath == "" {
		writeError(w, wire.BadRequest("", "Both 'lora_name' and 'lora_path' must be provided."))
		return
	}
	if err := s.engine.LoadAdapter(req.LoRAName); err != nil {
		if errors.Is(err, simulator.ErrAdapterLoaded) {
			writeError(w, wire.BadRequest("", "The lora adapter '%s' has already been loaded.", req.LoRAName))
			return
		}
		writeError(w, wire.BadRequest("", "%v", err))
		return
	}
	s.mu.Lock()
	s.loraPaths[req.LoRAName] = req.LoRAPath
	s.mu.Unlock()
	s.loraOn.Store(true)
	s.log.Info("LoRA adapter loaded", "lora_name", req.LoRAName, "lora_path", req.LoRAPath)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Success: LoRA adapter '%s' added successfully.", req.LoRAName)
}

func (s *Server) handleUnloadLoRA(w http.ResponseWriter, r *http.Request) {
	var req loraRequest
	if !s.decodeStrict(w, r, &req) {
		return
	}
	if req.LoRAName == "" {
		writeError(w, wire.BadRequest("", "'lora_name' needs to be provided to unload a LoRA adapter."))
		return
	}
	if err := s.engine.UnloadAdapter(req.LoRAName); err != nil {
		writeError(w, wire.NotFound("", "The lora adapter '%s' cannot be found.", req.LoRAName))
		return
	}
	s.mu.Lock()
	delete(s.loraPaths, req.LoRAName)
	s.mu.Unlock()
	s.log.Info("LoRA adapter unloaded", "lora_name", req.LoRAName)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "Success: LoRA adapter '%s' removed successfully.", req.LoRAName)
}

func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request) {
	var req tokenizeRequest
	if !s.decodeStrict(w, r, &req) {
		return
	}
	if req.Model != nil && *req.Model != "" {
		if _, aerr := s.resolveModel(*req.Model); aerr != nil {
			writeError(w, aerr)
			return
		}
	}
	var ids []uint32
	switch {
	case req.Prompt != nil && req.Messages == nil:
		ids = s.opts.Tokenizer.Encode(*req.Prompt)
	case req.Messages != nil && req.Prompt == nil:
		var aerr *wire.Error
		if ids, aerr = wire.RenderMessages(req.Messages, s.opts.Tokenizer); aerr != nil {
			writeError(w, aerr)
			return
		}
	default:
		writeError(w, wire.BadRequest("prompt", "give exactly one of 'prompt' and 'messages'"))
		return
	}
	if ids == nil {
		ids = []uint32{}
	}
	writeJSON(w, http.StatusOK, tokenizeResponse{Count: len(ids), MaxModelLen: s.engine.Config().Capacity.MaxModelLen, Tokens: ids})
}

func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request) {
	var req detokenizeRequest
	if !s.decodeStrict(w, r, &req) {
		return
	}
	ids := make([]uint32, len(req.Tokens))
	for i, t := range req.Tokens {
		if t < 0 || t >= int64(s.opts.VocabSize) {
			writeError(w, wire.BadRequest("tokens", "Token id %d is out of vocabulary", t))
			return
		}
		ids[i] = uint32(t)
	}
	writeJSON(w, http.StatusOK, detokenizeResponse{Prompt: s.opts.Tokenizer.Decode(ids)})
}

func (s *Server) handleResetPrefixCache(w http.ResponseWriter, _ *http.Request) {
	s.engine.ResetPrefixCache()
	w.WriteHeader(http.StatusOK)
}

// generation is one generation request being answered.
type generation struct {
	s          *Server
	w          http.ResponseWriter
	r          *http.Request
	p          *wire.Generation
	id         string // the engine's request id
	respID     string // the response's id
	sink       *requestSink
	crashAfter int
	created    int64
	action     pdAction
	lora       string
	// stop finds the request's stop strings; nil without any.
	stop *stopMatcher

	tokens []tokenEvent
	times  []time.Time
}

// wait blocks until the sink has news or the client is gone; it reports
// false (after aborting the request) in the latter case.
func (g *generation) wait() bool {
	select {
	case <-g.sink.notify:
		return true
	case <-g.r.Context().Done():
		g.s.engine.Abort(g.id)
		g.s.pd.prefillFailed(g.action, g.p, "the prefill request was aborted")
		g.s.log.Debug("client gone, request aborted", "request_id", g.id)
		return false
	}
}

// crash drops the connection, as an engine dying mid-request would.
func (g *generation) crash() {
	g.s.engine.Abort(g.id)
	g.s.pd.prefillFailed(g.action, g.p, "injected crash")
	g.s.log.Info("injected fault: dropping connection", "request_id", g.id, "after_tokens", len(g.times))
	panic(http.ErrAbortHandler)
}

func (g *generation) usage(res *simulator.Result, completion int) *usage {
	prompt := len(g.p.Prompt)
	cached := 0
	if res != nil {
		cached = res.CachedTokens
	}
	return &usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion,
		PromptTokensDetails: &promptTokenDetails{CachedTokens: cached}}
}

// finish records a finished request and, for a prefill whose blocks were
// kept, registers them for the decode engine; it returns the answer's
// kv_transfer_params (nil unless a NixlConnector prefill).
func (g *generation) finish(res *simulator.Result) map[string]any {
	g.s.metrics.observe(*res, g.times)
	var kv map[string]any
	if res.Held != nil {
		kv = g.s.pd.keep(g.action, g.id, g.r.Header.Get("X-Request-Id"), g.p, g.lora, res.Held)
	} else {
		g.s.pd.prefillFailed(g.action, g.p, "the prefill kept no blocks")
	}
	if g.s.opts.OnResult != nil {
		g.s.opts.OnResult(*res)
	}
	g.s.traceResult(g.r, res)
	g.s.log.Debug("request finished", "request_id", g.id, "reason", string(res.Reason),
		"prompt_tokens", res.PromptTokens, "cached_tokens", res.CachedTokens, "output_tokens", res.OutputTokens)
	return kv
}

// stopReason is the answer's stop_reason: the matched stop string, or
// nil (null).
func (g *generation) stopReason() any {
	if g.stop == nil || g.stop.at < 0 {
		return nil
	}
	return g.stop.matched
}

func (g *generation) respond() {
	text := newTextOut(nil)
	var clp *completionLogprobs
	var chlp *chatLogprobs
	if g.p.Logprobs {
		if g.p.Chat {
			chlp = &chatLogprobs{Content: []chatLogprob{}}
		} else {
			clp = &completionLogprobs{}
		}
	}
	var res *simulator.Result
	for res == nil {
		if !g.wait() {
			return
		}
		g.tokens, res = g.sink.take(g.tokens[:0])
		for _, t := range g.tokens {
			off := text.add(t)
			switch {
			case clp != nil:
				clp.add(t, off, g.p.TopLogprobs)
			case chlp != nil:
				chlp.add(t, g.p.TopLogprobs)
			}
			g.times = append(g.times, t.at)
			if g.crashAfter > 0 && len(g.times) >= g.crashAfter {
				g.crash()
			}
		}
	}
	if res.Reason == simulator.FinishAbort {
		g.s.pd.prefillFailed(g.action, g.p, "the prefill request was aborted")
		writeError(g.w, wire.Unavailable("request aborted"))
		return
	}
	kv := g.finish(res)
	reason := string(res.Reason)
	u := g.usage(res, res.OutputTokens)
	out := text.delta(true, g.stop.cut(g.p.IncludeStopStr))
	if g.p.Chat {
		var lp any
		if chlp != nil {
			lp = chlp
		}
		writeJSON(g.w, http.StatusOK, chatResponse{ID: g.respID, Object: "chat.completion", Created: g.created, Model: g.p.Model,
			Choices: []chatChoice{{Message: chatMessageOut{Role: "assistant", Content: out, ToolCalls: []any{}}, Logprobs: lp,
				FinishReason: &reason, StopReason: g.stopReason()}},
			Usage: u, KVTransferParams: kv})
		return
	}
	var lp any
	if clp != nil {
		lp = clp
	}
	writeJSON(g.w, http.StatusOK, completionResponse{ID: g.respID, Object: "text_completion", Created: g.created, Model: g.p.Model,
		Choices: []completionChoice{{Text: out, Logprobs: lp, FinishReason: &reason, StopReason: g.stopReason()}},
		Usage:   u, KVTransferParams: kv})
}

func tokenText(t tokenEvent) string {
	if t.index > 0 {
		return " " + tokenizer.Word(t.id)
	}
	return tokenizer.Word(t.id)
}

func (g *generation) stream() {
	h := g.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	g.w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(g.w)
	_ = rc.Flush()
	enc := &sseWriter{w: g.w}
	var res *simulator.Result
	sentRole := false
	text := newTextOut(g.p.Stop)
	for res == nil {
		if !g.wait() {
			return
		}
		g.tokens, res = g.sink.take(g.tokens[:0])
		if res != nil && res.Reason == simulator.FinishAbort {
			g.s.pd.prefillFailed(g.action, g.p, "the prefill request was aborted")
			return
		}
		if res == nil && len(g.tokens) > 0 && g.tokens[len(g.tokens)-1].index == g.p.MaxTokens-1 {
			// The last token: its end follows at once. Wait for it so that
			// finish_reason rides on the last token's chunk, as in vLLM.
			for res == nil {
				if !g.wait() {
					return
				}
				g.tokens, res = g.sink.take(g.tokens)
			}
			if res.Reason == simulator.FinishAbort {
				g.s.pd.prefillFailed(g.action, g.p, "the prefill request was aborted")
				return
			}
		}
		for i, t := range g.tokens {
			g.times = append(g.times, t.at)
			off := text.add(t)
			final := res != nil && i == len(g.tokens)-1
			var reason *string
			var stopReason any
			cut := -1
			if final {
				r := string(res.Reason)
				reason, stopReason, cut = &r, g.stopReason(), g.stop.cut(g.p.IncludeStopStr)
			}
			if g.p.Chat && !sentRole {
				sentRole = true
				empty := ""
				enc.event(g.chatChunk(chatDelta{Role: "assistant", Content: &empty}, nil, nil))
			}
			var u *usage
			if g.p.ContinuousUsage {
				u = g.usage(res, len(g.times))
			}
			delta := text.delta(final, cut)
			if delta == "" && !final && !g.p.Logprobs {
				// Held back: it may be the start of a stop string.
				continue
			}
			if g.p.Chat {
				c := g.chatChunk(chatDelta{Content: &delta}, reason, u)
				if g.p.Logprobs {
					lp := &chatLogprobs{}
					lp.add(t, g.p.TopLogprobs)
					c.Choices[0].Logprobs = lp
				}
				c.Choices[0].StopReason = stopReason
				enc.event(c)
			} else {
				ch := completionChoice{Text: delta, FinishReason: reason, StopReason: stopReason}
				if g.p.Logprobs {
					lp := &completionLogprobs{}
					lp.add(t, off, g.p.TopLogprobs)
					ch.Logprobs = lp
				}
				enc.event(completionChunk{ID: g.respID, Object: "text_completion", Created: g.created, Model: g.p.Model,
					Choices: []completionChoice{ch}, Usage: u})
			}
			if g.crashAfter > 0 && len(g.times) >= g.crashAfter {
				_ = rc.Flush()
				g.crash()
			}
		}
		if res != nil && len(g.tokens) == 0 {
			// The end came after the last token was already sent: the
			// held-back text, if any, and the finish reason.
			r := string(res.Reason)
			rest := text.delta(true, g.stop.cut(g.p.IncludeStopStr))
			if g.p.Chat {
				c := g.chatChunk(chatDelta{Content: &rest}, &r, nil)
				c.Choices[0].StopReason = g.stopReason()
				enc.event(c)
			} else {
				enc.event(completionChunk{ID: g.respID, Object: "text_completion", Created: g.created, Model: g.p.Model,
					Choices: []completionChoice{{Text: rest, FinishReason: &r, StopReason: g.stopReason()}}})
			}
		}
		if enc.err != nil {
			g.s.engine.Abort(g.id)
			g.s.pd.prefillFailed(g.action, g.p, "the prefill's client went away")
			return
		}
		_ = rc.Flush()
	}
	g.finish(res)
	if g.p.IncludeUsage {
		u := g.usage(res, res.OutputTokens)
		if g.p.Chat {
			enc.event(chatChunk{ID: g.respID, Object: "chat.completion.chunk", Created: g.created, Model: g.p.Model, Choices: []chatChunkChoice{}, Usage: u})
		} else {
			enc.event(completionChunk{ID: g.respID, Object: "text_completion", Created: g.created, Model: g.p.Model, Choices: []completionChoice{}, Usage: u})
		}
	}
	enc.done()
	_ = rc.Flush()
}

func (g *generation) chatChunk(d chatDelta, reason *string, u *usage) chatChunk {
	return chatChunk{ID: g.respID, Object: "chat.completion.chunk", Created: g.created, Model: g.p.Model,
		Choices: []chatChunkChoice{{Delta: d, FinishReason: reason}}, Usage: u}
}

// sseWriter writes server-sent events and remembers the first write error.
type sseWriter struct {
	w   io.Writer
	buf bytes.Buffer
	err error
}

func (e *sseWriter) event(v any) {
	if e.err != nil {
		return
	}
	e.buf.Reset()
	e.buf.WriteString("data: ")
	enc := json.NewEncoder(&e.buf)
	if err := enc.Encode(v); err != nil {
		e.err = err
		return
	}
	// Encode ends with one newline; SSE needs a blank line.
	e.buf.WriteByte('\n')
	_, e.err = e.w.Write(e.buf.Bytes())
}

func (e *sseWriter) done() {
	if e.err == nil {
		_, e.err = io.WriteString(e.w, "data: [DONE]\n\n")
	}
}

var _ http.Handler = (*Server)(nil)

func writeError(w http.ResponseWriter, e *wire.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(e.Body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// RenderChat returns the text that a chat conversation becomes before
// tokenisation (see wire.RenderChat).
func RenderChat(roles, contents []string) string { return wire.RenderChat(roles, contents) }
