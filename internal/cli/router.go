package cli

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"k8s.io/client-go/dynamic"
	kubeclient "k8s.io/client-go/kubernetes"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/admission/secretkeys"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/local"
	"github.com/halyard-dev/halyard/internal/observability"
	"github.com/halyard-dev/halyard/internal/router"
)

// routerOptions are the flags of `halyard router`.
type routerOptions struct {
	configPath string
	listen     string
	admin      string
	logLevel   string
	logFormat  string
	grace      time.Duration
	pprof      string
	check      bool
	kubernetes bool
	kubeconfig string
	namespace  string
	routesFrom string
	gogc       int
}

// Values of --routes-from.
const (
	routesFromConfig     = "config"
	routesFromKubernetes = "kubernetes"
	routesFromBoth       = "both"
)

// routeOrigins resolves --routes-from against --kubernetes: whether the
// config file's routes and the ModelRoutes are used.
func (o *routerOptions) routeOrigins() (fromConfig, fromKubernetes bool, err error) {
	v := o.routesFrom
	if v == "" {
		v = routesFromConfig
		if o.kubernetes {
			v = routesFromBoth
		}
	}
	switch v {
	case routesFromConfig:
		return true, false, nil
	case routesFromKubernetes, routesFromBoth:
		if !o.kubernetes {
			return false, false, fmt.Errorf("--routes-from=%s needs --kubernetes", v)
		}
		return v == routesFromBoth, true, nil
	}
	return false, false, fmt.Errorf("--routes-from: must be config, kubernetes or both, got %q", v)
}

func newRouterCommand() *cobra.Command {
	var o routerOptions
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Run the OpenAI-compatible router",
		Long: `Serve the OpenAI-compatible API (/v1/chat/completions, /v1/completions,
/v1/models) in front of the engines of the config file's endpoints block,
with /health and /ready; /metrics and /debug/route are on the admin listener
(--admin-listen, 127.0.0.1 on the public port plus one by default). See
docs/router.md.

With --kubernetes the endpoints are the ready pods of ModelServings (pool
"<namespace>/<name>"), and routes come from ModelRoute objects, followed live,
as well as from the config file (--routes-from). See docs/kubernetes.md.`,
		Example: `  halyard router --config examples/one-model.yaml
  halyard router --config examples/canary.yaml --listen 0.0.0.0:8080 --log-level debug
  halyard router --config router.yaml --kubernetes --namespace team-a --routes-from kubernetes`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.configPath == "" {
				return fmt.Errorf("--config is required")
			}
			fromConfig, fromKubernetes, err := o.routeOrigins()
			if err != nil {
				return err
			}
			cfg, err := config.Load(o.configPath)
			if err != nil {
				return err
			}
			if !fromConfig {
				cfg.Routes = nil
			}
			if o.listen != "" {
				cfg.Router.Listen = o.listen
			}
			if o.admin != "" {
				cfg.Router.AdminListen = o.admin
			}
			log, err := observability.NewLogger(os.Stderr, o.logLevel, o.logFormat)
			if err != nil {
				return err
			}
			reg, presets, err := pluginRegistry()
			if err != nil {
				return err
			}
			ropts := router.Options{Config: cfg, Registry: reg, PresetProfiles: presets, Logger: log}
			if !o.check {
				tp, flush, err := setupTracing(cmd.Context(), cfg.Tracing, "halyard-router", log)
				if err != nil {
					return err
				}
				defer flush()
				ropts.TracerProvider = tp
			}
			if o.check {
				// Everything the file says, without serving or reaching
				// a Kubernetes API server; engines[] as halyard up would
				// start them.
				if err := local.CheckEngines(cfg); err != nil {
					return fmt.Errorf("%s: %w", o.configPath, err)
				}
				r, err := router.New(ropts)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: valid (%d routes, %d endpoints, %d engines, profiles %v)\n",
					o.configPath, len(cfg.Routes), len(cfg.Endpoints), len(cfg.Engines), r.ProfileNames())
				return err
			}
			if secrets := admission.KeySecrets(cfg); len(secrets) > 0 {
				restCfg, err := restConfig(o.kubeconfig)
				if err != nil {
					return fmt.Errorf("tenants' key secrets: %w", err)
				}
				cs, err := kubeclient.NewForConfig(restCfg)
				if err != nil {
					return fmt.Errorf("kubernetes client: %w", err)
				}
				ropts.KeySource = &secretkeys.Follower{Client: cs, Secrets: secrets, Log: log}
			}
			if o.kubernetes {
				restCfg, err := restConfig(o.kubeconfig)
				if err != nil {
					return err
				}
				cs, err := kubeclient.NewForConfig(restCfg)
				if err != nil {
					return fmt.Errorf("kubernetes client: %w", err)
				}
				ropts.Source = &discovery.Kubernetes{Client: cs, Namespace: o.namespace, Log: log}
				if fromKubernetes {
					dc, err := dynamic.NewForConfig(restCfg)
					if err != nil {
						return fmt.Errorf("kubernetes client: %w", err)
					}
					ropts.Routes = &discovery.ModelRoutes{Client: dc, Namespace: o.namespace, Log: log}
				}
			}
			r, err := router.New(ropts)
			if err != nil {
				return err
			}
			budget := cfg.Router.Limits.BufferBytes
			if budget <= 0 {
				budget = router.DefaultBufferBytes()
			}
			applyRouterGC(o.gogc, budget, log)
			ln, err := net.Listen("tcp", cfg.Router.Listen)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			if o.pprof != "" {
				if err := servePprof(cmd.Context(), o.pprof, log); err != nil {
					return err
				}
			}
			adminAddr := "off"
			if a := cfg.Router.AdminAddress(); a != "" {
				aln, err := net.Listen("tcp", a)
				if err != nil {
					return fmt.Errorf("admin listen: %w", err)
				}
				adminAddr = aln.Addr().String()
				go func() {
					if err := r.ServeAdmin(cmd.Context(), aln); err != nil {
						log.Error("admin listener stopped", "error", err)
					}
				}()
			}
			log.Info("router serving", "addr", ln.Addr().String(), "admin_addr", adminAddr, "config", o.configPath, "routes", len(cfg.Routes), "endpoints", len(cfg.Endpoints), "modelRoutes", fromKubernetes)
			err = r.Serve(cmd.Context(), ln, o.grace)
			log.Info("router stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.configPath, "config", "", "configuration file (required)")
	f.StringVar(&o.listen, "listen", "", "address to serve on (default: router.listen of the config)")
	f.StringVar(&o.admin, "admin-listen", "", `admin listener (/metrics, /debug/route, pprof with router.debug.pprof): default router.adminListen, else 127.0.0.1 on the public port plus one; "off" for none`)
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.BoolVar(&o.check, "check", false, "load the config, build the profiles, report and exit without serving")
	f.StringVar(&o.pprof, "pprof-listen", "", "serve Go's /debug/pprof on this address (off by default)")
	f.BoolVar(&o.kubernetes, "kubernetes", false, "discover endpoints from the ready pods of ModelServings instead of the config's endpoints block")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "with --kubernetes: kubeconfig file; default $KUBECONFIG, in-cluster, ~/.kube/config")
	f.StringVar(&o.namespace, "namespace", "", "with --kubernetes: only this namespace (pods and ModelRoutes); default all")
	f.StringVar(&o.routesFrom, "routes-from", "", "where routes come from: config (the file's routes), kubernetes (ModelRoute objects, live) or both (the file's first, winning a model both name); default both with --kubernetes, else config")
	f.IntVar(&o.gogc, "gogc", defaultRouterGOGC, "garbage collector target percentage (GOGC) unless the GOGC variable is set; 0 keeps Go's default. Unless GOMEMLIMIT is set, a soft memory limit is set too: 90% of a cgroup memory limit, else half the machine's memory, or twice router.limits.bufferBytes plus 256 MiB when less")
	f.DurationVar(&o.grace, "shutdown-grace", 10*time.Second, "time in-flight requests get to finish on shutdown")
	return cmd
}
