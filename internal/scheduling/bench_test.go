package scheduling_test

import (
	"fmt"
	"testing"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// benchPool returns 100 endpoints with varied load, and prompts of 8,000
// tokens: each endpoint has been sent its own conversation behind one shared
// 1,600-token system prompt, and the request continues endpoint 42's.
func benchPool(b *testing.B, p *scheduling.Profile, text bool) ([]framework.Endpoint, *framework.Request) {
	b.Helper()
	const n, tokens, system = 100, 8000, 1600
	eps := make([]*plugintest.Endpoint, n)
	var req *framework.Request
	prompt := func(e int) *framework.Request {
		ids := make([]uint32, tokens)
		for i := range ids {
			if i < system {
				ids[i] = uint32(i * 13 % 100000)
			} else {
				ids[i] = uint32((e*1_000_003 + i*17) % 128000)
			}
		}
		if text {
			return &framework.Request{Model: "llama-3-8b", Prompt: framework.Prompt{Text: []byte(tokenizer.Pseudo{}.Decode(ids))}}
		}
		return &framework.Request{Model: "llama-3-8b", Prompt: framework.Prompt{TokenIDs: ids}}
	}
	for i := range eps {
		eps[i] = plugintest.NewEndpoint(fmt.Sprintf("pod-llama-%03d", i)).
			WithMetrics(framework.Metrics{WaitingRequests: i % 5, RunningRequests: 20 + i%13, KVCacheUsage: float64(i%10) / 10, NumBlocks: 27000, BlockSize: 16}).
			WithInFlight(int64(i%7), 0)
		r := prompt(i)
		p.PreRequest(b.Context(), framework.NewCycleState(), r, eps[i])
		if i == 42 {
			req = r
		}
	}
	return plugintest.Endpoints(eps...), req
}

// BenchmarkSchedule measures one scheduling cycle (hashing included) and
// the PreRequest hooks over 100 endpoints with an 8,000-token prompt, for the
// default profile and the baselines. Run with -benchmem; each cycle starts
// from a fresh CycleState, as each request does.
func BenchmarkSchedule(b *testing.B) {
	presets := scheduling.PresetProfileSpecs()
	cases := []struct {
		profile string
		spec    config.ProfileSpec
		text    bool
		explain bool
	}{
		{"default", presets["default"], false, false},
		{"default", presets["default"], true, false},
		{"default", presets["default"], false, true},
		{"least-request", presets["least-request"], false, false},
		{"round-robin", presets["round-robin"], false, false},
		{"random", presets["random"], false, false},
	}
	for _, c := range cases {
		form := "tokens=8000"
		if c.text {
			form = "text=8000tok"
		}
		mode := "cycle"
		if c.explain {
			mode = "explained"
		}
		name := fmt.Sprintf("profile=%s/%s/endpoints=100/%s", c.profile, mode, form)
		b.Run(name, func(b *testing.B) {
			p := profile(b, c.profile, c.spec, plugintest.NewHandle())
			eps, req := benchPool(b, p, c.text)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				state := framework.NewCycleState()
				res, err := p.Schedule(b.Context(), state, req, eps, c.explain)
				if err != nil {
					b.Fatal(err)
				}
				p.PreRequest(b.Context(), state, req, res.Picked[0])
			}
		})
	}
}
