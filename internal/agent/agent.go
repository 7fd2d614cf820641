package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// ErrRestartGroup is returned by Run when the controller asked the group to
// restart; the process must exit with servingv1.ExitCodeRestartGroup.
var ErrRestartGroup = errors.New("group restart requested")

// Pods is the part of a typed pod client the agent uses
// (k8s.io/client-go/kubernetes/typed/core/v1.PodInterface satisfies it).
type Pods interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Pod, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// Options configure the agent.
type Options struct {
	// Pods reaches the pod's namespace.
	Pods Pods
	// PodName is the agent's own pod.
	PodName string
	// Listener serves /startup, /healthz and /state; nil serves nothing
	// (tests read State instead).
	Listener net.Listener
	// Logger for structured logs.
	Logger *slog.Logger
	// RetryDelay between failed API calls; default 1s.
	RetryDelay time.Duration
}

// State is what the agent knows, served as JSON on /state.
type State struct {
	// Generation is the restart generation the agent started under.
	Generation int64 `json:"generation"`
	// Barrier is the released barrier generation last seen (-1: none).
	Barrier int64 `json:"barrier"`
	// Released is true once Barrier >= Generation.
	Released bool `json:"released"`
}

// Agent is one running agent.
type Agent struct {
	o  Options
	mu sync.Mutex
	st State
	// released is closed when the barrier is first released.
	released     chan struct{}
	releasedOnce sync.Once
}

// New returns an agent; Run starts it.
func New(o Options) *Agent {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RetryDelay <= 0 {
		o.RetryDelay = time.Second
	}
	return &Agent{o: o, st: State{Barrier: -1}, released: make(chan struct{})}
}

// State returns a snapshot of the agent's state.
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// Released is closed once the barrier is released.
func (a *Agent) Released() <-chan struct{} { return a.released }

// Run reads the pod, serves the probes and watches the pod until ctx ends
// (nil) or a restart is requested (ErrRestartGroup).
func (a *Agent) Run(ctx context.Context) error {
	pod, err := a.getPod(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.st.Generation = annotationInt(pod, servingv1.AnnotationRestartGeneration, 0)
	a.mu.Unlock()
	a.o.Logger.Info("agent started", "pod", a.o.PodName, "generation", a.st.Generation)
	a.observe(pod)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if a.o.Listener != nil {
		srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 5 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(a.o.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.o.Logger.Error("agent http server", "err", err)
			}
		}()
		defer func() {
			sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer scancel()
			_ = srv.Shutdown(sctx)
			wg.Wait()
		}()
	}
	if a.restartRequested(pod) {
		return a.restart(pod)
	}
	rv := pod.ResourceVersion
	for {
		err := a.watch(ctx, rv)
		if errors.Is(err, ErrRestartGroup) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			a.o.Logger.Warn("watch of own pod ended", "err", err)
		}
		// Start over from a fresh read: the watch may have missed events.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.o.RetryDelay):
		}
		pod, err := a.getPod(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		a.observe(pod)
		if a.restartRequested(pod) {
			return a.restart(pod)
		}
		rv = pod.ResourceVersion
	}
}

func (a *Agent) getPod(ctx context.Context) (*corev1.Pod, error) {
	for {
		pod, err := a.o.Pods.Get(ctx, a.o.PodName, metav1.GetOptions{})
		if err == nil {
			return pod, nil
		}
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return nil, fmt.Errorf("read own pod %s: %w", a.o.PodName, err)
		}
		a.o.Logger.Warn("read own pod", "pod", a.o.PodName, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(a.o.RetryDelay):
		}
	}
}

func (a *Agent) watch(ctx context.Context, rv string) error {
	w, err := a.o.Pods.Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", a.o.PodName).String(),
		ResourceVersion: rv,
	})
	if err != nil {
		return fmt.Errorf("watch own pod: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return errors.New("watch closed")
			}
			if ev.Type == watch.Error {
				return fmt.Errorf("watch error: %w", apierrors.FromObject(ev.Object))
			}
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			a.observe(pod)
			if a.restartRequested(pod) {
				return a.restart(pod)
			}
		}
	}
}

func (a *Agent) observe(pod *corev1.Pod) {
	b := annotationInt(pod, servingv1.AnnotationBarrier, -1)
	a.mu.Lock()
	defer a.mu.Unlock()
	if b > a.st.Barrier {
		a.st.Barrier = b
	}
	if !a.st.Released && a.st.Barrier >= a.st.Generation {
		a.st.Released = true
		a.o.Logger.Info("barrier released", "generation", a.st.Generation, "barrier", a.st.Barrier)
		a.releasedOnce.Do(func() { close(a.released) })
	}
}

func (a *Agent) restartRequested(pod *corev1.Pod) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return annotationInt(pod, servingv1.AnnotationRestartGeneration, 0) > a.st.Generation
}

func (a *Agent) restart(pod *corev1.Pod) error {
	g := annotationInt(pod, servingv1.AnnotationRestartGeneration, 0)
	a.o.Logger.Info("group restart requested; exiting so the kubelet restarts every container",
		"generation", a.State().Generation, "requested", g, "exit_code", servingv1.ExitCodeRestartGroup)
	return ErrRestartGroup
}

// Handler serves /startup (200 once the barrier is released, else 503),
// /healthz (200) and /state (JSON).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /startup", func(w http.ResponseWriter, _ *http.Request) {
		st := a.State()
		if !st.Released {
			http.Error(w, fmt.Sprintf("waiting for the group barrier: generation %d, released %d", st.Generation, st.Barrier), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.State())
	})
	return mux
}

func annotationInt(pod *corev1.Pod, key string, def int64) int64 {
	v, ok := pod.Annotations[key]
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return def
	}
	return n
}
