package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/router"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// Defaults of local mode without a config file.
const (
	DefaultModel    = "llama-3-8b"
	DefaultReplicas = 4
)

// DefaultConfig is one model on four simulated engines (free ports), the
// router on 127.0.0.1:8080 with the default profile.
func DefaultConfig() *config.Config {
	c := &config.Config{
		APIVersion: config.APIVersion,
		Kind:       config.Kind,
		Engines:    []config.EngineSpec{{Model: DefaultModel, Replicas: DefaultReplicas}},
		Routes:     []config.RouteSpec{{Model: DefaultModel, Targets: []config.TargetSpec{{Pool: DefaultModel}}}},
	}
	c.Default()
	return c
}

// Options configure Run.
type Options struct {
	// Config is a loaded configuration; nil means DefaultConfig.
	Config *config.Config
	// Registry builds scheduling plugins; PresetProfiles are the profiles
	// routes may name without defining them.
	Registry       *framework.Registry
	PresetProfiles map[string]config.ProfileSpec
	// Logger receives the router's and engines' logs.
	Logger *slog.Logger
	// Out receives the human-readable lines: where to send requests, and the
	// demo's answer and report.
	Out io.Writer
	// Demo runs the built-in demo once the router is ready.
	Demo bool
	// DemoRequests is the size of the demo's load; default 300.
	DemoRequests int
	// ReadyTimeout bounds the wait for the router to become ready; default
	// 30s.
	ReadyTimeout time.Duration
	// TracerProvider, when set, traces the router's requests and the
	// engines' work; nil: no tracing.
	TracerProvider trace.TracerProvider
}

// CheckEngines reports what Run would refuse in the config's engines block:
// args (engines run in-process) and profiles that do not load. All problems
// are reported, each naming its field path.
func CheckEngines(cfg *config.Config) error {
	var errs []error
	for i, es := range cfg.Engines {
		if len(es.Args) > 0 {
			errs = append(errs, fmt.Errorf("engines[%d].args: not supported by halyard up (engines run in-process); use halyard sim processes and halyard router instead", i))
		}
		if _, err := simulator.LoadProfile(es.Profile); err != nil {
			errs = append(errs, fmt.Errorf("engines[%d].profile: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// Run starts the configured engines and the router, prints where to send
// requests, runs the demo if asked, and serves until ctx is done; then it
// stops the router and the engines and waits for them.
func Run(ctx context.Context, o Options) error {
	cfg := o.Config
	if cfg == nil {
		cfg = DefaultConfig()
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	if len(cfg.Engines) == 0 && len(cfg.Endpoints) == 0 {
		return errors.New("local mode: the config has neither engines nor endpoints")
	}

	ectx, stopEngines := context.WithCancel(context.Background())
	defer stopEngines()
	var instances []*vllmapi.Instance
	defer func() {
		stopEngines()
		for _, in := range instances {
			_ = in.Wait()
		}
	}()
	var specs []datastore.EndpointSpec
	engineURLs := map[string]bool{}
	perPool := map[string]int{} // engines named POOL-i, numbered across engines entries
	if err := CheckEngines(cfg); err != nil {
		return err
	}
	// An engine on the address of a static endpoint takes its place: its
	// name, labels and KV-event addresses (the engine publishes there).
	static := map[string]datastore.EndpointSpec{}
	for _, s := range discovery.Specs(cfg.Endpoints) {
		static[strings.TrimSuffix(s.Metadata.Address, "/")] = s
	}
	for i, es := range cfg.Engines {
		for r := range es.Replicas {
			name := fmt.Sprintf("%s-%d", es.Pool, perPool[es.Pool])
			perPool[es.Pool]++
			listen := "127.0.0.1:0"
			sp := vllmapi.Spec{
				Model: es.Model, Profile: es.Profile, Role: es.Role,
				LoRAs: es.Adapters, Seed: uint64(1000*i + r + 1), TracerProvider: o.TracerProvider,
			}
			var labels map[string]string
			var kv *datastore.KVEvents
			if es.BasePort != 0 {
				listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(es.BasePort+r))
				if st, ok := static["http://"+listen]; ok {
					name, labels, kv = st.Metadata.Name, maps.Clone(st.Metadata.Labels), st.KVEvents
					if kv != nil {
						sp.KVEvents, sp.KVEventsReplay, sp.Name = kv.Endpoint, kv.ReplayEndpoint, name
						if sp.KVEventsReplay == "" {
							sp.KVEventsReplay = "off"
						}
					}
				}
			}
			sp.Listen = listen
			inst, err := vllmapi.Start(ectx, sp, log.With("engine", name))
			if err != nil {
				return fmt.Errorf("engines[%d] replica %d: %w", i, r, err)
			}
			instances = append(instances, inst)
			engineURLs[inst.URL] = true
			if labels == nil {
				labels = map[string]string{}
			}
			maps.Copy(labels, es.Labels)
			if st := inst.Server.PDStatus(); st.Bootstrap != "" {
				// A prefill engine's bootstrap server is on a free port.
				_, port, _ := net.SplitHostPort(st.Bootstrap)
				labels[config.LabelBootstrapPort] = port
			}
			specs = append(specs, datastore.EndpointSpec{Pool: es.Pool, KVEvents: kv, Metadata: framework.EndpointMetadata{
				Name: name, Address: inst.URL, Model: es.Model,
				Role: framework.Role(es.Role), Labels: labels, Adapters: es.Adapters,
			}})
		}
	}
	// Static endpoints that the engines replace (same address) are dropped.
	for _, s := range discovery.Specs(cfg.Endpoints) {
		if !engineURLs[strings.TrimSuffix(s.Metadata.Address, "/")] {
			specs = append(specs, s)
		}
	}

	decisionHeadersOn(cfg)
	r, err := router.New(router.Options{
		Config: cfg, Registry: o.Registry, PresetProfiles: o.PresetProfiles, Logger: log,
		Source: &discovery.Static{Endpoints: specs}, TracerProvider: o.TracerProvider,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Router.Listen)
	if err != nil {
		return fmt.Errorf("router listen: %w", err)
	}
	url := "http://" + ln.Addr().String()
	rctx, stopRouter := context.WithCancel(ctx)
	defer stopRouter()
	adminURL := ""
	if a := cfg.Router.AdminAddress(); a != "" {
		aln, err := net.Listen("tcp", a)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("router admin listen: %w", err)
		}
		adminURL = "http://" + aln.Addr().String()
		go func() {
			if err := r.ServeAdmin(rctx, aln); err != nil {
				log.Warn("admin listener stopped", "error", err)
			}
		}()
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(rctx, ln, 5*time.Second) }()
	log.Info("router serving", "addr", ln.Addr().String(), "admin_addr", adminURL, "engines", len(instances))

	if stopped, err := waitReady(ctx, out, r, o.ReadyTimeout, served); err != nil {
		stopRouter()
		if !stopped {
			if serr := <-served; serr != nil {
				log.Warn("router stopped with an error", "error", serr)
			}
		}
		if ctx.Err() != nil {
			fmt.Fprintln(out, "Stopped before the router was ready.")
			return nil // stopped by the user (Ctrl-C): not a failure
		}
		return err
	}
	model := cfg.Routes[0].Model
	fmt.Fprintf(out, "Halyard is up: router on %s, %d simulated engine(s), models: %s\n", url, len(instances), strings.Join(publicModels(cfg), ", "))
	fmt.Fprintf(out, "Try:\n  curl -s %s/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\":%q,\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}],\"max_tokens\":32}'\n", url, model)
	if adminURL != "" {
		fmt.Fprintf(out, "Console: %s/ui/ (the fleet, routes, live decisions and a playground)\n", adminURL)
		fmt.Fprintf(out, "Admin: %s (metrics: %s/metrics, decisions: %s/debug/route?model=%s&prompt=hi)\n", adminURL, adminURL, adminURL, model)
	}
	explain := ""
	if cfg.Router.Debug.ExplainEnabled() {
		explain = "Explain a decision: add -H 'x-halyard-explain: 1' and -i   "
	}
	fmt.Fprintf(out, "%sStop: Ctrl-C\n", explain)

	if o.Demo {
		n := o.DemoRequests
		if n <= 0 {
			n = 300
		}
		if err := runDemo(ctx, out, url, model, n, instances); err != nil && ctx.Err() == nil {
			fmt.Fprintf(out, "demo failed: %v\n", err)
		}
		if ctx.Err() == nil {
			fmt.Fprintf(out, "Still serving on %s; Ctrl-C stops.\n", url)
		}
	}
	var serveErr error
	select {
	case <-ctx.Done():
		stopRouter()
		serveErr = <-served
	case serveErr = <-served:
	}
	return serveErr
}

// decisionHeadersOn turns on, unless the config set them, the decision
// headers (X-Halyard-Endpoint, and x-halyard-explain answered): local mode
// is for looking at decisions, on one's own machine.
func decisionHeadersOn(cfg *config.Config) {
	on := true
	if cfg.Router.Debug.Explain == nil {
		cfg.Router.Debug.Explain = &on
	}
	if cfg.Router.Debug.EndpointHeader == nil {
		cfg.Router.Debug.EndpointHeader = &on
	}
}

func publicModels(cfg *config.Config) []string {
	out := make([]string, 0, len(cfg.Routes))
	for _, r := range cfg.Routes {
		out = append(out, r.Model)
	}
	return out
}

// readyProgressEvery is how often waitReady says what it still waits for;
// silentEndpointsAfter is when it first names the endpoints that do not
// answer.
var (
	readyProgressEvery   = 5 * time.Second
	silentEndpointsAfter = 2 * time.Second
)

// silentEndpoints describes the endpoints that do not answer (not healthy)
// and how to start a simulated engine in their place; "" when all answer.
func silentEndpoints(r *router.Router) string {
	var b strings.Builder
	for _, e := range r.Store().All() {
		if e.Healthy() {
			continue
		}
		md := e.Metadata()
		host := strings.TrimPrefix(strings.TrimPrefix(md.Address, "http://"), "https://")
		why := e.LastError()
		if why == "" {
			why = "not checked yet"
		}
		role := ""
		if md.Role != "" && md.Role != framework.RoleBoth {
			role = " --role " + string(md.Role)
		}
		fmt.Fprintf(&b, "  %s at %s (model %s) does not answer: %s\n    start it: halyard sim --model %s --listen %s%s\n",
			md.Name, md.Address, md.Model, why, md.Model, host, role)
	}
	if b.Len() == 0 {
		return ""
	}
	return b.String() + "  or give the config an engines block to have halyard up start simulated engines (see examples/one-model.yaml).\n"
}

// waitReady waits until every route can be served, saying so on out at
// once and every readyProgressEvery. stopped tells that the router's Serve
// returned (and its result was taken from served). It returns ctx.Err()
// when ctx ends first.
func waitReady(ctx context.Context, out io.Writer, r *router.Router, timeout time.Duration, served <-chan error) (stopped bool, err error) {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	progress := time.NewTicker(readyProgressEvery)
	defer progress.Stop()
	silent := time.NewTimer(silentEndpointsAfter)
	defer silent.Stop()
	if ok, missing := r.Ready(); !ok {
		fmt.Fprintf(out, "Waiting up to %s for the engines to be ready (models not ready yet: %s) ...\n", timeout, strings.Join(missing, ", "))
	}
	for {
		if ok, _ := r.Ready(); ok {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case err := <-served:
			return true, fmt.Errorf("router stopped before it was ready: %w", err)
		case <-deadline.C:
			_, missing := r.Ready()
			if s := silentEndpoints(r); s != "" {
				fmt.Fprint(out, "Endpoints that do not answer:\n"+s)
			}
			return false, fmt.Errorf("router not ready within %s: no endpoint can serve %s (see the router's /ready and log)", timeout, strings.Join(missing, ", "))
		case <-silent.C:
			if s := silentEndpoints(r); s != "" {
				fmt.Fprint(out, "Endpoints that do not answer:\n"+s)
			}
		case <-progress.C:
			_, missing := r.Ready()
			fmt.Fprintf(out, "  still waiting after %s: not ready: %s\n", time.Since(start).Round(time.Second), strings.Join(missing, ", "))
		case <-tick.C:
		}
	}
}
