package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigFlagErrors: bad flags and configs are refused before anything
// starts, naming the flag or field; router --check validates engines[] as
// halyard up would and never reaches a Kubernetes API server.
func TestConfigFlagErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, doc string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("apiVersion: config.halyard.dev/v1alpha1\nkind: Config\n"+doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badEngines := write("bad.yaml", `engines: [{model: m, profile: nope}, {model: m, args: ["--x"]}]
routes: [{model: m, targets: [{pool: m}]}]
`)
	good := write("good.yaml", `endpoints: [{name: e0, url: "http://127.0.0.1:1", model: m}]
routes: [{model: m, targets: [{pool: m}]}]
`)
	for _, tt := range []struct {
		args []string
		want string // "" means success
	}{
		{[]string{"up", "--demo-requests", "-5"}, "--demo-requests: must be at least 1, got -5"},
		{[]string{"router", "--check", "--config", badEngines}, `engines[0].profile: unknown profile "nope"`},
		{[]string{"router", "--check", "--config", badEngines}, "engines[1].args"},
		// No API server here: --check must not try to reach one.
		{[]string{"router", "--check", "--kubernetes", "--kubeconfig", filepath.Join(dir, "missing"), "--config", good}, ""},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cmd := NewRootCommand()
			cmd.SetArgs(tt.args)
			out := new(strings.Builder)
			cmd.SetOut(out)
			cmd.SetErr(new(strings.Builder))
			err := cmd.ExecuteContext(context.Background())
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("error %v", err)
			case tt.want == "" && !strings.Contains(out.String(), "valid"):
				t.Errorf("output %q", out)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}
