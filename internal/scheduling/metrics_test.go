package scheduling_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

func TestRegisterMetricsGolden(t *testing.T) {
	h := plugintest.NewHandle()
	def := profile(t, "default", presets.DefaultSpec(), h)
	sticky := profile(t, "sticky", config.ProfileSpec{
		Scorers: []config.PluginSpec{
			{Type: "session-affinity", Params: json.RawMessage(`{"maxSessions":10}`)},
			{Type: "prefix-cache", Name: "small", Params: json.RawMessage(`{"maxIndexBlocks":30}`)},
		},
		Picker: &config.PluginSpec{Type: "max-score", Params: json.RawMessage(`{"seed":1}`)}, // ties: a repeatable pick
	}, h)
	reg := prometheus.NewPedanticRegistry()
	for _, p := range []*scheduling.Profile{def, sticky} {
		if err := p.RegisterMetrics(reg); err != nil {
			t.Fatal(err)
		}
	}
	eps := endpoints(2)
	eps[0].WithMetrics(framework.Metrics{WaitingRequests: 20})
	// Two requests of 20 blocks to the default profile: the first lands on
	// the idle e1 (e0 is hot), the second matches e1.
	tok := make([]uint32, 320)
	for i := range tok {
		tok[i] = uint32(i)
	}
	for i := 0; i < 2; i++ {
		route(t, def, &framework.Request{ID: fmt.Sprint("r", i), Model: "m", Prompt: framework.Prompt{TokenIDs: tok}, PromptTokens: len(tok)}, eps)
	}
	// Three sessions through the small profile, 20 blocks each into an
	// index of 30.
	for i, key := range []string{"u1", "u2", "u3"} {
		req := &framework.Request{Model: "m", SessionKey: key, Prompt: framework.Prompt{TokenIDs: tok}}
		tok[0] = uint32(1000 + i)
		route(t, sticky, req, eps)
	}
	if err := def.RegisterMetrics(reg); err == nil {
		t.Error("registering a profile's metrics twice succeeded")
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join("testdata", "metrics.golden.prom")
	if *update {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("metrics (-golden +got):\n%s", diff)
	}
}
