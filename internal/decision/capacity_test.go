package decision_test

import (
	"context"
	"testing"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
)

func TestCapacityIsWhatTheEndpointsOffer(t *testing.T) {
	q := config.QueueConfig{EndpointConcurrency: 8, EngineWaiting: -1, KVUtilization: 0.9}
	kv := framework.Metrics{BlockSize: 16, NumBlocks: 100} // 1600 tokens
	for _, tc := range []struct {
		name           string
		q              config.QueueConfig
		eps            []*ep
		slots, serving int
	}{
		{"concurrency per endpoint", q, []*ep{mk("a", framework.RoleBoth, nil), mk("b", framework.RoleBoth, nil)}, 16, 2},
		{"busier than the bound keeps its own", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(11, 0) }), mk("b", framework.RoleBoth, nil)}, 19, 2},
		{"kv full offers only its in-flight", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(3, 0).WithMetrics(framework.Metrics{KVCacheUsage: 0.95}) })}, 3, 1},
		{"router's tokens past the kv capacity", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(2, 1500).WithMetrics(kv) })}, 2, 1},
		{"engine queue when asked", config.QueueConfig{EngineWaiting: 1, KVUtilization: 0.9}, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(5, 0).WithMetrics(framework.Metrics{WaitingRequests: 2}) })}, 5, 1},
		{"no bound", config.QueueConfig{EngineWaiting: 1, KVUtilization: 0.9}, []*ep{mk("a", framework.RoleBoth, nil)}, -1, 1},
		{"prefilling past the bound offers only its in-flight", config.QueueConfig{EndpointConcurrency: 8, EngineWaiting: -1, KVUtilization: 0.9, PrefillTokens: 512},
			[]*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(3, 0); e.prefillReqs, e.prefillToks = 1, 600 }), mk("b", framework.RoleBoth, func(e *ep) { e.prefillReqs, e.prefillToks = 1, 300 })}, 11, 2},
		{"prefill bound off", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.WithInFlight(3, 0); e.prefillReqs, e.prefillToks = 4, 60000 })}, 8, 1},
		{"unhealthy endpoints do not count", q, []*ep{mk("a", framework.RoleBoth, func(e *ep) { e.sick = true })}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := director(t, tc.eps)
			slots, serving := d.Capacity(context.Background(), &framework.Request{Model: "m"}, []decision.Target{{Pool: "p"}}, tc.q)
			if slots != tc.slots || serving != tc.serving {
				t.Errorf("Capacity = %d slots, %d endpoints; want %d, %d", slots, serving, tc.slots, tc.serving)
			}
		})
	}
}

// TestPrefillingEndpointIsNotPicked follows one endpoint's outstanding
// prefill through Sent, FirstByte and Done, and checks that with the
// queue's rule in the call the pick goes to an endpoint with room while
// one has some (least-request would pick the prefilling one).
func TestPrefillingEndpointIsNotPicked(t *testing.T) {
	q := config.QueueConfig{EndpointConcurrency: 8, EngineWaiting: -1, KVUtilization: 0.9, PrefillTokens: 1}
	a := mk("a", framework.RoleBoth, nil)
	b := mk("b", framework.RoleBoth, func(e *ep) { e.WithInFlight(2, 0) })
	d := director(t, []*ep{a, b})
	prof, err := d.Profiles().Get(presets.LeastRequest)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	targets := []decision.Target{{Pool: "p"}}
	decide := func(explain bool) (decision.Decision, *decision.Call) {
		t.Helper()
		c := &decision.Call{Req: &framework.Request{Model: "m", PromptTokens: 300}, Profile: prof, Queue: &q, Explain: explain}
		dec, ok := d.Decide(ctx, c, targets, nil)
		if !ok {
			t.Fatal("no decision")
		}
		return dec, c
	}

	first, c1 := decide(false)
	if first.Endpoint != a {
		t.Fatalf("first pick %s, want a (fewest requests)", first.Endpoint.Metadata().Name)
	}
	d.Sent(ctx, c1, &first)
	if r, tok := a.Prefilling(); r != 1 || tok != 300 {
		t.Fatalf("after Sent a prefills %d requests, %d tokens; want 1, 300", r, tok)
	}
	if slots, _ := d.Capacity(ctx, &framework.Request{Model: "m"}, targets, q); slots != 8 {
		t.Errorf("capacity while a prefills = %d, want 8 (b's only)", slots)
	}
	second, _ := decide(true)
	if second.Endpoint != b {
		t.Errorf("pick while a prefills: %s, want b", second.Endpoint.Metadata().Name)
	}
	if len(second.Excluded) != 1 || second.Excluded[0].Name != "a" {
		t.Errorf("explained exclusions %v, want a for lack of room", second.Excluded)
	}

	d.FirstByte(ctx, c1, &first)
	if r, tok := a.Prefilling(); r != 0 || tok != 0 {
		t.Fatalf("after FirstByte a prefills %d requests, %d tokens; want none", r, tok)
	}
	if third, _ := decide(false); third.Endpoint != a {
		t.Errorf("pick after a's first token: %s, want a again", third.Endpoint.Metadata().Name)
	}
	d.Done(ctx, c1, &first, framework.Outcome{})
	if r, tok := a.Prefilling(); r != 0 || tok != 0 {
		t.Errorf("Done after FirstByte ended the prefill twice: %d requests, %d tokens", r, tok)
	}

	// A buffered answer has no first byte: its prefill ends with it.
	fourth, c4 := decide(false)
	d.Sent(ctx, c4, &fourth)
	d.Done(ctx, c4, &fourth, framework.Outcome{})
	if r, tok := a.Prefilling(); r != 0 || tok != 0 {
		t.Errorf("after Done without a first byte a prefills %d requests, %d tokens; want none", r, tok)
	}

	// When no endpoint has room the pick is the profile's, among all.
	a.prefillReqs, a.prefillToks, b.prefillReqs, b.prefillToks = 1, 10, 1, 10
	if all, _ := decide(false); all.Endpoint != a {
		t.Errorf("pick when none has room: %s, want a (the profile's)", all.Endpoint.Metadata().Name)
	}
}
