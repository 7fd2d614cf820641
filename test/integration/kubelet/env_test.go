package kubelet

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	servingv1 "github.com/halyard-dev/halyard/api/v1alpha1"
	"github.com/halyard-dev/halyard/internal/controller"
	"github.com/halyard-dev/halyard/internal/testbin"
)

// The kubelet's image of this checkout's halyard binary (hack/kubelet.sh).
const halyardImage = "halyard.local/halyard:test"

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// requireKubelet returns the control plane assets when this machine can run
// the kubelet test and it was asked for (HALYARD_REQUIRE_KUBELET=1, set by
// make test-kubelet); then anything missing fails the test. Otherwise the
// test skips, saying why: it is timing sensitive and runs alone, not beside
// every other package of `go test ./...`.
func requireKubelet(t *testing.T) string {
	t.Helper()
	if os.Getenv("HALYARD_REQUIRE_KUBELET") != "1" {
		t.Skip("the real-kubelet test runs alone, not inside go test ./...: make test-kubelet " +
			"(make test runs it after the other packages where hack/kubelet.sh host allows, else prints why not)")
	}
	var why []string
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		why = append(why, "KUBEBUILDER_ASSETS is unset (hack/controlplane.sh build; export KUBEBUILDER_ASSETS=$PWD/.k8scp/bin)")
	}
	out, err := exec.Command(filepath.Join(repoRoot(), "hack", "kubelet.sh"), "check").CombinedOutput()
	if err != nil {
		why = append(why, strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "; "))...)
		why = []string{strings.Join(why, " ")}
	}
	if len(why) == 0 {
		return assets
	}
	t.Fatal("the real-kubelet test cannot run here: " + strings.Join(why, "; ") +
		" (make test-kubelet builds and installs what it needs); HALYARD_REQUIRE_KUBELET=1")
	return ""
}

// env is one API server, one real kubelet and one controller.
type env struct {
	cfg     *rest.Config
	c       client.Client
	cs      *kubernetes.Clientset
	node    string
	apiPort string
	kroot   string
}

// startEnv starts an API server (in-place gates on, ServiceAccount
// admission on so the agents get tokens), the kubelet and containerd
// (hack/kubelet.sh), and the controller in this process. Everything stops
// when the test ends, also when it fails.
func startEnv(t *testing.T) *env {
	t.Helper()
	requireKubelet(t)
	root := repoRoot()
	te := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	api := te.ControlPlane.GetAPIServer()
	api.Configure().Append("feature-gates", "RestartAllContainersOnContainerExits=true,NodeDeclaredFeatures=true")
	// envtest turns ServiceAccount admission off; the agents need the token
	// volume it adds.
	api.Configure().Disable("disable-admission-plugins")
	cfg, err := te.Start()
	if err != nil {
		t.Fatalf("start API server: %v", err)
	}
	t.Cleanup(func() { _ = te.Stop() })
	scheme, err := controller.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	e := &env{cfg: cfg, c: c, cs: cs, node: "halyard-kubelet-test", kroot: filepath.Join(root, ".kubelet")}
	_, e.apiPort, _ = net.SplitHostPort(strings.TrimPrefix(cfg.Host, "https://"))

	// The kubelet's identity: a system:masters user (this API server runs
	// RBAC only, no Node authorizer).
	user, err := te.AddUser(envtest.User{Name: "system:node:" + e.node, Groups: []string{"system:masters", "system:nodes"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kcPath := filepath.Join(dir, "kubelet.kubeconfig")
	if err := os.WriteFile(kcPath, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	kubeletScript(t, e, "start", "KUBECONFIG="+kcPath, "NODE_NAME="+e.node)
	t.Cleanup(func() {
		if t.Failed() {
			e.dumpKubeletLog(t)
		}
		kubeletScript(t, e, "stop")
	})
	e.waitNodeReady(t)
	// The controller's in-place probe dry-runs a pod in "default", which
	// ServiceAccount admission rejects without the account (no
	// kube-controller-manager creates it here).
	if err := c.Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default"}}); err != nil {
		t.Fatalf("default service account: %v", err)
	}
	e.startController(t)
	return e
}

// kubeletScript runs hack/kubelet.sh with extra environment.
func kubeletScript(t *testing.T, e *env, verb string, extra ...string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot(), "hack", "kubelet.sh"), verb)
	cmd.Env = append(os.Environ(), extra...)
	cmd.Env = append(cmd.Env, "KROOT="+e.kroot)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("hack/kubelet.sh %s (%s):\n%s", verb, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("hack/kubelet.sh %s: %v", verb, err)
	}
}

// dumpKubeletLog logs the kubelet's errors, for a failed test.
func (e *env) dumpKubeletLog(t *testing.T) {
	f, err := os.Open(filepath.Join(e.kroot, "run", "kubelet.log"))
	if err != nil {
		return
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "E") {
			lines = append(lines, l)
		}
	}
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("kubelet errors (last %d):\n%s", len(lines), strings.Join(lines, "\n"))
}

func (e *env) waitNodeReady(t *testing.T) {
	t.Helper()
	eventually(t, 2*time.Minute, "node "+e.node+" Ready", func() (bool, string) {
		n, err := e.cs.CoreV1().Nodes().Get(context.Background(), e.node, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, c.Reason + ": " + c.Message
			}
		}
		return false, "no Ready condition"
	})
}

// startController runs the controller; the agents reach the API server on
// 127.0.0.1 (host network, no kube-proxy for the kubernetes service).
func (e *env) startController(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := io.Discard
	if os.Getenv("HALYARD_TEST_LOGS") == "1" {
		logs = os.Stderr
	}
	mgr, err := controller.NewManager(ctx, controller.Options{
		Config: e.cfg, MetricsAddr: "0", ProbeAddr: "0",
		AgentImage: halyardImage, InPlace: controller.InPlaceAuto, Concurrency: 2,
		AgentEnv: []corev1.EnvVar{
			{Name: "KUBERNETES_SERVICE_HOST", Value: "127.0.0.1"},
			{Name: "KUBERNETES_SERVICE_PORT", Value: e.apiPort},
		},
		Logger:     slog.New(slog.NewTextHandler(logs, nil)),
		Registerer: prometheus.NewRegistry(), SkipNameValidation: true,
	})
	if err != nil {
		cancel()
		t.Fatalf("controller: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Logf("controller manager: %v", err)
			}
		case <-time.After(30 * time.Second):
		}
	})
}

// namespace creates a namespace whose default ServiceAccount may read and
// watch pods (the agents' needs), with the kube-root-ca.crt ConfigMap the
// token volume mounts (kube-controller-manager, absent here, publishes it).
func (e *env) namespace(t *testing.T, name string) string {
	t.Helper()
	ctx := context.Background()
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "kube-root-ca.crt"},
			Data: map[string]string{"ca.crt": string(e.cfg.CAData)}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "halyard-agent"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "halyard-agent"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "halyard-agent"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "default", Namespace: name}}},
	}
	for _, o := range objs {
		if err := e.c.Create(ctx, o); err != nil {
			t.Fatalf("create %T: %v", o, err)
		}
	}
	return name
}

func (e *env) pods(t *testing.T, ns, ms string) map[string]corev1.Pod {
	t.Helper()
	list, err := e.cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: servingv1.LabelModelServing + "=" + ms})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	out := map[string]corev1.Pod{}
	for _, p := range list.Items {
		out[p.Name] = p
	}
	return out
}

func (e *env) get(t *testing.T, ns, name string) *servingv1.ModelServing {
	t.Helper()
	ms := &servingv1.ModelServing{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, ms); err != nil {
		t.Fatalf("get modelserving: %v", err)
	}
	return ms
}

// eventually polls cond every 50ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, msg := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePort returns a free 127.0.0.1 port.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// halyardBinary is this checkout's halyard binary (for the router and the
// standby engine that run outside the kubelet), built once.
func halyardBinary(t *testing.T) string {
	t.Helper()
	path, err := testbin.Halyard()
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMain removes the built binary after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}

// process is a halyard subprocess stopped when the test ends.
type process struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	cmd := exec.Command(halyardBinary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start halyard %v: %v", args, err)
	}
	p := &process{cmd: cmd, out: &out}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("halyard %s output:\n%s", args[0], tail(out.String(), 30))
		}
	})
	return p
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func itoa(i int) string { return strconv.Itoa(i) }
