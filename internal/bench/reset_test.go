package bench

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/bench/client"
	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/simulator/vllmapi"
)

// TestResetPrefixCacheMakesTheAloneRunCold: a tenant's run alone replays
// the requests the shared run just sent, so on a real (simulated) engine it
// finds its prompts cached; with ResetPrefixCache it starts cold, as the
// shared run did. The workload's prompts share nothing among themselves, so
// any cached token comes from the run before.
func TestResetPrefixCacheMakesTheAloneRunCold(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inst, err := vllmapi.Start(ctx, vllmapi.Spec{Listen: "127.0.0.1:0", Model: "m", Profile: "zero", Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	cl := func(key string) *client.Client {
		return &client.Client{BaseURL: inst.URL, Model: "m", IgnoreEOS: true, APIKey: key}
	}
	run := func(only string, reset []string) (cached, input int) {
		t.Helper()
		runs, err := Run(ctx, Options{
			Client:           cl(""),
			NewWorkload:      sharedPrefix(12, 1, 1),
			Arrivals:         Rates([]float64{math.Inf(1)}, 1),
			SLO:              stats.SLO{TTFT: time.Minute},
			Tenants:          []Tenant{{Name: "heavy", Share: 3, Client: cl("h")}, {Name: "light", Share: 1, Client: cl("l")}},
			Only:             only,
			Seed:             3,
			ResetPrefixCache: reset,
		})
		if err != nil {
			t.Fatal(err)
		}
		if runs[0].Failed != 0 {
			t.Fatalf("%d requests failed", runs[0].Failed)
		}
		return runs[0].TotalCachedTokens, runs[0].TotalInputTokens
	}

	if cached, input := run("", nil); cached != 0 {
		t.Fatalf("shared run on a fresh engine: %d of %d prompt tokens cached, want 0", cached, input)
	}
	if cached, input := run("light", nil); cached*2 < input {
		t.Fatalf("alone run after the shared run, no reset: %d of %d prompt tokens cached, want most (the shared run sent them)", cached, input)
	}
	if cached, input := run("", []string{inst.URL}); cached != 0 {
		t.Fatalf("shared run after a reset: %d of %d prompt tokens cached, want 0", cached, input)
	}
	if cached, input := run("light", []string{inst.URL + "/"}); cached != 0 {
		t.Fatalf("alone run with ResetPrefixCache: %d of %d prompt tokens cached, want 0", cached, input)
	}

	_, err = Run(ctx, Options{
		Client: cl(""), NewWorkload: sharedPrefix(2, 1, 1), Arrivals: Rates([]float64{math.Inf(1)}, 1),
		ResetPrefixCache: []string{inst.URL + "/no-such-engine"},
	})
	if err == nil {
		t.Fatal("a reset answered 404 did not fail the run")
	}
}
