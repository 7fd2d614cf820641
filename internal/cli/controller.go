package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/halyard-dev/halyard/internal/controller"
	"github.com/halyard-dev/halyard/internal/weights/dragonfly"
)

type controllerFlags struct {
	kubeconfig     string
	metricsAddr    string
	probeAddr      string
	leaderElect    bool
	leaderNS       string
	namespace      string
	agentImage     string
	agentPort      int32
	agentEnv       []string
	inPlace        string
	probeNamespace string
	concurrency    int
	qps            float32
	burst          int
	logFormat      string
	logLevel       string
	routerSignals  []string
	autoscaleEvery time.Duration

	// Model weights.
	nodeCacheDir, fetchImage, hfEndpoint, msEndpoint, nodeCacheMax     string
	dfProxy, dfManager, dfTokenFile, dfTag, dfApp, dfScope, dfCASecret string
	dfGate                                                             time.Duration
	weightsTimeout                                                     time.Duration
}

func newControllerCommand() *cobra.Command {
	f := &controllerFlags{}
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the Kubernetes controller",
		Long: `Run the Kubernetes controller: it reconciles ModelServing objects into
serving groups of pods (gang creation, topology packing, group-by-group
rollout, in-place group restart) and checks ModelRoute objects.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := k8sLogger(cmd.ErrOrStderr(), f.logFormat, f.logLevel)
			if err != nil {
				return err
			}
			cfg, err := restConfig(f.kubeconfig)
			if err != nil {
				return err
			}
			agentEnv, err := envVars(f.agentEnv)
			if err != nil {
				return err
			}
			var signals controller.SignalSource
			for _, u := range f.routerSignals {
				if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
					return fmt.Errorf("--router-signals %q: want an http(s) URL of a router's admin listener", u)
				}
			}
			if len(f.routerSignals) > 0 {
				signals = &controller.RouterSignals{URLs: f.routerSignals}
			}
			w, err := f.weights()
			if err != nil {
				return err
			}
			return controller.Run(cmd.Context(), controller.Options{
				AutoscaleSignals:        signals,
				AutoscaleInterval:       f.autoscaleEvery,
				Weights:                 w,
				Config:                  cfg,
				MetricsAddr:             f.metricsAddr,
				ProbeAddr:               f.probeAddr,
				LeaderElection:          f.leaderElect,
				LeaderElectionNamespace: f.leaderNS,
				Namespace:               f.namespace,
				AgentImage:              f.agentImage,
				AgentPort:               f.agentPort,
				AgentEnv:                agentEnv,
				InPlace:                 f.inPlace,
				ProbeNamespace:          f.probeNamespace,
				Concurrency:             f.concurrency,
				QPS:                     f.qps,
				Burst:                   f.burst,
				Logger:                  logger,
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG, in-cluster config, then ~/.kube/config")
	fl.StringVar(&f.metricsAddr, "metrics-bind-address", ":8082", "address of /metrics (not :8080, the router's and halyard up's port); 0 disables it")
	fl.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz; 0 disables them")
	fl.BoolVar(&f.leaderElect, "leader-elect", false, "elect one active controller among replicas (a Lease)")
	fl.StringVar(&f.leaderNS, "leader-election-namespace", "", "namespace of the leader election Lease; default the pod's namespace")
	fl.StringVar(&f.namespace, "namespace", "", "watch only this namespace; default all")
	fl.StringVar(&f.agentImage, "agent-image", "ghcr.io/halyard-dev/halyard:"+Version, "image of the injected halyard agent container")
	fl.Int32Var(&f.agentPort, "agent-port", 8099, "port of the agent's /startup and /healthz in each pod")
	fl.StringArrayVar(&f.agentEnv, "agent-env", nil, "NAME=VALUE added to the agent's environment (repeatable), e.g. KUBERNETES_SERVICE_HOST where the service network does not reach the API server")
	fl.StringVar(&f.inPlace, "in-place", controller.InPlaceAuto, "in-place group restart: auto (probe the API server), on or off")
	fl.StringVar(&f.probeNamespace, "probe-namespace", "", "namespace of the in-place probe's dry-run pod; default --namespace or default")
	fl.IntVar(&f.concurrency, "concurrency", 4, "ModelServings reconciled at once")
	fl.Float32Var(&f.qps, "kube-api-qps", 100, "API requests per second (sustained)")
	fl.IntVar(&f.burst, "kube-api-burst", 200, "API requests in a burst")
	fl.StringVar(&f.logFormat, "log-format", "json", "log format: json or text")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringArrayVar(&f.routerSignals, "router-signals", nil, "admin listener URL of a router (repeatable), e.g. http://halyard-router-admin:8081; turns on the autoscaler for ModelServings with spec.autoscaling")
	fl.DurationVar(&f.autoscaleEvery, "autoscale-interval", 5*time.Second, "time between autoscaling decisions")
	fl.StringVar(&f.nodeCacheDir, "node-cache-dir", "/var/cache/halyard", "node directory (hostPath) the injected halyard-fetch init container fetches model weights into; empty: no fetch")
	fl.StringVar(&f.fetchImage, "fetch-image", "", "image of the fetch init container; default --agent-image")
	fl.StringVar(&f.hfEndpoint, "hf-endpoint", "", "HF_ENDPOINT given to the fetches (and to the preheat's listing); default the public hub")
	fl.StringVar(&f.msEndpoint, "modelscope-endpoint", "", "MODELSCOPE_ENDPOINT given to the fetches of modelscope:// sources (and to the preheat's listing); default the public ModelScope hub")
	fl.StringVar(&f.nodeCacheMax, "node-cache-max-bytes", "", "bound of the node cache (e.g. 500Gi): the fetch evicts least recently used models")
	fl.StringVar(&f.dfProxy, "dragonfly-proxy", "http://$(HOST_IP):4001", "the node's dfdaemon proxy for distribution: dragonfly ($(HOST_IP) is the node's IP)")
	fl.StringVar(&f.dfManager, "dragonfly-manager", "", "Dragonfly manager URL (e.g. http://dragonfly-manager.dragonfly-system:8080): preheat new revisions of distribution: dragonfly; empty: no preheat")
	fl.StringVar(&f.dfTokenFile, "dragonfly-token-file", "", "file holding the manager's personal access token (scope job), e.g. a mounted Secret")
	fl.StringVar(&f.dfTag, "dragonfly-tag", "", "X-Dragonfly-Tag of the fetches and preheats")
	fl.StringVar(&f.dfApp, "dragonfly-application", "", "X-Dragonfly-Application of the fetches and preheats")
	fl.StringVar(&f.dfScope, "dragonfly-preheat-scope", "all_seed_peers", "preheat scope: single_seed_peer, all_seed_peers or all_peers")
	fl.StringVar(&f.dfCASecret, "dragonfly-ca-secret", "", "Secret (in each ModelServing's namespace) whose key ca.crt is dfdaemon's proxy CA, mounted into the fetches for https origins")
	fl.DurationVar(&f.dfGate, "dragonfly-preheat-gate", 5*time.Minute, "how long the pods of a new revision wait for its preheat job before they are created (until the job ends or this elapses; the Preheated condition says which); 0: they do not wait")
	fl.DurationVar(&f.weightsTimeout, "weights-timeout", time.Hour, "how long a new group waits for every pod's weights (from the creation of its pods) before it is recreated (reason WeightsTimeout); 0: no bound")
	return cmd
}

// weights builds the weights wiring from the flags.
func (f *controllerFlags) weights() (controller.WeightsOptions, error) {
	w := controller.WeightsOptions{CacheDir: f.nodeCacheDir, Image: f.fetchImage, HFEndpoint: f.hfEndpoint, ModelScopeEndpoint: f.msEndpoint, DragonflyProxy: f.dfProxy,
		DragonflyTag: f.dfTag, DragonflyApplication: f.dfApp, PreheatGate: f.dfGate, DragonflyCASecret: f.dfCASecret,
		Timeout: f.weightsTimeout}
	if f.nodeCacheMax != "" {
		q, err := resource.ParseQuantity(f.nodeCacheMax)
		if err != nil || q.Sign() <= 0 {
			return w, fmt.Errorf("--node-cache-max-bytes %q: want a positive size such as 500Gi", f.nodeCacheMax)
		}
		w.MaxCacheBytes = q.Value()
	}
	if f.dfManager != "" {
		token := ""
		if f.dfTokenFile != "" {
			b, err := os.ReadFile(f.dfTokenFile)
			if err != nil {
				return w, fmt.Errorf("--dragonfly-token-file: %w", err)
			}
			token = strings.TrimSpace(string(b))
		}
		w.Preheater = &controller.DragonflyPreheater{
			Manager:    dragonfly.Manager{URL: f.dfManager, Token: token},
			HFEndpoint: f.hfEndpoint, ModelScopeEndpoint: f.msEndpoint, Tag: f.dfTag, Application: f.dfApp, Scope: f.dfScope,
		}
	}
	return w, nil
}

// envVars parses NAME=VALUE pairs.
func envVars(pairs []string) ([]corev1.EnvVar, error) {
	var out []corev1.EnvVar
	for _, p := range pairs {
		name, value, ok := strings.Cut(p, "=")
		if !ok || name == "" {
			return nil, fmt.Errorf("--agent-env %q: want NAME=VALUE", p)
		}
		out = append(out, corev1.EnvVar{Name: name, Value: value})
	}
	return out, nil
}

// restConfig loads the API server config from path, or the usual places.
func restConfig(path string) (*rest.Config, error) {
	if path != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("find API server config: %w", err)
	}
	return cfg, nil
}

// k8sLogger builds the slog logger of the controller and the agent.
func k8sLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want json or text", format)
	}
}
