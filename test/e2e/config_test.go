package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRouterCheckAcceptsTheExamples runs `halyard router --check` on every
// file in examples/.
func TestRouterCheckAcceptsTheExamples(t *testing.T) {
	needBinary(t)
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, err := exec.Command(binary, "router", "--config", f, "--check").CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": valid (") {
				t.Errorf("%v: %s", err, out)
			}
		})
	}
}

// TestRouterRejectsABadConfig: a config with mistakes makes the router exit
// 1 at once, naming every field at fault.
func TestRouterRejectsABadConfig(t *testing.T) {
	needBinary(t)
	path := filepath.Join(t.TempDir(), "bad.yaml")
	if err := writeFile(path, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {maxAtempts: 2}
endpoints: [{url: "ftp://x", model: m}]
routes: [{model: m, targets: [{pool: m, weight: -1}]}]
`); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "router", "--config", path)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !asExit(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want 1: %s", err, out)
	}
	if !strings.Contains(string(out), "router.maxAtempts: unknown field") {
		t.Errorf("output does not name the unknown field:\n%s", out)
	}
	path2 := filepath.Join(t.TempDir(), "bad2.yaml")
	if err := writeFile(path2, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints: [{url: "ftp://x", model: m}]
routes: [{model: m, targets: [{pool: m, weight: -1}]}]
`); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command(binary, "router", "--config", path2).CombinedOutput()
	for _, want := range []string{`endpoints[0].url: scheme must be http or https, got "ftp"`, "routes[0].targets[0].weight: must not be negative, got -1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
