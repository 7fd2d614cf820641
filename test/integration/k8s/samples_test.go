package k8s

import (
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// `kubectl apply -f config/samples/` works against a real API server with the
// real `halyard controller` process running, and `kubectl get` shows the
// printer columns filled in by the controller.
func TestSamplesApplyWithKubectlAndController(t *testing.T) {
	kubectl := requireTool(t, "kubectl")
	k := startCluster(t, featureGates)
	metrics, probes := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	ctrl := exec.CommandContext(ctx, halyardBinary(t), "controller", "--kubeconfig", k.kubeconfig,
		"--metrics-bind-address", metrics, "--health-probe-bind-address", probes,
		"--leader-elect", "--leader-election-namespace", "default", "--log-format", "text")
	out := &strings.Builder{}
	ctrl.Stdout, ctrl.Stderr = out, out
	if err := ctrl.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = ctrl.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("controller output:\n%s", out.String())
		}
	})
	eventually(t, waitLong, "controller healthy", func() (bool, string) {
		resp, err := http.Get("http://" + probes + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectl, append([]string{"--kubeconfig", k.kubeconfig}, args...)...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	applied := run("apply", "-f", filepath.Join(repoRoot(), "config", "samples"))
	for _, want := range []string{
		"modelserving.serving.halyard.dev/llama-pd created",
		"modelserving.serving.halyard.dev/deepseek-multinode created",
		"modelroute.serving.halyard.dev/llama created",
		"modelroute.serving.halyard.dev/llama-sql created",
	} {
		if !strings.Contains(applied, want) {
			t.Errorf("kubectl apply output lacks %q:\n%s", want, applied)
		}
	}
	var table string
	eventually(t, waitLong, "status columns filled", func() (bool, string) {
		table = run("get", "modelservings")
		return strings.Contains(table, "GroupsNotReady"), table
	})
	header := strings.Fields(strings.SplitN(table, "\n", 2)[0])
	if got := strings.Join(header, " "); got != "NAME MODEL ENGINE GROUPS READY UPDATED STATUS DESIRED AGE" {
		t.Errorf("columns %q", got)
	}
	if !strings.Contains(table, "llama-pd ") || !strings.Contains(table, "llama-3.1-8b") || !strings.Contains(table, "vllm") {
		t.Errorf("table lacks the sample's values:\n%s", table)
	}
	eventually(t, waitLong, "routes checked", func() (bool, string) {
		routes := run("get", "modelroutes")
		return strings.Contains(routes, "llama-sql") && strings.Count(routes, "True") >= 4, routes
	})
	pods := run("get", "pods", "-l", "serving.halyard.dev/model-serving=llama-pd", "-o", "name")
	if n := strings.Count(pods, "pod/"); n != 4 {
		t.Errorf("llama-pd has %d pods, want 4 (2 groups x prefill+decode):\n%s", n, pods)
	}
	// The controller's metrics are served.
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body := string(raw)
	if !strings.Contains(body, `halyard_controller_groups{model_serving="llama-pd",namespace="default",phase="Pending"} 2`) ||
		!strings.Contains(body, "halyard_controller_inplace_restart_supported 1") {
		t.Errorf("metrics lack the group gauge or the in-place gauge")
	}
}
