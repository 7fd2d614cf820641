package pd

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// BenchmarkPlan measures one PD decision (decode profile, decode-first
// lookup, prefill profile, PreRequest hooks and the index update) over 8
// prefill and 8 decode endpoints in two zones, for an 8,000-token prompt
// given as text.
func BenchmarkPlan(b *testing.B) {
	ctx := context.Background()
	t := &testing.T{}
	p := planner(t, Config{TopologyKey: "zone", DecodeFirst: true, MinHeldShare: 0.8})
	var prefill, decode []*endpoint
	for i := range 8 {
		zone := string(rune('a' + i%2))
		prefill = append(prefill, ep(fmt.Sprintf("p%d", i), framework.RolePrefill, zone, i%3, 0))
		decode = append(decode, ep(fmt.Sprintf("d%d", i), framework.RoleDecode, zone, 0, float64(i)/10))
	}
	pc, dc := eps(prefill...), eps(decode...)
	prompts := make([]*framework.Request, 64)
	for i := range prompts {
		prompts[i] = request(fmt.Sprintf("user %d: ", i) + strings.Repeat("word ", 6400)) // ~32 KB, ~8k tokens
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		req := prompts[i%len(prompts)]
		pl, err := p.Plan(ctx, req, pc, dc, false)
		if err != nil {
			b.Fatal(err)
		}
		p.PrefillSent(ctx, req, pl)
		p.DecodeSent(ctx, req, pl)
	}
}
