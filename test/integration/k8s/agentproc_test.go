package k8s

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// agentProc is a real `halyard agent` process watching one pod through the
// test API server, as it would inside the pod.
type agentProc struct {
	name string
	cmd  *exec.Cmd
	addr string
	done chan int // exit code
}

func (k *cluster) startAgent(t *testing.T, ns, pod string) *agentProc {
	t.Helper()
	cmd := exec.Command(halyardBinary(t), "agent", "--kubeconfig", k.kubeconfig,
		"--pod-name", pod, "--namespace", ns, "--listen", "127.0.0.1:0", "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	a := &agentProc{name: pod, cmd: cmd, done: make(chan int, 1)}
	addr := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "agent serving" {
				addr <- line.Addr
			}
			if testing.Verbose() {
				t.Logf("agent %s: %s", pod, sc.Text())
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		wg.Wait()
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		a.done <- code
	}()
	select {
	case a.addr = <-addr:
	case code := <-a.done:
		t.Fatalf("agent for %s exited with %d before serving", pod, code)
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("agent for %s did not start serving within 30s", pod)
	}
	t.Cleanup(a.stop)
	return a
}

// stop kills the agent if it still runs. It does not read
// cmd.ProcessState, which the goroutine in Wait writes (a data race under
// -race); killing a finished process only returns an error.
func (a *agentProc) stop() {
	_ = a.cmd.Process.Kill()
}

// startup returns the status code of the agent's startup probe.
func (a *agentProc) startup() (int, error) {
	resp, err := http.Get("http://" + a.addr + "/startup")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, nil
}

// waitStartup waits until the startup probe answers want.
func (a *agentProc) waitStartup(t *testing.T, want int) {
	t.Helper()
	eventually(t, waitLong, fmt.Sprintf("agent %s /startup %d", a.name, want), func() (bool, string) {
		code, err := a.startup()
		return code == want, fmt.Sprintf("code %d err %v", code, err)
	})
}

// waitExit waits for the agent to exit and returns its exit code.
func (a *agentProc) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case code := <-a.done:
		return code
	case <-time.After(waitLong):
		t.Fatalf("agent %s did not exit within %s", a.name, waitLong)
		return -1
	}
}
