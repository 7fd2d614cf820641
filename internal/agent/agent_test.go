package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
)

// The control-plane tests (test/integration/k8s) run the agent binary
// against a real API server; these tests cover its state machine against
// client-go's fake clientset, whose watch delivers updates in order.

func newPod(gen, barrier string) *corev1.Pod {
	ann := map[string]string{}
	if gen != "" {
		ann[servingv1.AnnotationRestartGeneration] = gen
	}
	if barrier != "" {
		ann[servingv1.AnnotationBarrier] = barrier
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Annotations: ann}}
}

// startAgent runs an agent on pod. The fake clientset's watch does not
// replay changes made before it starts (a real API server's does, from the
// resource version), so tests wait on watching before they annotate.
func startAgent(t *testing.T, pod *corev1.Pod) (*Agent, *fake.Clientset, chan error, chan struct{}) {
	t.Helper()
	cs := fake.NewClientset(pod)
	watching := make(chan struct{}, 16)
	cs.PrependWatchReactor("pods", func(action k8stesting.Action) (bool, watch.Interface, error) {
		w, err := cs.Tracker().Watch(action.GetResource(), action.GetNamespace())
		if err == nil {
			watching <- struct{}{}
		}
		return true, w, err
	})
	a := New(Options{Pods: cs.CoreV1().Pods("ns"), PodName: "p", Logger: slog.New(slog.DiscardHandler), RetryDelay: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() { done <- a.Run(ctx); close(finished) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return a, cs, done, watching
}

func annotate(t *testing.T, cs *fake.Clientset, key, value string) {
	t.Helper()
	ctx := context.Background()
	pod, err := cs.CoreV1().Pods("ns").Get(ctx, "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Annotations[key] = value
	if _, err := cs.CoreV1().Pods("ns").Update(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func probe(a *Agent) int {
	rec := httptest.NewRecorder()
	a.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/startup", nil))
	return rec.Code
}

func TestBarrierHoldsThenReleases(t *testing.T) {
	a, cs, done, watching := startAgent(t, newPod("2", "1"))
	waitState(t, a, func(s State) bool { return s.Generation == 2 && s.Barrier == 1 })
	<-watching
	if got := probe(a); got != http.StatusServiceUnavailable {
		t.Errorf("startup before the barrier: %d, want 503", got)
	}
	annotate(t, cs, servingv1.AnnotationBarrier, "2")
	select {
	case <-a.Released():
	case err := <-done:
		t.Fatalf("agent ended: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("barrier not seen within 10s")
	}
	if got := probe(a); got != http.StatusOK {
		t.Errorf("startup after the barrier: %d, want 200", got)
	}
}

func TestRestartRequestEndsRun(t *testing.T) {
	a, cs, done, watching := startAgent(t, newPod("0", "0"))
	<-a.Released()
	<-watching
	annotate(t, cs, servingv1.AnnotationRestartGeneration, "1")
	select {
	case err := <-done:
		if !errors.Is(err, ErrRestartGroup) {
			t.Errorf("Run() = %v, want ErrRestartGroup", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("restart request not seen within 10s")
	}
}

func TestStartsUnderCurrentGeneration(t *testing.T) {
	// An agent restarted after the request starts under the new generation
	// and does not exit again.
	a, _, done, _ := startAgent(t, newPod("3", "3"))
	<-a.Released()
	select {
	case err := <-done:
		t.Fatalf("agent ended: %v", err)
	default:
	}
	if s := a.State(); s.Generation != 3 || !s.Released {
		t.Errorf("state %+v", s)
	}
}

func TestMissingAnnotationsMeanGenerationZeroHeld(t *testing.T) {
	a, _, _, _ := startAgent(t, newPod("", ""))
	waitState(t, a, func(s State) bool { return s.Generation == 0 && s.Barrier == -1 && !s.Released })
	if got := probe(a); got != http.StatusServiceUnavailable {
		t.Errorf("startup: %d, want 503", got)
	}
}

func waitState(t *testing.T, a *Agent, ok func(State) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(a.State()) {
		if time.Now().After(deadline) {
			t.Fatalf("state %+v", a.State())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
