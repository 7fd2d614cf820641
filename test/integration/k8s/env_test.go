package k8s

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
	"github.com/halyard-dev/halyard/internal/testbin"
)

// testQPS is the controller's API rate limit in tests;
// HALYARD_K8S_QPS overrides it (the convergence measurement compares).
var testQPS = func() float32 {
	if v, err := strconv.ParseFloat(os.Getenv("HALYARD_K8S_QPS"), 32); err == nil && v > 0 {
		return float32(v)
	}
	return 100
}()

const featureGates = "RestartAllContainersOnContainerExits=true,NodeDeclaredFeatures=true"

// repoRoot is the module root, found from this file's path.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// requireK8s tells whether a missing control plane fails the tests instead
// of skipping them: with HALYARD_REQUIRE_K8S=1 (`make test`) or in CI.
func requireK8s() bool {
	return os.Getenv("HALYARD_REQUIRE_K8S") == "1" || os.Getenv("CI") == "true"
}

// requireControlPlane skips (or, with HALYARD_REQUIRE_K8S=1 or CI=true,
// fails) when the control-plane binaries are not available.
func requireControlPlane(t *testing.T) string {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		if requireK8s() {
			t.Fatal("KUBEBUILDER_ASSETS is unset but HALYARD_REQUIRE_K8S=1 or CI=true: build the control plane with hack/controlplane.sh build and export KUBEBUILDER_ASSETS=.k8scp/bin")
		}
		t.Skip("KUBEBUILDER_ASSETS is unset: run hack/controlplane.sh build and export KUBEBUILDER_ASSETS=$PWD/.k8scp/bin to run the control-plane tests")
	}
	return assets
}

// requireTool finds a binary in KUBEBUILDER_ASSETS or on PATH.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	if p := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), name); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if requireK8s() {
		t.Fatalf("%s not found in KUBEBUILDER_ASSETS or PATH but HALYARD_REQUIRE_K8S=1 or CI=true", name)
	}
	t.Skipf("%s not found in KUBEBUILDER_ASSETS or PATH", name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// cluster is one envtest API server with Halyard's CRDs (and the Volcano
// PodGroup stand-in) installed.
type cluster struct {
	env        *envtest.Environment
	cfg        *rest.Config
	c          client.Client
	kubeconfig string
}

// startCluster starts an API server with the given feature gates ("" for
// none) and stops it when the test ends.
func startCluster(t *testing.T, gates string) *cluster {
	t.Helper()
	requireControlPlane(t)
	k, err := newCluster(gates, t.TempDir(), t.Cleanup)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newCluster starts an API server; cleanup receives its stop function.
func newCluster(gates, dir string, cleanup func(func())) (*cluster, error) {
	root := repoRoot()
	env := &envtest.Environment{
		CRDDirectoryPaths: []string{
			filepath.Join(root, "config", "crd", "bases"),
			filepath.Join(root, "test", "integration", "k8s", "testdata"),
		},
		ErrorIfCRDPathMissing: true,
	}
	if gates != "" {
		env.ControlPlane.GetAPIServer().Configure().Append("feature-gates", gates)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start envtest: %w", err)
	}
	cleanup(func() { _ = env.Stop() })
	scheme, err := controller.Scheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	user, err := env.AddUser(envtest.User{Name: "test-admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		return nil, fmt.Errorf("add user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		return nil, err
	}
	return &cluster{env: env, cfg: cfg, c: c, kubeconfig: path}, nil
}

// The shared cluster serves most tests: one API server with the in-place
// gate on, one controller with a fake clock; each test uses its own
// namespace. TestMain stops it.
var shared struct {
	once  sync.Once
	k     *cluster
	clock *fakeClock
	err   error
	stop  []func()
	dir   string
}

func sharedCluster(t *testing.T) (*cluster, *fakeClock) {
	t.Helper()
	requireControlPlane(t)
	shared.once.Do(func() {
		cleanup := func(f func()) { shared.stop = append(shared.stop, f) }
		shared.dir, shared.err = os.MkdirTemp("", "halyard-k8s-")
		if shared.err != nil {
			return
		}
		shared.k, shared.err = newCluster(featureGates, shared.dir, cleanup)
		if shared.err != nil {
			return
		}
		shared.clock = newFakeClock()
		shared.err = shared.k.startController(shared.clock, controller.InPlaceAuto, io.Discard, cleanup)
	})
	if shared.err != nil {
		t.Fatalf("shared cluster: %v", shared.err)
	}
	return shared.k, shared.clock
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(shared.stop) - 1; i >= 0; i-- {
		shared.stop[i]()
	}
	if shared.dir != "" {
		_ = os.RemoveAll(shared.dir)
	}
	testbin.Remove()
	os.Exit(code)
}

// fakeClock is a settable clock for the controller's timeouts.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }

func (f *fakeClock) Advance(d time.Duration) { f.mu.Lock(); f.now = f.now.Add(d); f.mu.Unlock() }

// testLogger writes the controller's logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// runController runs the controller in-process until the test ends.
func (k *cluster) runController(t *testing.T, clock controller.Clock, inPlace string) {
	t.Helper()
	out := io.Discard
	if os.Getenv("HALYARD_TEST_LOGS") == "1" {
		out = testWriter{t}
	}
	if err := k.startController(clock, inPlace, out, t.Cleanup); err != nil {
		t.Fatal(err)
	}
}

// startController runs a controller manager until cleanup runs; mods
// change its options.
func (k *cluster) startController(clock controller.Clock, inPlace string, logs io.Writer, cleanup func(func()), mods ...func(*controller.Options)) error {
	ctx, cancel := context.WithCancel(context.Background())
	if os.Getenv("HALYARD_TEST_LOGS") == "1" && logs == io.Discard {
		logs = os.Stderr
	}
	opts := controller.Options{
		Config: k.cfg, MetricsAddr: "0", ProbeAddr: "0",
		AgentImage: "halyard:test", InPlace: inPlace, Concurrency: 2,
		Logger: slog.New(slog.NewTextHandler(logs, nil)), Clock: clock,
		Registerer: prometheus.NewRegistry(), SkipNameValidation: true,
		QPS: testQPS, Burst: 2 * int(testQPS),
	}
	for _, m := range mods {
		m(&opts)
	}
	mgr, err := controller.NewManager(ctx, opts)
	if err != nil {
		cancel()
		return fmt.Errorf("new manager: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				fmt.Fprintln(os.Stderr, "controller manager:", err)
			}
		case <-time.After(30 * time.Second):
		}
	})
	return nil
}

// namespace creates a fresh namespace for one test.
func (k *cluster) namespace(t *testing.T, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k.c.Create(context.Background(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	return name
}

// eventually polls cond until it returns true or the deadline passes; the
// message of the last attempt explains a failure.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pods lists the pods of a ModelServing.
func (k *cluster) pods(t *testing.T, ns, ms string) []corev1.Pod {
	t.Helper()
	var list corev1.PodList
	if err := k.c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{servingv1.LabelModelServing: ms}); err != nil {
		t.Fatalf("list pods: %v", err)
	}
	return list.Items
}

func (k *cluster) get(t *testing.T, ns, name string) *servingv1.ModelServing {
	t.Helper()
	ms := &servingv1.ModelServing{}
	if err := k.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ms); err != nil {
		t.Fatalf("get modelserving: %v", err)
	}
	return ms
}

// events returns the notes of the events about a ModelServing with reason.
func (k *cluster) events(t *testing.T, ns, name, reason string) []string {
	t.Helper()
	// The controller's event recorder writes asynchronously, so wait (up to
	// waitLong) for the first matching event before reading them all.
	var out []string
	deadline := time.Now().Add(waitLong)
	for {
		var list eventsv1.EventList
		if err := k.c.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
			t.Fatalf("list events: %v", err)
		}
		out = out[:0]
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Reason == reason {
				out = append(out, e.Note)
			}
		}
		if len(out) > 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// poke changes an annotation so the controller reconciles at once (after a
// fake clock jump).
func (k *cluster) poke(t *testing.T, ns, name string) {
	t.Helper()
	ms := k.get(t, ns, name)
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"test/poke":%q}}}`, time.Now().Format(time.RFC3339Nano))
	if err := k.c.Patch(context.Background(), ms, client.RawPatch("application/merge-patch+json", []byte(patch))); err != nil {
		t.Fatalf("poke: %v", err)
	}
}

// halyardBinary is this checkout's halyard binary, built once per test
// process (TestMain removes it).
func halyardBinary(t *testing.T) string {
	t.Helper()
	path, err := testbin.Halyard()
	if err != nil {
		t.Fatal(err)
	}
	return path
}
