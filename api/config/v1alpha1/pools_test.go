package v1alpha1

import (
	"strings"
	"testing"
)

// A route (or a pd pool) may name a namespaced pool, which Kubernetes
// discovery fills at run time; a bare pool must still have an endpoint.
func TestDiscoveredPoolsNeedNoEndpoint(t *testing.T) {
	for _, tt := range []struct {
		pool    string
		wantErr string
	}{
		{pool: "team-a/llama"},
		{pool: "llama", wantErr: `routes[0].targets[0].pool: no endpoint or engine has pool "llama"`},
		{pool: "/llama", wantErr: `no endpoint or engine has pool "/llama"`},
		{pool: "a/b/c", wantErr: `no endpoint or engine has pool "a/b/c"`},
	} {
		t.Run(tt.pool, func(t *testing.T) {
			doc := "apiVersion: config.halyard.dev/v1alpha1\nkind: Config\nroutes: [{model: m, targets: [{pool: \"" + tt.pool + "\"}]}]\n" +
				"pools: [{name: \"" + tt.pool + "\", pd: {mode: nixl}}]\n"
			_, err := Parse([]byte(doc))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
