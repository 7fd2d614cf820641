package cli

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/weights/hubtest"
)

// halyardProcess starts this test binary as `halyard args...`.
func halyardProcess(t *testing.T, env []string, args ...string) (*exec.Cmd, *bytes.Buffer, io.Reader) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "HALYARD_CLI_TEST_MAIN=1"), env...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &stdout, stderr
}

// TestFetchTwoProcessesFetchOnce runs two `halyard fetch` processes of one
// model into one node cache at once: the second waits on the first's lock
// and the origin serves one copy.
func TestFetchTwoProcessesFetchOnce(t *testing.T) {
	h := hubtest.NewHub()
	defer h.Close()
	r := rand.New(rand.NewPCG(7, 7))
	weights := make([]byte, 2<<20)
	for i := range weights {
		weights[i] = byte(r.Uint32())
	}
	files := map[string][]byte{"config.json": []byte(`{}`), "model.safetensors": weights}
	h.AddRepo("org/shared", hubtest.Repo{Files: files})
	dir := t.TempDir()
	env := []string{"HF_ENDPOINT=" + h.URL}
	args := []string{"fetch", "hf://org/shared", "--into", dir, "--progress", "log"}

	h.Hold() // the first fetch's download waits until the second is waiting
	first, out1, err1 := halyardProcess(t, env, args...)
	// "fetch: start" is logged with the model's lock held.
	if !waitLine(err1, "fetch: start") {
		t.Fatal("the first fetch did not start")
	}
	second, out2, err2 := halyardProcess(t, env, args...)
	if !waitLine(err2, "waiting for another fetch") {
		t.Fatal("the second fetch did not wait for the first")
	}
	h.Release()
	go func() { _, _ = io.Copy(io.Discard, err2) }()
	go func() { _, _ = io.Copy(io.Discard, err1) }()
	if err := first.Wait(); err != nil {
		t.Fatalf("first fetch: %v", err)
	}
	if err := second.Wait(); err != nil {
		t.Fatalf("second fetch: %v", err)
	}
	if got, want := h.BodyBytes(), int64(len(weights)+2); got != want {
		t.Errorf("origin served %d bytes, want one copy (%d)", got, want)
	}
	p1, p2 := strings.TrimSpace(out1.String()), strings.TrimSpace(out2.String())
	if p1 == "" || p1 != p2 || !strings.HasPrefix(p1, filepath.Join(dir, "models--org--shared", "snapshots")) {
		t.Errorf("paths %q and %q", p1, p2)
	}
	got, err := os.ReadFile(filepath.Join(p2, "model.safetensors"))
	if err != nil || !bytes.Equal(got, weights) {
		t.Errorf("model.safetensors: %v", err)
	}
}

// waitLine reads r until a line contains s (true) or r ends (false).
func waitLine(r io.Reader, s string) bool {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}

// TestFetchModelScopeProcess runs `halyard fetch modelscope://...` with the
// environment ModelScope's own client reads (MODELSCOPE_ENDPOINT,
// MODELSCOPE_API_TOKEN; HF_TOKEN is not sent to ModelScope) and prints the
// snapshot in the Hugging Face cache layout.
func TestFetchModelScopeProcess(t *testing.T) {
	m := hubtest.NewModelScope()
	defer m.Close()
	files := map[string][]byte{"config.json": []byte(`{}`), "model.safetensors": bytes.Repeat([]byte("w"), 100<<10)}
	m.AddRepo("org/private", hubtest.ModelScopeRepo{Files: files, Token: "ms-token"})
	dir := t.TempDir()
	env := []string{"MODELSCOPE_ENDPOINT=" + m.URL, "MODELSCOPE_API_TOKEN=ms-token", "HF_TOKEN=hf-token"}
	cmd, out, stderr := halyardProcess(t, env, "fetch", "modelscope://org/private", "--into", dir, "--progress", "none")
	logs, _ := io.ReadAll(stderr)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("fetch: %v\n%s", err, logs)
	}
	p := strings.TrimSpace(out.String())
	if !strings.HasPrefix(p, filepath.Join(dir, "models--org--private", "snapshots")+"/") {
		t.Fatalf("path %q, want a snapshot of models--org--private", p)
	}
	got, err := os.ReadFile(filepath.Join(p, "model.safetensors"))
	if err != nil || !bytes.Equal(got, files["model.safetensors"]) {
		t.Errorf("model.safetensors: %v", err)
	}
	if bytes.Contains(logs, []byte("ms-token")) {
		t.Error("the token is in the logs")
	}
}
