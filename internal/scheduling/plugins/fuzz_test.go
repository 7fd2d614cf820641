package plugins_test

import (
	"context"
	"encoding/json"
	"sort"
	"testing"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
)

// FuzzFactories feeds arbitrary params to every built-in factory: none may
// panic, and a plugin that builds must run a cycle over a few endpoints
// without panicking and keep scores in range.
func FuzzFactories(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `null`, `{"count":2}`, `{"seed":7}`, `{"role":"prefill"}`, `{"ttl":"1s","maxSessions":1}`,
		`{"blockSize":1,"chunkBytes":1,"maxIndexBlocks":1,"maxPromptBlocks":1,"loadOverride":{"queueGap":0,"kvUsageGap":1}}`,
		`{"maxMetricsAge":"1ns","dropUnscraped":true}`, `{"count":1e9}`, `[1,2]`, `"x"`, `{"blockSize":-5}`, `{} {}`,
	} {
		f.Add(seed)
	}
	for _, base := range []string{`{"count":`, `{"blockSize":`, `{"ttl":`, `{"loadOverride":`, `{"role":`} {
		for _, d := range fuzzseed.JSONDocuments(base) {
			f.Add(string(d))
		}
	}
	builtIn := plugins.BuiltIn()
	types := make([]string, 0, len(builtIn))
	for t := range builtIn {
		types = append(types, t)
	}
	sort.Strings(types)
	eps := plugintest.Endpoints(
		plugintest.NewEndpoint("a").WithMetrics(framework.Metrics{WaitingRequests: 3, KVCacheUsage: 0.9, NumBlocks: 2, BlockSize: 1}),
		plugintest.NewEndpoint("b").WithRole(framework.RolePrefill).WithInFlight(40, 0),
	)
	req := &framework.Request{Model: "m", Adapter: "x", SessionKey: "s", Prompt: framework.Prompt{Text: []byte("a prompt long enough to have a block or two of sixty-four bytes, and then some more text")}}
	f.Fuzz(func(t *testing.T, params string) {
		for _, typ := range types {
			p, err := builtIn[typ]("fuzz", json.RawMessage(params), plugintest.NewHandle())
			if err != nil {
				continue
			}
			ctx := context.Background()
			state := framework.NewCycleState()
			cands := append([]framework.Endpoint(nil), eps...)
			switch pl := p.(type) {
			case framework.Filter:
				pl.Filter(ctx, state, req, cands)
			case framework.Scorer:
				for _, s := range plugintest.Score(pl, state, req, cands) {
					if s < 0 || s > 1 || s != s {
						t.Fatalf("%s with params %q scored %v", typ, params, s)
					}
				}
			case framework.Picker:
				if got := pl.Pick(ctx, state, req, []framework.ScoredEndpoint{{Endpoint: eps[0]}, {Endpoint: eps[1]}}); len(got) == 0 {
					t.Fatalf("%s with params %q picked nothing of two", typ, params)
				}
			}
			if pr, ok := p.(framework.PreRequest); ok {
				pr.PreRequest(ctx, state, req, eps[0])
			}
		}
	})
}
