package scheduling_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func registry(t testing.TB) *framework.Registry {
	t.Helper()
	reg := &framework.Registry{}
	if err := plugins.RegisterAll(reg); err != nil {
		t.Fatal(err)
	}
	return reg
}

func profile(t testing.TB, name string, spec config.ProfileSpec, h framework.Handle) *scheduling.Profile {
	t.Helper()
	p, err := scheduling.NewProfile(name, spec, registry(t), h)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func endpoints(n int) []*plugintest.Endpoint {
	out := make([]*plugintest.Endpoint, n)
	for i := range out {
		out[i] = plugintest.NewEndpoint(fmt.Sprintf("e%d", i))
	}
	return out
}

// route runs a cycle and the PreRequest hooks, as the router does, and
// counts the request in flight on the pick.
func route(t testing.TB, p *scheduling.Profile, req *framework.Request, eps []*plugintest.Endpoint) *plugintest.Endpoint {
	t.Helper()
	state := framework.NewCycleState()
	res, err := p.Schedule(t.Context(), state, req, plugintest.Endpoints(eps...), false)
	if err != nil {
		t.Fatal(err)
	}
	picked := res.Picked[0]
	p.PreRequest(t.Context(), state, req, picked)
	e := picked.(*plugintest.Endpoint)
	e.AddInFlight(1, 0)
	return e
}

func chat(msgs ...string) *framework.Request {
	var b strings.Builder
	for i, m := range msgs {
		r := [...]string{"user", "assistant"}[i%2]
		if i == 0 {
			r = "system"
		}
		fmt.Fprintf(&b, "<|%s|>%s\n", r, m)
	}
	// As the router sets them: a unique ID and a token estimate (about 4
	// bytes a token), which the predicted-latency scorer reads.
	return &framework.Request{ID: fmt.Sprint("chat-", requestIDs.Add(1)), Model: "llama-3-8b",
		Prompt: framework.Prompt{Text: []byte(b.String())}, PromptTokens: b.Len() / 4}
}

var requestIDs atomic.Uint64

// systemPrompt returns a system prompt of about n pseudo-tokens.
func systemPrompt(seed, n int) string {
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = uint32(seed*7919+i*31) % 5000
	}
	return tokenizer.Pseudo{}.Decode(ids)
}

func TestPresetProfilesBuild(t *testing.T) {
	presets := presets.Specs()
	for _, name := range []string{"default", "random", "round-robin", "least-request", "load", "prefill", "decode", "predicted-latency", "default-v2",
		"llm-d", "kthena", "sglang", "aibrix"} {
		t.Run(name, func(t *testing.T) {
			spec, ok := presets[name]
			if !ok {
				t.Fatal("missing")
			}
			// The spec survives the config file's JSON form.
			b, err := json.Marshal(spec)
			if err != nil {
				t.Fatal(err)
			}
			var back config.ProfileSpec
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			p := profile(t, name, back, plugintest.NewHandle())
			eps := endpoints(4)
			eps[0].WithRole(framework.RolePrefill)
			eps[1].WithRole(framework.RoleDecode)
			res, err := p.Schedule(t.Context(), nil, chat("hello"), plugintest.Endpoints(eps...), true)
			if err != nil || len(res.Picked) != 1 {
				t.Fatalf("Schedule: %v, picked %d", err, len(res.Picked))
			}
		})
	}
}

// TestSharedSystemPromptSticksToOneEndpoint sends conversations that share a
// 4,000-token system prompt, one at a time (the load stays balanced): every
// request, first turns and second turns, lands on the endpoint that got the
// system prompt first.
func TestSharedSystemPromptSticksToOneEndpoint(t *testing.T) {
	p := profile(t, "default", presets.DefaultSpec(), plugintest.NewHandle())
	eps := endpoints(8)
	system := systemPrompt(1, 4000)
	var first *plugintest.Endpoint
	for c := 0; c < 40; c++ {
		q := fmt.Sprintf("Question %d: what is %d times %d?", c, c, c+1)
		for turn, req := range []*framework.Request{chat(system, q), chat(system, q, "An answer.", "Are you sure?")} {
			got := route(t, p, req, eps)
			got.AddInFlight(-1, 0) // done before the next request
			if first == nil {
				first = got
			}
			if got != first {
				t.Fatalf("conversation %d turn %d went to %s, not %s which holds the system prompt", c, turn+1, got.Metadata().Name, first.Metadata().Name)
			}
		}
	}
}

// TestConversationsStayWithTheirPrefix sends interleaved conversations with
// different system prompts while all stay in flight: each group's requests
// keep to the endpoints holding its prefix and the groups spread over the
// pool.
func TestConversationsStayWithTheirPrefix(t *testing.T) {
	p := profile(t, "default", presets.DefaultSpec(), plugintest.NewHandle())
	eps := endpoints(4)
	groups := make([]string, 4)
	for g := range groups {
		groups[g] = systemPrompt(g+10, 2000)
	}
	home := map[int]map[string]int{}
	for round := 0; round < 6; round++ {
		for g := range groups {
			got := route(t, p, chat(groups[g], fmt.Sprintf("user %d asks", round)), eps)
			if home[g] == nil {
				home[g] = map[string]int{}
			}
			home[g][got.Metadata().Name]++
		}
	}
	used := map[string]bool{}
	for g, m := range home {
		if len(m) != 1 {
			t.Errorf("group %d spread over %v, want one endpoint (the load stays within the queue gap)", g, m)
		}
		for n := range m {
			used[n] = true
		}
	}
	if len(used) < 3 {
		t.Errorf("4 groups landed on %d endpoints, want them spread by load", len(used))
	}
}

// TestHotEndpointShedsLoad keeps every request in flight, all sharing one
// prefix: affinity holds each endpoint until its queue is queueGap above the
// least-loaded, then load wins and the prefix spreads, so no endpoint runs
// more than queueGap+1 ahead of the idlest.
func TestHotEndpointShedsLoad(t *testing.T) {
	p := profile(t, "default", presets.DefaultSpec(), plugintest.NewHandle())
	eps := endpoints(4)
	system := systemPrompt(3, 4000)
	gap := int64(prefixcache.DefaultQueueGap)
	served := map[string]int{}
	var order []string
	for i := 0; i < 80; i++ {
		got := route(t, p, chat(system, fmt.Sprintf("request %d", i)), eps)
		served[got.Metadata().Name]++
		order = append(order, got.Metadata().Name)
		lo, hi := int64(1<<62), int64(0)
		for _, e := range eps {
			n, _ := e.InFlight()
			lo, hi = min(lo, n), max(hi, n)
		}
		if hi-lo > gap+1 {
			t.Fatalf("after %d requests in flight the busiest endpoint has %d more than the idlest; load must win past the gap %d", i+1, hi-lo, gap)
		}
	}
	if len(served) != 4 {
		t.Errorf("served by %v, want all 4 endpoints once the first is hot", served)
	}
	// Affinity held the first endpoint for gap+1 requests, then it shed.
	for i := 1; i <= int(gap); i++ {
		if order[i] != order[0] {
			t.Fatalf("request %d went to %s, but %s held the prefix and was within the gap: %v", i+1, order[i], order[0], order[:gap+2])
		}
	}
	if order[gap+1] == order[0] {
		t.Errorf("request %d still went to %s with %d in flight, past the gap", gap+2, order[0], gap+1)
	}
}

// TestHotEndpointExplains shows the explanation when a scraped queue, not
// only in-flight requests, makes the endpoint holding the prefix hot.
func TestHotEndpointExplains(t *testing.T) {
	p := profile(t, "default", presets.DefaultSpec(), plugintest.NewHandle())
	eps := endpoints(3)
	req := chat(systemPrompt(4, 1000), "hi")
	holder := route(t, p, req, eps)
	holder.AddInFlight(-1, 0)
	holder.SetMetrics(framework.Metrics{WaitingRequests: 30, KVCacheUsage: 0.5})
	res, err := p.Schedule(t.Context(), framework.NewCycleState(), req, plugintest.Endpoints(eps...), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Picked[0] == holder {
		t.Errorf("picked the hot endpoint %s", holder.Metadata().Name)
	}
	if !slices.ContainsFunc(res.Explanation.Notes, func(n string) bool {
		return strings.HasPrefix(n, "prefix-cache: load overrides affinity on "+holder.Metadata().Name)
	}) {
		t.Errorf("notes %q, want one saying load overrides affinity on %s", res.Explanation.Notes, holder.Metadata().Name)
	}
}

// TestEqualScoresSpread checks that the default profile does not herd when
// nothing distinguishes the endpoints.
func TestEqualScoresSpread(t *testing.T) {
	p := profile(t, "default", presets.DefaultSpec(), plugintest.NewHandle())
	eps := endpoints(4)
	counts := map[string]int{}
	for i := 0; i < 2000; i++ {
		res, err := p.Schedule(t.Context(), nil, chat(fmt.Sprint("short ", i)), plugintest.Endpoints(eps...), false)
		if err != nil {
			t.Fatal(err)
		}
		counts[res.Picked[0].Metadata().Name]++
	}
	for _, e := range eps {
		if c := counts[e.Metadata().Name]; c < 350 || c > 650 {
			t.Errorf("%s got %d of 2000 equal-score picks, want about 500", e.Metadata().Name, c)
		}
	}
}

// TestExplainGolden pins the explanation of a default-profile decision:
// e0 holds the prompt but is hot, e1 holds half of it and is busier than
// e2, which holds nothing: e1 wins on affinity, e0 is overridden by load.
func TestExplainGolden(t *testing.T) {
	p := profile(t, "default", presets.DefaultSpec(), plugintest.NewHandle())
	eps := endpoints(3)
	tok := make([]uint32, 640)
	for i := range tok {
		tok[i] = uint32(i)
	}
	full := &framework.Request{ID: "full", Model: "llama-3-8b", Prompt: framework.Prompt{TokenIDs: tok}, PromptTokens: len(tok)}
	half := &framework.Request{ID: "half", Model: "llama-3-8b", Prompt: framework.Prompt{TokenIDs: tok[:320]}, PromptTokens: 320}
	for _, x := range []struct {
		req *framework.Request
		ep  *plugintest.Endpoint
	}{{full, eps[0]}, {half, eps[1]}} {
		s := framework.NewCycleState()
		p.PreRequest(t.Context(), s, x.req, x.ep)
	}
	eps[0].WithMetrics(framework.Metrics{WaitingRequests: 20, RunningRequests: 40, KVCacheUsage: 0.8})
	eps[1].WithMetrics(framework.Metrics{WaitingRequests: 2, RunningRequests: 30, KVCacheUsage: 0.45}).WithInFlight(3, 0)
	eps[2].WithMetrics(framework.Metrics{WaitingRequests: 0, RunningRequests: 10, KVCacheUsage: 0.2}).WithInFlight(1, 0)
	res, err := p.Schedule(t.Context(), framework.NewCycleState(), full, plugintest.Endpoints(eps...), true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(res.Explanation, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "explain-default.golden.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("explanation (-golden +got):\n%s", diff)
	}
}
