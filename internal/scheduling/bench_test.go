package scheduling_test

import (
	"fmt"
	"runtime"
	"testing"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// benchPool returns 100 endpoints with varied load, and prompts of tokens
// tokens: each endpoint has been sent its own conversation behind one shared
// system prompt of a fifth of that, and the request continues endpoint 42's.
func benchPool(b *testing.B, p *scheduling.Profile, text bool, tokens int) ([]framework.Endpoint, *framework.Request) {
	b.Helper()
	const n = 100
	system := tokens / 5
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
// the PreRequest hooks over 100 endpoints with an 8,000-token (and a
// 1,000-token) prompt, for the default profile, default-v1 (the old
// default), predicted-latency, default-v2 and the baselines. Run with -benchmem; each cycle starts
// from a fresh CycleState, as each request does.
func BenchmarkSchedule(b *testing.B) {
	presets := presets.Specs()
	cases := []struct {
		profile string
		spec    config.ProfileSpec
		text    bool
		explain bool
		tokens  int
	}{
		{"default", presets["default"], false, false, 8000},
		{"default", presets["default"], true, false, 8000},
		{"default", presets["default"], false, true, 8000},
		{"default", presets["default"], false, false, 1000},
		{"default", presets["default"], true, false, 1000},
		{"default-v1", presets["default-v1"], false, false, 8000},
		{"default-v1", presets["default-v1"], true, false, 8000},
		{"predicted-latency", presets["predicted-latency"], false, false, 8000},
		{"predicted-latency", presets["predicted-latency"], true, false, 8000},
		{"predicted-latency", presets["predicted-latency"], false, true, 8000},
		{"default-v2", presets["default-v2"], false, false, 8000},
		{"default-v2", presets["default-v2"], true, false, 8000},
		{"least-request", presets["least-request"], false, false, 8000},
		{"round-robin", presets["round-robin"], false, false, 8000},
		{"random", presets["random"], false, false, 8000},
	}
	for _, c := range cases {
		form := fmt.Sprintf("tokens=%d", c.tokens)
		if c.text {
			form = fmt.Sprintf("text=%dtok", c.tokens)
		}
		mode := "cycle"
		if c.explain {
			mode = "explained"
		}
		name := fmt.Sprintf("profile=%s/%s/endpoints=100/%s", c.profile, mode, form)
		b.Run(name, func(b *testing.B) {
			p := profile(b, c.profile, c.spec, plugintest.NewHandle())
			eps, req := benchPool(b, p, c.text, c.tokens)
			b.ReportAllocs()
			b.ResetTimer()
			runtime.GC() // collect setup garbage outside the measurement
			cpu := processCPU()
			for b.Loop() {
				state := framework.NewCycleState()
				res, err := p.Schedule(b.Context(), state, req, eps, c.explain)
				if err != nil {
					b.Fatal(err)
				}
				p.PreRequest(b.Context(), state, req, res.Picked[0])
			}
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkScheduleLongPrompt schedules a 1M-token prompt sent as text (no
// tokenizer: about 4 MiB), over 100 endpoints, counting the prompt's tokens
// as the router does: the prefix scorer hashes only its first 32k tokens, so
// the cost and the memory per cycle stay bounded by the count.
func BenchmarkScheduleLongPrompt(b *testing.B) {
	presets := presets.Specs()
	ids := make([]uint32, 1_000_000)
	for i := range ids {
		ids[i] = uint32(i*7919) % 128000
	}
	text := []byte(tokenizer.Pseudo{}.Decode(ids))
	for _, name := range []string{"default", "default-v1", "predicted-latency"} {
		b.Run("profile="+name+"/endpoints=100/text=1Mtok", func(b *testing.B) {
			p := profile(b, name, presets[name], plugintest.NewHandle())
			eps, _ := benchPool(b, p, true, 1000)
			b.ReportAllocs()
			b.SetBytes(int64(len(text)))
			b.ResetTimer()
			runtime.GC()
			cpu := processCPU()
			for b.Loop() {
				req := &framework.Request{ID: "long", Model: "llama-3-8b", Prompt: framework.Prompt{Text: text}}
				req.PromptTokens = tokenizer.Pseudo{}.CountBytes(text)
				state := framework.NewCycleState()
				res, err := p.Schedule(b.Context(), state, req, eps, false)
				if err != nil {
					b.Fatal(err)
				}
				p.PreRequest(b.Context(), state, req, res.Picked[0])
			}
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
