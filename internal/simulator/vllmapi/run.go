package vllmapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/halyard-dev/halyard/internal/kvevents"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// Spec is everything needed to build and serve one simulated engine: what
// `halyard sim` takes as flags and what `halyard up` gives per engine. Zero
// capacity fields take the profile's values.
type Spec struct {
	// Listen is the address to serve on, e.g. 127.0.0.1:8101 (port 0 picks
	// a free port).
	Listen string
	// Model is the served base model name.
	Model string
	// Profile is a built-in profile name or a YAML file path; default
	// simulator.DefaultProfile.
	Profile string
	// Capacity overrides: zero keeps the profile's value.
	NumGPUBlocks, BlockSize, MaxNumSeqs, MaxNumBatchedTokens, MaxModelLen, MaxLoras int
	// Role is "both" (default), "prefill" or "decode".
	Role string
	// KVEvents is the ZMQ endpoint to publish KV events on, e.g.
	// tcp://*:5557; "" for none.
	KVEvents string
	// KVEventsReplay is the replay socket's endpoint; "" means the event
	// port plus one (DefaultReplayEndpoint), "off" none.
	KVEventsReplay string
	// KVEventsFormat is the event layout, "array" (default) or "map".
	KVEventsFormat string
	// Name is the engine's name in the KV-event topic kv@<name>@<model>;
	// default the host name.
	Name string
	// Tokenizer is "pseudo" (default), a tiktoken rank file or a
	// tokenizer.json (tokenizer.Load).
	Tokenizer string
	// ModelDir is a model directory (config.json, tokenizer.json); when
	// set, the KV block count comes from its architecture and
	// GPUMemoryGiB (unless NumGPUBlocks is given) and the tokenizer from
	// its tokenizer.json (unless Tokenizer is given).
	ModelDir string
	// GPUMemoryGiB and GPUMemoryUtilization size the KV cache of ModelDir's
	// model: (GiB × utilization − weights) / KV bytes per block.
	GPUMemoryGiB, GPUMemoryUtilization float64
	// LoRAs are adapters loaded at start, as name or name=path.
	LoRAs []string
	// Seed makes output deterministic.
	Seed uint64
	// EOSProbability is the per-token chance of an early end (see
	// simulator.Config).
	EOSProbability float64
	// ReadyDelay is a slow start: /health is 503 until it passes.
	ReadyDelay time.Duration
	// Faults are injected from the start.
	Faults Faults
	// DefaultMaxTokens and DefaultChatMaxTokens: see Options.
	DefaultMaxTokens, DefaultChatMaxTokens int
	// EnableLoRA enables LoRA (vLLM's --enable-lora) without loading an
	// adapter at start; LoRAs and MaxLoras > 0 imply it.
	EnableLoRA bool
	// OnResult is Options.OnResult (a hook for code, not a flag).
	OnResult func(simulator.Result)
	// TracerProvider is Options.TracerProvider.
	TracerProvider trace.TracerProvider
	// PD configures the prefill and decode roles (engine id, side channel,
	// bootstrap port, timeouts, transfer time).
	PD PDSpec
}

// Build makes the engine and the server of the spec on clock.
func (sp Spec) Build(clock simclock.Clock, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := sp.PD.Validate(sp.Role); err != nil {
		return nil, err
	}
	switch sp.KVEventsFormat {
	case "", "array", "map":
	default: // checked here too, so that a bad value is refused without --kv-events
		return nil, fmt.Errorf("kv-events format: must be array or map, got %q", sp.KVEventsFormat)
	}
	var arch *simulator.ModelArch
	if sp.ModelDir != "" {
		a, err := simulator.LoadModelArch(sp.ModelDir)
		if err != nil {
			return nil, err
		}
		arch = &a
		if tj := filepath.Join(sp.ModelDir, "tokenizer.json"); sp.Tokenizer == "" {
			if _, err := os.Stat(tj); err == nil {
				sp.Tokenizer = tj
			}
		}
	}
	tok, err := tokenizer.Load(sp.Tokenizer)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	vocab := 0
	if v, ok := tok.(interface{ VocabSize() int }); ok {
		vocab = v.VocabSize()
	}
	prof, err := simulator.LoadProfile(sp.Profile)
	if err != nil {
		return nil, err
	}
	cfg := prof.Config(sp.Model)
	override := func(dst *int, v int) {
		if v != 0 {
			*dst = v
		}
	}
	override(&cfg.Capacity.NumGPUBlocks, sp.NumGPUBlocks)
	override(&cfg.Capacity.BlockSize, sp.BlockSize)
	if arch != nil && sp.NumGPUBlocks == 0 && sp.GPUMemoryGiB > 0 {
		util := sp.GPUMemoryUtilization
		if util <= 0 {
			util = 0.9
		}
		blocks, err := arch.KVBlocks(int64(sp.GPUMemoryGiB*(1<<30)), util, cfg.Capacity.BlockSize)
		if err != nil {
			return nil, fmt.Errorf("model dir %s: %w", sp.ModelDir, err)
		}
		cfg.Capacity.NumGPUBlocks = blocks
		log.Info("sim: KV cache sized from the model", "dir", sp.ModelDir, "layers", arch.Layers,
			"kv_heads", arch.KVHeads, "head_dim", arch.HeadDim, "dtype", arch.DType,
			"kv_bytes_per_token", arch.KVBytesPerToken(), "weight_bytes", arch.WeightBytes, "kv_blocks", blocks)
	}
	override(&cfg.Capacity.MaxNumSeqs, sp.MaxNumSeqs)
	override(&cfg.Capacity.MaxNumBatchedTokens, sp.MaxNumBatchedTokens)
	override(&cfg.Capacity.MaxModelLen, sp.MaxModelLen)
	override(&cfg.Capacity.MaxLoras, sp.MaxLoras)
	cfg.Seed = sp.Seed
	cfg.EOSProbability = sp.EOSProbability
	cfg.Logger = log
	paths := map[string]string{}
	for _, l := range sp.LoRAs {
		name, path := l, l
		for i := 0; i < len(l); i++ {
			if l[i] == '=' {
				name, path = l[:i], l[i+1:]
				break
			}
		}
		cfg.LoRAs = append(cfg.LoRAs, name)
		paths[name] = path
	}
	kv, err := sp.kvPublisher(cfg, clock, log)
	if err != nil {
		return nil, err
	}
	if kv != nil {
		cfg.KVEvents = NewEventHooks(cfg.Capacity.BlockSize, func(evs []kvevents.Event) { kv.pub.Publish(evs...) })
	}
	eng, err := simulator.NewEngine(cfg, clock)
	if err != nil {
		kv.close()
		return nil, err
	}
	srv, err := New(eng, Options{
		Tokenizer: tok, VocabSize: vocab, kv: kv,
		ReadyDelay: sp.ReadyDelay, Faults: sp.Faults, FaultSeed: sp.Seed,
		DefaultMaxTokens: sp.DefaultMaxTokens, DefaultChatMaxTokens: sp.DefaultChatMaxTokens,
		LoRAPaths: paths, EnableLoRA: sp.EnableLoRA || sp.MaxLoras > 0, Logger: log, OnResult: sp.OnResult,
		Role: sp.Role, PD: sp.PD, TracerProvider: sp.TracerProvider,
	})
	if err != nil {
		eng.Close()
		kv.close()
		return nil, err
	}
	return srv, nil
}

// Instance is one engine serving HTTP on a listener.
type Instance struct {
	// Server is the engine's HTTP face; Server.Engine() the engine.
	Server *Server
	// Addr is the listening address (host:port) and URL its base URL.
	Addr, URL string

	httpServer *http.Server
	done       chan struct{}
	err        error
	stop       func()
}

// Start listens on sp.Listen and serves the spec's engine on the real clock
// until ctx is done or Close is called. It returns once the listener is
// open.
func Start(ctx context.Context, sp Spec, log *slog.Logger) (*Instance, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("model", sp.Model)
	srv, err := sp.Build(simclock.Real{}, log)
	if err != nil {
		return nil, err
	}
	addr := sp.Listen
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		srv.close()
		return nil, fmt.Errorf("listen: %w", err)
	}
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	if err := srv.pd.listen(host); err != nil {
		_ = ln.Close()
		srv.Engine().Close()
		return nil, err
	}
	return Serve(ctx, ln, srv, log), nil
}

// Serve serves srv on ln until ctx is done or Close is called, then shuts
// down gracefully (in-flight requests get up to five seconds) and closes the
// engine.
func Serve(ctx context.Context, ln net.Listener, srv *Server, log *slog.Logger) *Instance {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	inst := &Instance{
		Server:     srv,
		Addr:       ln.Addr().String(),
		URL:        "http://" + ln.Addr().String(),
		httpServer: &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second},
		done:       make(chan struct{}),
	}
	stop := make(chan struct{})
	served := make(chan error, 1)
	go func() { served <- inst.httpServer.Serve(ln) }()
	go func() {
		defer close(inst.done)
		var err error
		select {
		case <-ctx.Done():
		case <-stop:
		case err = <-served:
		}
		// Graceful: stop accepting, let in-flight generations finish (up
		// to five seconds), then close every connection. (Shutdown alone
		// would wait five seconds for connections that never sent a
		// request.)
		shut := make(chan error, 1)
		go func() { shut <- inst.httpServer.Shutdown(context.Background()) }()
		srv.waitIdle(5 * time.Second)
		if cerr := inst.httpServer.Close(); cerr != nil && err == nil {
			err = cerr
		}
		if serr := <-shut; serr != nil && err == nil {
			err = serr
		}
		srv.close()
		srv.pd.close()
		srv.Engine().Close()
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			inst.err = err
		}
		log.Info("simulated engine stopped", "addr", inst.Addr)
	}()
	var once sync.Once
	inst.stop = func() { once.Do(func() { close(stop) }) }
	log.Info("simulated engine serving", "addr", inst.Addr, "url", inst.URL)
	return inst
}

// Wait blocks until the instance has stopped and returns its serving error.
func (i *Instance) Wait() error {
	<-i.done
	return i.err
}

// Close stops the instance and waits for it.
func (i *Instance) Close() error {
	i.stop()
	return i.Wait()
}

// Run serves the spec's engine until ctx is done.
func Run(ctx context.Context, sp Spec, log *slog.Logger) error {
	inst, err := Start(ctx, sp, log)
	if err != nil {
		return err
	}
	return inst.Wait()
}
