package cli

import (
	"strings"
	"testing"
)

func TestRouteOrigins(t *testing.T) {
	for _, tt := range []struct {
		name             string
		o                routerOptions
		config, kube     bool
		wantErrSubstring string
	}{
		{name: "default without kubernetes", o: routerOptions{}, config: true},
		{name: "default with kubernetes", o: routerOptions{kubernetes: true}, config: true, kube: true},
		{name: "kubernetes only", o: routerOptions{kubernetes: true, routesFrom: "kubernetes"}, kube: true},
		{name: "config only with kubernetes", o: routerOptions{kubernetes: true, routesFrom: "config"}, config: true},
		{name: "both", o: routerOptions{kubernetes: true, routesFrom: "both"}, config: true, kube: true},
		{name: "kubernetes without --kubernetes", o: routerOptions{routesFrom: "kubernetes"}, wantErrSubstring: "--routes-from=kubernetes needs --kubernetes"},
		{name: "unknown", o: routerOptions{kubernetes: true, routesFrom: "crd"}, wantErrSubstring: `must be config, kubernetes or both, got "crd"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, k, err := tt.o.routeOrigins()
			if tt.wantErrSubstring != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstring) {
					t.Fatalf("error %v, want %q", err, tt.wantErrSubstring)
				}
				return
			}
			if err != nil || c != tt.config || k != tt.kube {
				t.Errorf("routeOrigins() = %v, %v, %v; want %v, %v", c, k, err, tt.config, tt.kube)
			}
		})
	}
}

// The flag reaches the command and a bad value fails before anything
// starts.
func TestRouterRoutesFromFlag(t *testing.T) {
	cmd := newRouterCommand()
	cmd.SetArgs([]string{"--config", "testdata/none.yaml", "--routes-from", "kubernetes"})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "needs --kubernetes") {
		t.Fatalf("error %v, want the --kubernetes requirement", err)
	}
}
