package pd

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

// endpoint is a framework.Endpoint with settable load.
type endpoint struct {
	md      framework.EndpointMetadata
	metrics atomic.Pointer[framework.Metrics]
	reqs    atomic.Int64
}

func ep(name string, role framework.Role, zone string, waiting int, kv float64) *endpoint {
	e := &endpoint{md: framework.EndpointMetadata{Name: name, Address: "http://" + name, Model: "m", Role: role}}
	if zone != "" {
		e.md.Labels = map[string]string{"zone": zone}
	}
	e.metrics.Store(&framework.Metrics{WaitingRequests: waiting, KVCacheUsage: kv, BlockSize: 16, NumBlocks: 1000})
	return e
}

func (e *endpoint) Metadata() *framework.EndpointMetadata { return &e.md }
func (e *endpoint) Metrics() *framework.Metrics           { return e.metrics.Load() }
func (e *endpoint) InFlight() (int64, int64)              { return e.reqs.Load(), 0 }

func eps(es ...*endpoint) []framework.Endpoint {
	out := make([]framework.Endpoint, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// profiles builds the scheduler's prefill and decode presets with seeded
// pickers.
func profiles(t *testing.T) (prefill, decode *scheduling.Profile) {
	t.Helper()
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	presets := presets.Specs()
	h := scheduling.Handle{}
	build := func(name string) *scheduling.Profile {
		spec := presets[name]
		seeded := *spec.Picker
		seeded.Params = []byte(`{"seed":7}`)
		spec.Picker = &seeded
		p, err := scheduling.NewProfile(name, spec, reg, h)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	return build(config.DefaultPrefillProfile), build(config.DefaultDecodeProfile)
}

func planner(t *testing.T, cfg Config) *Planner {
	t.Helper()
	pf, dc := profiles(t)
	p, err := New(cfg, pf, dc, NewApproximateIndex())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func request(prompt string) *framework.Request {
	return &framework.Request{ID: "r", Model: "m", TargetModel: "m", Prompt: framework.Prompt{Text: []byte(prompt)}, PromptTokens: len(prompt) / 4}
}

// summary is what a test compares of a plan.
type summary struct {
	Decode, Prefill, Skip, Topology string
	Held, Blocks                    int
	Err                             string
}

func summarize(pl *Plan, err error) summary {
	s := summary{Skip: pl.Skip, Topology: pl.Topology, Held: pl.HeldBlocks, Blocks: pl.PromptBlocks}
	if pl.Decode != nil {
		s.Decode = pl.Decode.Metadata().Name
	}
	if pl.Prefill != nil {
		s.Prefill = pl.Prefill.Metadata().Name
	}
	switch {
	case err != nil:
		s.Err = err.Error()
	case pl.PrefillErr != nil:
		s.Err = pl.PrefillErr.Error()
	}
	return s
}

func TestPlan(t *testing.T) {
	long := strings.Repeat("the quick brown fox jumps over the lazy dog ", 40) // 1760 bytes: 27 blocks
	tests := []struct {
		name    string
		cfg     Config
		prefill []*endpoint
		decode  []*endpoint
		prompt  string
		want    summary
	}{
		{
			name:    "decode by KV headroom, prefill by queue",
			prefill: []*endpoint{ep("p0", framework.RolePrefill, "", 9, 0), ep("p1", framework.RolePrefill, "", 1, 0)},
			decode:  []*endpoint{ep("d0", framework.RoleDecode, "", 0, 0.7), ep("d1", framework.RoleDecode, "", 0, 0.2)},
			prompt:  long,
			want:    summary{Decode: "d1", Prefill: "p1", Topology: TopologyNone, Blocks: 27},
		},
		{
			name:    "prefill in the decode endpoint's zone although busier",
			cfg:     Config{TopologyKey: "zone"},
			prefill: []*endpoint{ep("p0", framework.RolePrefill, "a", 9, 0), ep("p1", framework.RolePrefill, "b", 0, 0)},
			decode:  []*endpoint{ep("d0", framework.RoleDecode, "a", 0, 0.1), ep("d1", framework.RoleDecode, "b", 0, 0.5)},
			prompt:  long,
			want:    summary{Decode: "d0", Prefill: "p0", Topology: TopologySame, Blocks: 27},
		},
		{
			name:    "no prefill in the zone: cross",
			cfg:     Config{TopologyKey: "zone"},
			prefill: []*endpoint{ep("p1", framework.RolePrefill, "b", 0, 0)},
			decode:  []*endpoint{ep("d0", framework.RoleDecode, "a", 0, 0.1)},
			prompt:  long,
			want:    summary{Decode: "d0", Prefill: "p1", Topology: TopologyCross, Blocks: 27},
		},
		{
			name:    "decode endpoint without the label: none",
			cfg:     Config{TopologyKey: "zone"},
			prefill: []*endpoint{ep("p1", framework.RolePrefill, "b", 0, 0)},
			decode:  []*endpoint{ep("d0", framework.RoleDecode, "", 0, 0.1)},
			prompt:  long,
			want:    summary{Decode: "d0", Prefill: "p1", Topology: TopologyNone, Blocks: 27},
		},
		{
			name:    "short prompt served by decode alone",
			cfg:     Config{MinPrefillTokens: 1000},
			prefill: []*endpoint{ep("p0", framework.RolePrefill, "", 0, 0)},
			decode:  []*endpoint{ep("d0", framework.RoleDecode, "", 0, 0)},
			prompt:  long,
			want:    summary{Decode: "d0", Skip: SkipShortPrompt, Blocks: 27},
		},
		{
			name:    "a role-both endpoint is not its own prefill",
			prefill: []*endpoint{ep("b0", framework.RoleBoth, "", 0, 0)},
			decode:  []*endpoint{ep("b0", framework.RoleBoth, "", 0, 0)},
			prompt:  long,
			want:    summary{Decode: "b0", Blocks: 27, Err: ErrNoPrefill.Error()},
		},
		{
			name:   "no prefill endpoint",
			decode: []*endpoint{ep("d0", framework.RoleDecode, "", 0, 0)},
			prompt: long,
			want:   summary{Decode: "d0", Blocks: 27, Err: ErrNoPrefill.Error()},
		},
		{
			name:    "prefill endpoints all filtered by role",
			prefill: []*endpoint{ep("x", framework.RoleDecode, "", 0, 0)},
			decode:  []*endpoint{ep("d0", framework.RoleDecode, "", 0, 0)},
			prompt:  long,
			want:    summary{Decode: "d0", Blocks: 27, Err: "no prefill endpoint can serve the request: prefill profile: no endpoint can serve the request"},
		},
		{
			name:    "no decode endpoint",
			prefill: []*endpoint{ep("p0", framework.RolePrefill, "", 0, 0)},
			decode:  []*endpoint{ep("x", framework.RolePrefill, "", 0, 0)},
			prompt:  long,
			want:    summary{Err: "no decode endpoint can serve the request: decode profile: no endpoint can serve the request"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planner(t, tt.cfg)
			pl, err := p.Plan(context.Background(), request(tt.prompt), eps(tt.prefill...), eps(tt.decode...), false)
			if diff := cmp.Diff(tt.want, summarize(pl, err)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeFirst(t *testing.T) {
	ctx := context.Background()
	prompt := strings.Repeat("a shared system prompt that is long enough ", 30)
	other := strings.Repeat("something else entirely, not the same text ", 30)
	half := prompt[:len(prompt)/2] + other[:len(other)/2]
	prefill := eps(ep("p0", framework.RolePrefill, "", 0, 0))
	decode := eps(ep("d0", framework.RoleDecode, "", 0, 0))
	tests := []struct {
		name   string
		cfg    Config
		second string
		want   string
		held   float64
	}{
		{"the same prompt skips", Config{DecodeFirst: true, MinHeldShare: 0.8}, prompt, SkipPrefixHeld, 1},
		{"half held is below 0.8", Config{DecodeFirst: true, MinHeldShare: 0.8}, half, "", 0.5},
		{"half held is enough at 0.4", Config{DecodeFirst: true, MinHeldShare: 0.4}, half, SkipPrefixHeld, 0.5},
		{"off", Config{}, prompt, "", 1},
		{"another prompt", Config{DecodeFirst: true, MinHeldShare: 0.8}, other, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planner(t, tt.cfg)
			first, err := p.Plan(ctx, request(prompt), prefill, decode, false)
			if err != nil || first.Skip != "" || first.Prefill == nil {
				t.Fatalf("first plan: %+v, %v", summarize(first, err), err)
			}
			p.PrefillSent(ctx, request(prompt), first)
			p.DecodeSent(ctx, request(prompt), first)
			second, err := p.Plan(ctx, request(tt.second), prefill, decode, false)
			if err != nil {
				t.Fatal(err)
			}
			if second.Skip != tt.want {
				t.Errorf("skip = %q, want %q (held %d of %d)", second.Skip, tt.want, second.HeldBlocks, second.PromptBlocks)
			}
			if got := second.HeldShare(); got < tt.held-0.05 || got > tt.held+0.05 {
				t.Errorf("held share = %.2f, want about %.2f", got, tt.held)
			}
			if (second.Prefill == nil) != (tt.want != "") {
				t.Errorf("prefill = %v with skip %q", second.Prefill, second.Skip)
			}
		})
	}
}

func TestNextPrefill(t *testing.T) {
	ctx := context.Background()
	p := planner(t, Config{TopologyKey: "zone"})
	p0, p1, p2 := ep("p0", framework.RolePrefill, "a", 0, 0), ep("p1", framework.RolePrefill, "a", 3, 0), ep("p2", framework.RolePrefill, "b", 0, 0)
	prefill := eps(p0, p1, p2)
	req := request(strings.Repeat("x", 300))
	pl, err := p.Plan(ctx, req, prefill, eps(ep("d0", framework.RoleDecode, "a", 0, 0)), true)
	if err != nil || pl.Prefill != p0 {
		t.Fatalf("first pick %v, %v", pl.Prefill, err)
	}
	if pl.PrefillExplanation == nil || pl.DecodeExplanation == nil {
		t.Fatal("no explanations")
	}
	var order []string
	for pl.Prefill != nil {
		order = append(order, pl.Prefill.Metadata().Name+"/"+pl.Topology)
		if err := p.NextPrefill(ctx, req, pl, prefill, false); err != nil {
			if !errors.Is(err, ErrNoPrefill) {
				t.Fatalf("error %v is not ErrNoPrefill", err)
			}
			break
		}
	}
	want := []string{"p0/same", "p1/same", "p2/cross"}
	if diff := cmp.Diff(want, order); diff != "" {
		t.Errorf("prefill order (-want +got):\n%s", diff)
	}
	if len(pl.Tried) != 3 {
		t.Errorf("tried %d, want 3", len(pl.Tried))
	}
}

func TestNewValidates(t *testing.T) {
	pf, dc := profiles(t)
	idx := NewApproximateIndex()
	for _, tc := range []struct {
		name string
		cfg  Config
		pf   Scheduler
		idx  Index
	}{
		{"share above 1", Config{DecodeFirst: true, MinHeldShare: 1.5}, pf, idx},
		{"share 0", Config{DecodeFirst: true}, pf, idx},
		{"negative tokens", Config{MinPrefillTokens: -1}, pf, idx},
		{"no prefill profile", Config{}, nil, idx},
		{"no index", Config{}, pf, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, tc.pf, dc, tc.idx); err == nil {
				t.Error("accepted")
			}
		})
	}
	spec := &config.PDSpec{TopologyKey: "zone", MinPrefillTokens: 5, DecodeFirst: config.DecodeFirstSpec{MinHeldShare: 0.5}}
	want := Config{TopologyKey: "zone", DecodeFirst: true, MinHeldShare: 0.5, MinPrefillTokens: 5}
	if diff := cmp.Diff(want, FromSpec(spec)); diff != "" {
		t.Errorf("FromSpec (-want +got):\n%s", diff)
	}
}

func TestNextDecode(t *testing.T) {
	ctx := context.Background()
	p := planner(t, Config{})
	d0, d1 := ep("d0", framework.RoleDecode, "", 0, 0.1), ep("d1", framework.RoleDecode, "", 0, 0.5)
	decode := eps(d0, d1)
	req := request(strings.Repeat("y", 300))
	pl, err := p.Plan(ctx, req, eps(ep("p0", framework.RolePrefill, "", 0, 0)), decode, false)
	if err != nil || pl.Decode != d0 {
		t.Fatalf("first decode %v, %v", pl.Decode, err)
	}
	prefill := pl.Prefill
	if err := p.NextDecode(ctx, req, pl, decode, []framework.Endpoint{d0}, false); err != nil || pl.Decode != d1 {
		t.Fatalf("next decode %v, %v", pl.Decode, err)
	}
	if pl.Prefill != prefill {
		t.Error("the prefill endpoint changed")
	}
	if err := p.NextDecode(ctx, req, pl, decode, []framework.Endpoint{d0, d1}, false); !errors.Is(err, ErrNoDecode) || pl.Decode != d1 {
		t.Errorf("exhausted: %v, decode %v", err, pl.Decode)
	}
}
