package pd

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

// BenchmarkPlan measures one PD decision (decode profile, decode-first
// lookup, prefill profile, PreRequest hooks and the index update) over 8
// prefill and 8 decode endpoints in two zones, for an 8,000-token prompt
// given as text, beside one cycle of the default profile (with its
// PreRequest hooks) over the same 16 endpoints co-located: the cost PD
// adds to scheduling.
func BenchmarkPlan(b *testing.B) {
	ctx := context.Background()
	t := &testing.T{}
	var prefill, decode, both []*endpoint
	for i := range 8 {
		zone := string(rune('a' + i%2))
		prefill = append(prefill, ep(fmt.Sprintf("p%d", i), framework.RolePrefill, zone, i%3, 0))
		decode = append(decode, ep(fmt.Sprintf("d%d", i), framework.RoleDecode, zone, 0, float64(i)/10))
	}
	for i := range 16 {
		both = append(both, ep(fmt.Sprintf("e%d", i), framework.RoleBoth, "", i%3, float64(i%8)/10))
	}
	prompts := make([]*framework.Request, 64)
	for i := range prompts {
		prompts[i] = request(fmt.Sprintf("user %d: ", i) + strings.Repeat("word ", 6400)) // ~32 KB, ~8k tokens
	}
	b.Run("pd-plan", func(b *testing.B) {
		p := planner(t, Config{TopologyKey: "zone", DecodeFirst: true, MinHeldShare: 0.8})
		pc, dc := eps(prefill...), eps(decode...)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			req := prompts[i%len(prompts)]
			pl, err := p.Plan(ctx, req, pc, dc, false)
			if err != nil {
				b.Fatal(err)
			}
			p.PrefillSent(ctx, req, pl)
			p.DecodeSent(ctx, req, pl)
		}
	})
	b.Run("default-profile", func(b *testing.B) {
		reg := &framework.Registry{}
		if err := plugins.RegisterAll(reg); err != nil {
			b.Fatal(err)
		}
		prof, err := scheduling.NewProfile("default", presets.DefaultSpec(), reg, scheduling.Handle{})
		if err != nil {
			b.Fatal(err)
		}
		cands := eps(both...)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			req := prompts[i%len(prompts)]
			st := framework.NewCycleState()
			res, err := prof.Schedule(ctx, st, req, cands, false)
			if err != nil {
				b.Fatal(err)
			}
			prof.PreRequest(ctx, st, req, res.Picked[0])
		}
	})
}
