package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestSubcommandsRun: the binary TestMain built starts, and each
// subcommand the end-to-end tests use answers --help with exit status 0.
// A subcommand that is missing or fails to set up its flags fails here (the
// tests that start it fail too, since start fails on an early exit); nothing
// is skipped because of what --help says.
func TestSubcommandsRun(t *testing.T) {
	needBinary(t)
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "halyard ") {
		t.Fatalf("halyard version: %v: %s", err, out)
	}
	for _, sub := range []string{"sim", "up", "router", "bench", "controller", "agent"} {
		t.Run(sub, func(t *testing.T) {
			out, err := exec.Command(binary, sub, "--help").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Usage:") {
				t.Fatalf("halyard %s --help: %v:\n%s", sub, err, out)
			}
		})
	}
}
