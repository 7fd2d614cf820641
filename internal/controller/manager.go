package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// InPlace modes for Options.InPlace.
const (
	InPlaceAuto = "auto" // probe the API server
	InPlaceOn   = "on"
	InPlaceOff  = "off"
)

// Options configure the controller process.
type Options struct {
	// Config reaches the API server.
	Config *rest.Config
	// MetricsAddr serves /metrics; "0" disables it.
	MetricsAddr string
	// ProbeAddr serves /healthz and /readyz; "0" disables it.
	ProbeAddr string
	// LeaderElection runs one active replica among several.
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	// Namespace restricts the controller to one namespace; empty: all.
	Namespace string
	// AgentImage is the image of the injected `halyard agent` container.
	AgentImage string
	// AgentPort is the agent's HTTP port in the pod.
	AgentPort int32
	// AgentEnv is added to the agent's environment (AgentOptions.Env).
	AgentEnv []corev1.EnvVar
	// InPlace is auto (probe), on or off.
	InPlace string
	// ProbeNamespace is where the in-place probe dry-runs its pod.
	ProbeNamespace string
	// Concurrency is the number of ModelServings reconciled at once.
	Concurrency int
	// Logger receives every log line, controller-runtime's included.
	Logger *slog.Logger
	// Clock defaults to the real clock.
	Clock Clock
	// Registerer for the halyard_controller_* metrics; default
	// controller-runtime's registry, served on MetricsAddr.
	Registerer prometheus.Registerer
	// QPS and Burst limit the controller's API requests; defaults 100 and
	// 200 (client-go's 5 and 10 would make a large rollout crawl).
	QPS   float32
	Burst int
	// Weights wires the fetch of model weights (WeightsOptions); an empty
	// Weights.CacheDir turns it off.
	Weights WeightsOptions
	// SkipNameValidation lets one process build several managers (tests).
	SkipNameValidation bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Scheme returns a scheme with the core types and Halyard's.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := servingv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// NewManager builds the manager with both reconcilers, after probing
// in-place restart support.
func NewManager(ctx context.Context, o Options) (manager.Manager, error) {
	if o.Config == nil {
		return nil, errors.New("controller: no API server config")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Registerer == nil {
		o.Registerer = ctrlmetrics.Registry
	}
	if o.LeaderElectionID == "" {
		o.LeaderElectionID = "halyard-controller.serving.halyard.dev"
	}
	if o.ProbeNamespace == "" {
		o.ProbeNamespace = "default"
		if o.Namespace != "" {
			o.ProbeNamespace = o.Namespace
		}
	}
	if o.AgentPort == 0 {
		o.AgentPort = servingv1.DefaultAgentPort
	}
	if o.QPS == 0 {
		o.QPS = 100
	}
	if o.Burst == 0 {
		o.Burst = 200
	}
	o.Config = rest.CopyConfig(o.Config)
	o.Config.QPS, o.Config.Burst = o.QPS, o.Burst
	scheme, err := Scheme()
	if err != nil {
		return nil, err
	}
	log := logr.FromSlogHandler(o.Logger.Handler())
	ctrl.SetLogger(log)

	inPlace, reason, err := decideInPlace(ctx, o, scheme)
	if err != nil {
		return nil, err
	}
	o.Logger.Info("in-place group restart", "enabled", inPlace, "reason", reason)

	managed, err := labels.NewRequirement(servingv1.LabelModelServing, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	reports, err := labels.NewRequirement(servingv1.LabelWeightsReport, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	cacheOpts := cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			// Only Halyard's pods and services: the cache stays small on
			// big clusters.
			&corev1.Pod{}:     {Label: labels.NewSelector().Add(*managed)},
			&corev1.Service{}: {Label: labels.NewSelector().Add(*managed)},
			// Only the fetchers' progress reports among the Events.
			&corev1.Event{}: {Label: labels.NewSelector().Add(*reports)},
		},
	}
	if o.Namespace != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{o.Namespace: {}}
	}
	mgr, err := ctrl.NewManager(o.Config, ctrl.Options{
		Scheme: scheme,
		Logger: log,
		Cache:  cacheOpts,
		// The agent's RoleBinding is read by name from the API server:
		// caching RoleBindings would need list and watch on all of them.
		Client:                        client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&rbacv1.RoleBinding{}}}},
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress:        o.ProbeAddr,
		LeaderElection:                o.LeaderElection,
		LeaderElectionID:              o.LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Controller:                    ctrlconfig.Controller{SkipNameValidation: &o.SkipNameValidation},
	})
	if err != nil {
		return nil, fmt.Errorf("new manager: %w", err)
	}
	if o.ProbeAddr != "0" && o.ProbeAddr != "" {
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
			return nil, err
		}
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, indexNodeName, indexPodNodeName); err != nil {
		return nil, fmt.Errorf("index pods by node: %w", err)
	}
	metrics, err := NewMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	if inPlace {
		metrics.InPlaceRestart.Set(1)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(o.Config)
	if err != nil {
		return nil, err
	}
	volcano := &VolcanoDetector{Discovery: dc, TTL: 30 * time.Second, Now: o.Clock.Now}
	msr := &ModelServingReconciler{
		Client:        mgr.GetClient(),
		Recorder:      mgr.GetEventRecorder("halyard-controller"),
		Clock:         o.Clock,
		Logger:        o.Logger,
		Agent:         AgentOptions{Image: o.AgentImage, Port: o.AgentPort, InPlace: inPlace, Env: o.AgentEnv},
		InPlaceReason: reason,
		Volcano:       volcano.Present,
		Metrics:       metrics,
		Weights:       o.Weights,
	}
	if err := msr.SetupWithManager(mgr, o.Concurrency); err != nil {
		return nil, fmt.Errorf("set up modelserving controller: %w", err)
	}
	if err := (&ModelRouteReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("set up modelroute controller: %w", err)
	}
	return mgr, nil
}

func decideInPlace(ctx context.Context, o Options, scheme *runtime.Scheme) (bool, string, error) {
	switch o.InPlace {
	case InPlaceOn:
		return true, "forced on (--in-place=on)", nil
	case InPlaceOff:
		return false, "turned off (--in-place=off)", nil
	case InPlaceAuto, "":
	default:
		return false, "", fmt.Errorf("controller: in-place mode %q: want auto, on or off", o.InPlace)
	}
	c, err := client.New(o.Config, client.Options{Scheme: scheme})
	if err != nil {
		return false, "", fmt.Errorf("probe client: %w", err)
	}
	ok, reason, err := ProbeInPlaceRestart(ctx, c, o.ProbeNamespace, o.AgentImage)
	if err != nil {
		o.Logger.Warn("in-place restart probe failed; recovering by recreating groups", "err", err)
		return false, "probe failed: " + err.Error(), nil
	}
	return ok, reason, nil
}

// Run builds the manager and runs it until ctx ends.
func Run(ctx context.Context, o Options) error {
	mgr, err := NewManager(ctx, o)
	if err != nil {
		return err
	}
	return mgr.Start(ctx)
}
