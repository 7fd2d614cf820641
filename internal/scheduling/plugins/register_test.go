package plugins_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
)

func TestRegisterAll(t *testing.T) {
	var reg framework.Registry
	if err := plugins.RegisterAll(&reg); err != nil {
		t.Fatal(err)
	}
	want := []string{"aibrix-prefix-cache", "health", "kthena-least-request", "kv-utilization", "least-request", "lora-affinity", "lora-capable",
		"max-score", "max-waiting", "outlier-ejection", "predicted-latency", "prefix-cache", "queue-depth", "random", "role", "round-robin",
		"session-affinity", "sglang-cache-aware"}
	if diff := cmp.Diff(want, reg.Types()); diff != "" {
		t.Errorf("registered types (-want +got):\n%s", diff)
	}
	if err := plugins.RegisterAll(&reg); err == nil {
		t.Error("registering twice succeeded")
	}
	// Every factory builds with default params (role needs its one param)
	// and names the instance.
	for _, typ := range reg.Types() {
		params := []byte(nil)
		if typ == "role" {
			params = []byte(`{"role":"decode"}`)
		}
		p, err := reg.New(typ, "inst", params, plugintest.NewHandle())
		if err != nil {
			t.Errorf("%s: %v", typ, err)
			continue
		}
		if got := p.TypedName(); got != (framework.TypedName{Type: typ, Name: "inst"}) {
			t.Errorf("%s: TypedName %+v", typ, got)
		}
	}
	if _, err := reg.New("nope", "", nil, plugintest.NewHandle()); !errors.Is(err, framework.ErrUnknownPluginType) {
		t.Errorf("unknown type: %v", err)
	}
}

func TestFactoriesAcceptANilHandle(t *testing.T) {
	for typ, f := range plugins.BuiltIn() {
		params := []byte(nil)
		if typ == "role" {
			params = []byte(`{"role":"both"}`)
		}
		if _, err := f("x", params, nil); err != nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
}
