package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"path"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/console"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/enginemetrics"
	"github.com/halyard-dev/halyard/internal/observability"
	"github.com/halyard-dev/halyard/internal/router/h1"
	"github.com/halyard-dev/halyard/internal/routing"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/simclock"
)

// Header names the router reads or sets.
const (
	HeaderExplain   = "X-Halyard-Explain"
	HeaderRoute     = "X-Halyard-Route"
	HeaderEndpoint  = "X-Halyard-Endpoint"
	HeaderRequestID = "X-Request-Id"
)

// Options configure a Router. Config and Registry are required.
type Options struct {
	// Config is a loaded (defaulted and validated) configuration.
	Config *config.Config
	// WaitingRoom, when set, reports requests held for pools without a
	// ready endpoint (the autoscaling signal waitingRoom).
	WaitingRoom WaitingRoom
	// Registry builds the profiles' plugins.
	Registry *framework.Registry
	// DefaultProfile is used as the "default" profile when the config does
	// not define one. Nil means the config must define every profile used.
	DefaultProfile *config.ProfileSpec
	// PresetProfiles are profiles a route may name without the config
	// defining them (presets.Specs); the config's own
	// profiles of the same name win. Only the presets routes use are built.
	PresetProfiles map[string]config.ProfileSpec
	// KeySource pushes tenants' API keys from Kubernetes Secrets
	// (keysFrom.secret; package secretkeys); nil: none.
	KeySource admission.KeySource
	// Source gives the endpoints; nil means the config's endpoints block.
	Source discovery.Source
	// Routes, when set, reports routes (ModelRoutes) that join the
	// config's routes at run time, with the endpoints they declare; the
	// config's routes win a public model both name. Nil: the config's
	// routes only (SetRoutes still replaces them).
	Routes discovery.RouteSource
	// Scraper reads engine metrics; nil means enginemetrics over HTTP.
	Scraper datastore.Scraper
	// Prober checks engine readiness before each scrape; nil means GET
	// router.health.path over HTTP (none when the path is "none").
	Prober datastore.Prober
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Clock times the scrape loop and is given to plugins; nil means real.
	Clock simclock.Clock
	// TracerProvider, when set, traces requests (docs/observability.md);
	// nil: no spans, no cost.
	TracerProvider trace.TracerProvider
}

// Router serves the OpenAI-compatible API. Create it with New, start its
// background work with Run (or Serve), and mount Handler.
type Router struct {
	// signals and waitingRoom feed autoscalers (autoscale.go).
	signals     *signalBook
	waitingRoom WaitingRoom
	cfg         config.RouterConfig
	log         *slog.Logger
	store       *datastore.Store
	collector   *datastore.Collector
	source      discovery.Source
	metrics     *observability.RouterMetrics
	transport   *http.Transport
	engines     *h1.Client
	upstream    *upstream
	mux         *http.ServeMux
	admin       *http.ServeMux // the admin listener's: metrics, debug, console
	budget      *byteBudget    // router.limits.bufferBytes
	bodies      *bodyPool      // long bodies' buffers, reused
	health      datastore.HealthPolicy
	outlier     datastore.OutlierPolicy
	now         func() time.Time
	prefix      *prefixRouting

	discovered chan struct{} // closed after the first discovery update
	once       sync.Once

	// hardStop is cancelled when the shutdown grace period ends: requests
	// still in flight are then ended with an error (an SSE error event for
	// a stream) before their connections are closed.
	hardStop    context.Context
	endHardStop context.CancelFunc
	// state is the route table and profiles, swapped whole by SetRoutes
	// (serialised by setMu); profiles (the director's) resolves and builds
	// the profiles new routes name.
	state    atomic.Pointer[routeState]
	setMu    sync.Mutex
	profiles *decision.Profiles
	// director decides where requests go (package decision); the router
	// keeps HTTP, relaying and retries.
	director *decision.Director
	rm       *routeMetrics
	// routeSource and configRoutes: see Options.Routes.
	routeSource  discovery.RouteSource
	configRoutes []config.RouteSpec
	lastMerged   *[]config.RouteSpec // the last applied report; route source goroutine only
	// The endpoint set is the union of the endpoint source's and the
	// routes' (syncEndpoints).
	endpointsMu     sync.Mutex
	sourceEndpoints []datastore.EndpointSpec
	routeEndpoints  []datastore.EndpointSpec

	// pdm are the metrics of the disaggregated pools.
	pdm *pdMetrics

	// tracer is nil when tracing is off.
	tracer trace.Tracer
	// admission authenticates, budgets and queues requests (nil: off);
	// authOn is set when the config has an auth block.
	admission *admission.Admission
	// keySource pushes tenants' keys from Kubernetes Secrets (nil: none).
	keySource admission.KeySource
	authOn    bool
	// budgetRemaining is halyard_router_admission_budget_remaining_ratio
	// (nil when admission is off).
	budgetRemaining *prometheus.GaugeVec
	// feed is the console's feed of recent decisions (console.go).
	feed *console.Feed
}

// New builds a router: the route table, the profiles and their plugins, the
// upstream transport and the metrics. It starts nothing.
func New(opts Options) (*Router, error) {
	if opts.Config == nil || opts.Registry == nil {
		return nil, errors.New("router: Config and Registry are required")
	}
	cfg := opts.Config
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	clock := opts.Clock
	if clock == nil {
		clock = simclock.Real{}
	}
	table, err := routing.New(cfg.Routes)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	r := &Router{
		cfg:        cfg.Router,
		log:        log,
		store:      &datastore.Store{},
		metrics:    observability.NewRouterMetrics(),
		health:     datastore.HealthPolicy{FailureThreshold: cfg.Router.Health.FailureThreshold, SuccessThreshold: cfg.Router.Health.SuccessThreshold},
		outlier:    datastore.OutlierPolicy{Consecutive5xx: max(cfg.Router.Health.Outlier.Consecutive5xx, 0), EjectionTime: cfg.Router.Health.Outlier.EjectionTime.Duration},
		now:        clock.Now,
		discovered: make(chan struct{}),
	}
	r.hardStop, r.endHardStop = context.WithCancel(context.Background())
	r.budget = &byteBudget{limit: cfg.Router.Limits.BufferBytes}
	if r.budget.limit <= 0 {
		r.budget.limit = DefaultBufferBytes()
	}
	r.bodies = &bodyPool{limit: min(defaultBodyPoolBytes, r.budget.limit/4)}
	if opts.TracerProvider != nil {
		r.tracer = opts.TracerProvider.Tracer(TracerName)
	}
	if r.prefix, err = newPrefixRouting(cfg, log, clock, r.metrics); err != nil {
		return nil, err
	}
	handle := scheduling.Handle{Clock: clock.Now, Log: log, Instances: r.prefix.sharedInstances()}
	specs := map[string]config.ProfileSpec{}
	for name, p := range cfg.Router.Profiles {
		specs[name] = p
	}
	if _, ok := specs[config.DefaultProfile]; !ok && opts.DefaultProfile != nil {
		specs[config.DefaultProfile] = *opts.DefaultProfile
	}
	r.profiles = decision.NewProfiles(specs, opts.PresetProfiles, opts.Registry, handle)
	r.routeSource, r.configRoutes = opts.Routes, slices.Clone(cfg.Routes)
	// Build the profiles the routes, the default and the pd blocks name
	// (those of pd blocks when the director makes its planners).
	names := []string{config.DefaultProfile}
	for _, m := range table.Models() {
		rt, _ := table.Lookup(m)
		names = append(names, rt.Profile)
	}
	for _, name := range names {
		if !r.profiles.Has(name) {
			continue
		}
		if _, err := r.profiles.Get(name); err != nil {
			return nil, fmt.Errorf("router: %w", err)
		}
	}
	for _, m := range table.Models() {
		rt, _ := table.Lookup(m)
		if !r.profiles.Has(rt.Profile) {
			return nil, r.unknownProfile(m, rt.Profile)
		}
	}
	r.pdm = newPDMetrics(r.metrics.Registry)
	pdSpecs := map[string]config.PDSpec{}
	for _, ps := range cfg.Pools {
		if ps.PD != nil {
			pdSpecs[ps.Name] = *ps.PD
		}
	}
	r.director, err = decision.New(decision.Options{
		Pools:               storePools{r.store},
		Profiles:            r.profiles,
		Handle:              handle,
		PD:                  pdSpecs,
		DefaultOutputTokens: cfg.Router.DefaultOutputTokens,
		Scheduled: func(profile string, took time.Duration) {
			r.metrics.SchedulingTime.WithLabelValues(profile).Observe(took.Seconds())
		},
		Explain: r.prefix.explain,
	})
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	profiles := r.profiles.BuiltProfiles()
	if err := r.registerPluginMetrics(profiles, slices.Sorted(maps.Keys(profiles))); err != nil {
		return nil, err
	}
	r.state.Store(&routeState{table: table, profiles: profiles})
	r.rm = newRouteMetrics(r.metrics.Registry)
	r.rm.routes.Set(float64(len(table.Models())))

	dialer := &net.Dialer{Timeout: cfg.Router.Timeouts.Connect.Duration, KeepAlive: 30 * time.Second}
	r.transport = &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		MaxIdleConns:        4096,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		// No ResponseHeaderTimeout: a non-streamed answer's headers come
		// with the whole generation. attempt's watchdog bounds the waits.
		DisableCompression:     true, // pass bodies through byte for byte
		MaxResponseHeaderBytes: 1 << 20,
		WriteBufferSize:        32 << 10,
		ReadBufferSize:         32 << 10,
	}
	// Plain-HTTP engines get the lean client (package h1); others (https)
	// the Transport.
	r.engines = &h1.Client{
		DialContext:            dialer.DialContext,
		MaxIdlePerHost:         1024,
		IdleTimeout:            90 * time.Second,
		ReadBufferSize:         32 << 10,
		WriteBufferSize:        32 << 10,
		MaxResponseHeaderBytes: 1 << 20,
		Fallback:               r.transport,
	}
	r.upstream = newUpstream(r.engines)
	if err := r.newAdmission(cfg, opts); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}

	scrapeClient := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second}}
	scraper := opts.Scraper
	if scraper == nil {
		scraper = &enginemetrics.Scraper{Client: scrapeClient, Now: clock.Now}
	}
	prober := opts.Prober
	if prober == nil && cfg.Router.Health.Path != config.HealthPathNone {
		prober = httpProber{client: scrapeClient, path: cfg.Router.Health.Path}
	}
	r.collector = &datastore.Collector{
		Store:          r.store,
		Scraper:        scraper,
		Prober:         prober,
		Interval:       cfg.Router.ScrapeInterval.Duration,
		Timeout:        cfg.Router.Timeouts.Scrape.Duration,
		Health:         r.health,
		Clock:          clock,
		Log:            log,
		OnHealthChange: func(e *datastore.Endpoint, healthy bool) {},
	}
	r.source = opts.Source
	if r.source == nil {
		r.source = &discovery.Static{Endpoints: discovery.Specs(cfg.Endpoints)}
	}
	r.metrics.Registry.MustRegister(&endpointCollector{store: r.store})
	r.signals, r.waitingRoom = newSignalBook(cfg.Router.Autoscaling, r.prefix.hasher(), clock.Now), opts.WaitingRoom
	if r.waitingRoom == nil && r.admission != nil && r.admission.Queue() != nil {
		r.waitingRoom = queueRoom{r} // admission's fair queue is the waiting room
	}
	r.metrics.Registry.MustRegister(signalCollector{r})

	r.mux = http.NewServeMux()
	r.mux.HandleFunc("POST /v1/chat/completions", r.serveChat)
	r.mux.HandleFunc("POST /v1/completions", r.serveCompletion)
	r.mux.HandleFunc("GET /v1/models", r.serveModels)
	r.mux.HandleFunc("GET /health", r.serveHealth)
	r.mux.HandleFunc("GET /ready", r.serveReady)
	for p := range allowedMethods {
		r.mux.HandleFunc(p, r.serveMethodNotAllowed)
	}
	r.mux.HandleFunc("/", r.serveNotFound)

	r.admin = http.NewServeMux()
	r.admin.Handle("GET /metrics", promhttp.HandlerFor(r.metrics.Registry, promhttp.HandlerOpts{}))
	r.admin.HandleFunc("POST /debug/route", r.serveDebugRoute)
	r.admin.HandleFunc("GET /debug/route", r.serveDebugRoute)
	r.admin.HandleFunc("GET /autoscale/signals", r.serveAutoscaleSignals)
	r.admin.HandleFunc("GET /autoscale/endpoints", r.serveAutoscaleEndpoints)
	r.admin.HandleFunc("GET /health", r.serveHealth)
	r.admin.HandleFunc("GET /ready", r.serveReady)
	r.mountConsole()
	if cfg.Router.Debug.Pprof {
		r.admin.HandleFunc("/debug/pprof/", pprof.Index)
		r.admin.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		r.admin.HandleFunc("/debug/pprof/profile", pprof.Profile)
		r.admin.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		r.admin.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return r, nil
}

// AdminHandler returns the admin listener's handler: /metrics,
// /debug/route, /health, /ready, the console at /ui/ (docs/console.md),
// /debug/pprof/ when router.debug.pprof is on, and what AdminHandle
// mounted. Never mount it on the public listener.
func (r *Router) AdminHandler() http.Handler { return r.admin }

// AdminHandle mounts h on the admin listener at pattern (http.ServeMux
// syntax, e.g. "/ui/"). It may be called before or while serving; a
// pattern already mounted panics, as ServeMux.Handle does.
func (r *Router) AdminHandle(pattern string, h http.Handler) { r.admin.Handle(pattern, h) }

// observeStatus feeds an engine's answer status to outlier ejection.
func (r *Router) observeStatus(ep *datastore.Endpoint, status int) {
	if ep.ObserveStatus(r.outlier, status, r.now()) {
		r.ejected(ep, ejectReason5xx)
	}
}

// storePools gives the director the datastore's pools.
type storePools struct{ store *datastore.Store }

// Draining endpoints (their group is being removed) are no candidates.
func (p storePools) Pool(name string) []framework.Endpoint {
	eps := p.store.Pool(name)
	out := make([]framework.Endpoint, 0, len(eps))
	for _, e := range eps {
		if !e.Draining() {
			out = append(out, e)
		}
	}
	return out
}

// Reasons of outlier ejections (the reason label of
// halyard_router_outlier_ejections_total).
const (
	ejectReason5xx       = "5xx"
	ejectReasonConnect   = "connect"
	ejectReasonReset     = "reset"
	ejectReasonTimeout   = "timeout"
	ejectReasonTruncated = "truncated"
)

// observeFailure feeds a gateway failure (no usable answer) to outlier
// ejection; reason is one of the ejectReason constants.
func (r *Router) observeFailure(ep *datastore.Endpoint, reason string) {
	if ep.ObserveGatewayFailure(r.outlier, r.now()) {
		r.ejected(ep, reason)
	}
}

func (r *Router) ejected(ep *datastore.Endpoint, reason string) {
	r.metrics.Ejections.WithLabelValues(ep.Metadata().Name, reason).Inc()
	r.log.Warn("endpoint ejected", "endpoint", ep.Metadata().Name, "reason", reason, "consecutiveFailures", r.outlier.Consecutive5xx, "for", r.outlier.EjectionTime)
}

// pluginLister is what a profile offers when it can list its plugins.
type pluginLister interface {
	Plugins() []framework.Plugin
}

// registerPluginMetrics registers the plugins of the named profiles that
// are Prometheus collectors (the prefix index's size, load overrides, ...)
// on the router's registry, labelled by profile so that two profiles'
// instances of one plugin type do not collide. A collector without
// descriptors is skipped.
func (r *Router) registerPluginMetrics(profiles map[string]*scheduling.Profile, names []string) error {
	for _, name := range names {
		pl, ok := any(profiles[name]).(pluginLister)
		if !ok {
			return nil
		}
		wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"profile": name}, r.metrics.Registry)
		for _, p := range pl.Plugins() {
			c, ok := p.(prometheus.Collector)
			if !ok || !describes(c) {
				continue
			}
			if err := wrapped.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return fmt.Errorf("router: profile %q: register the metrics of plugin %s: %w", name, p.TypedName(), err)
				}
			}
		}
	}
	return nil
}

// describes reports whether c has at least one descriptor.
func describes(c prometheus.Collector) bool {
	ch := make(chan *prometheus.Desc, 16)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	n := 0
	for range ch {
		n++
	}
	return n > 0
}

// ProfileNames returns the names of the built profiles, sorted.
func (r *Router) ProfileNames() []string {
	return slices.Sorted(maps.Keys(r.routes().profiles))
}

// Handler returns the router's HTTP handler.
func (r *Router) Handler() http.Handler { return http.HandlerFunc(r.serveHTTP) }

// serveHTTP serves a request on its cleaned path: ServeMux would answer
// "//v1/chat/completions" (a base URL with a trailing slash) with a
// redirect, which clients do not follow for a POST body, so the router
// merges the slashes and serves it, as Envoy's merge_slashes does.
//
// A request with a Transfer-Encoding may also have carried a Content-Length
// (net/http drops it before the handler sees it): its connection is closed
// after the answer, as RFC 9112 §6.3 asks of such a message.
func (r *Router) serveHTTP(w http.ResponseWriter, hr *http.Request) {
	if len(hr.TransferEncoding) > 0 {
		w.Header().Set("Connection", "close")
	}
	if p := hr.URL.Path; p != "" && p != "/" && path.Clean(p) != p {
		hr2 := *hr
		u := *hr.URL
		u.Path, u.RawPath = path.Clean(p), ""
		hr2.URL = &u
		hr = &hr2
	}
	r.mux.ServeHTTP(w, hr)
}

// Store returns the endpoint store (read-only use).
func (r *Router) Store() *datastore.Store { return r.store }

// Metrics returns the router's metrics.
func (r *Router) Metrics() *observability.RouterMetrics { return r.metrics }

// Run runs discovery and the scrape loop until ctx is done.
func (r *Router) Run(ctx context.Context) error {
	if err := r.prefix.start(ctx); err != nil {
		return err
	}
	defer r.prefix.stop()
	// Discovery has happened once both sources (endpoints, and routes
	// when following a route source) have reported.
	var reported atomic.Int32
	sources := int32(1)
	if r.routeSource != nil {
		sources++
	}
	var endpointsOnce, routesOnce sync.Once
	first := func(once *sync.Once) {
		once.Do(func() {
			if reported.Add(1) == sources {
				r.once.Do(func() { close(r.discovered) })
			}
		})
	}
	errc := make(chan error, 2)
	go func() {
		errc <- r.source.Run(ctx, func(specs []datastore.EndpointSpec) {
			r.syncEndpoints(fromSource, specs)
			first(&endpointsOnce)
		})
	}()
	if r.routeSource != nil {
		go func() {
			err := r.routeSource.Run(ctx, func(set discovery.RouteSet) {
				r.applyRouteSet(set)
				first(&routesOnce)
			})
			if err != nil {
				err = fmt.Errorf("routes: %w", err)
			}
			errc <- err
		}()
	}
	select {
	case <-r.discovered:
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
		return nil
	case <-ctx.Done():
		return nil
	}
	monitored := make(chan struct{})
	go func() {
		defer close(monitored)
		r.prefix.monitor(ctx, r.store, r.cfg.ScrapeInterval.Duration)
	}()
	admitted := make(chan struct{})
	go func() {
		defer close(admitted)
		r.runAdmission(ctx)
	}()
	cerr := r.collector.Run(ctx)
	<-monitored
	<-admitted
	for range sources {
		if err := <-errc; err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
	}
	r.engines.CloseIdleConnections() // the Transport's too
	return cerr
}

// ServeAdmin serves the admin handler (AdminHandler) on ln until ctx is
// done. The admin listener is for operators: bind it to loopback or a
// private network.
func (r *Router) ServeAdmin(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           r.admin,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       r.cfg.Limits.IdleTimeout.Duration,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelWarn),
	}
	stop := context.AfterFunc(ctx, func() { _ = srv.Close() })
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// shutdownErrorWindow is how long requests cut at the end of the shutdown
// grace period get to write their error answers before the connections
// close.
const shutdownErrorWindow = time.Second

// Serve serves on ln and runs the background work until ctx is done, then
// shuts down gracefully, giving in-flight requests up to grace to finish.
func (r *Router) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	srv, ln := r.publicServer(ln)
	srv.ErrorLog = slog.NewLogLogger(r.log.Handler(), slog.LevelWarn)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(runCtx) }()
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	var err error
	runDone := false
	select {
	case <-ctx.Done():
	case err = <-srvErr:
	case err = <-runErr:
		runDone = true
		if err == nil && ctx.Err() == nil {
			err = errors.New("router: background work stopped")
		}
	}
	sctx, scancel := context.WithTimeout(context.Background(), grace)
	defer scancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		// Streams still open after the grace period are cut.
		r.log.Warn("requests still in flight after the shutdown grace period; ending them", "grace", grace, "error", serr)
		r.endHardStop()
		// Give the handlers a moment to write their error answers.
		ectx, ecancel := context.WithTimeout(context.Background(), shutdownErrorWindow)
		if srv.Shutdown(ectx) != nil {
			_ = srv.Close()
		}
		ecancel()
	}
	cancel()
	if !runDone {
		if rerr := <-runErr; rerr != nil && err == nil {
			err = rerr
		}
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
