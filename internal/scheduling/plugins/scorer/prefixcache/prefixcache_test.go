package prefixcache_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/halyard-dev/halyard/internal/prefixindex"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
)

func ids(from, n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(from + i)
	}
	return out
}

func cat(parts ...[]uint32) []uint32 {
	var out []uint32
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func tokReq(model string, tokens []uint32) *framework.Request {
	return &framework.Request{Model: model, Prompt: framework.Prompt{TokenIDs: tokens}}
}

// send runs the scorer's PreRequest as the router does after picking.
func send(t *testing.T, s *prefixcache.Scorer, req *framework.Request, to framework.Endpoint) *framework.CycleState {
	t.Helper()
	state := framework.NewCycleState()
	s.PreRequest(t.Context(), state, req, to)
	return state
}

var approx = cmpopts.EquateApprox(0, 1e-9)

func TestScoreIsTheCachedShareOfThePrompt(t *testing.T) {
	system := ids(1, 160) // 10 blocks
	a := cat(system, ids(1000, 160))
	b := cat(system, ids(2000, 480))
	tests := []struct {
		name string
		sent map[string][]*framework.Request // endpoint → requests sent there
		ask  *framework.Request
		want []float64 // e0, e1, e2
	}{
		{"cold index", nil, tokReq("m", a), []float64{0, 0, 0}},
		{"same prompt again", map[string][]*framework.Request{"e0": {tokReq("m", a)}}, tokReq("m", a), []float64{1, 0, 0}},
		{"shared system prompt only", map[string][]*framework.Request{"e1": {tokReq("m", a)}}, tokReq("m", b), []float64{0, 10.0 / 40, 0}},
		{"longest prefix wins", map[string][]*framework.Request{"e0": {tokReq("m", a)}, "e2": {tokReq("m", b)}}, tokReq("m", b), []float64{10.0 / 40, 0, 1}},
		{"partial last block ignored", map[string][]*framework.Request{"e0": {tokReq("m", a)}}, tokReq("m", cat(a, ids(9, 15))), []float64{1, 0, 0}},
		{"prompt shorter than a block", map[string][]*framework.Request{"e0": {tokReq("m", ids(1, 10))}}, tokReq("m", ids(1, 10)), []float64{0, 0, 0}},
		{"another model shares nothing", map[string][]*framework.Request{"e0": {tokReq("m", a)}}, tokReq("n", a), []float64{0, 0, 0}},
		{"a LoRA adapter's cache is its own", map[string][]*framework.Request{"e0": {tokReq("m", a)}},
			&framework.Request{Model: "sql", TargetModel: "sql-lora", Adapter: "sql-lora", Prompt: framework.Prompt{TokenIDs: a}}, []float64{0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := plugintest.NewHandle()
			s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, "", h)
			eps := plugintest.Endpoints(plugintest.NewEndpoint("e0"), plugintest.NewEndpoint("e1"), plugintest.NewEndpoint("e2"))
			byName := map[string]framework.Endpoint{"e0": eps[0], "e1": eps[1], "e2": eps[2]}
			for ep, reqs := range tt.sent {
				for _, r := range reqs {
					send(t, s, r, byName[ep])
				}
			}
			got := plugintest.Score(s, framework.NewCycleState(), tt.ask, eps)
			if diff := cmp.Diff(tt.want, got, approx); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
		})
	}
}

// render renders a conversation as the router does for chat requests.
func render(msgs ...string) []byte {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "<|message|>%s\n", m)
	}
	return []byte(b.String())
}

func TestChatTurnsMatchTheEarlierTurns(t *testing.T) {
	s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, "", plugintest.NewHandle())
	eps := plugintest.Endpoints(plugintest.NewEndpoint("e0"), plugintest.NewEndpoint("e1"))
	system := strings.Repeat("Answer as a ship's navigator would. ", 60)
	turn1 := &framework.Request{Model: "m", Prompt: framework.Prompt{Text: render(system, "Where are we?")}}
	turn2 := &framework.Request{Model: "m", Prompt: framework.Prompt{Text: render(system, "Where are we?", "Off Cape Horn.", "How far to port?")}}
	send(t, s, turn1, eps[1])
	got := plugintest.Score(s, framework.NewCycleState(), turn2, eps)
	want := float64(len(turn1.Prompt.Text)/64) / float64(len(turn2.Prompt.Text)/64)
	if diff := cmp.Diff([]float64{0, want}, got, approx); diff != "" {
		t.Errorf("turn 2 scores (-want +got):\n%s", diff)
	}
}

func TestLoadOverridesAffinity(t *testing.T) {
	prompt := ids(1, 320)
	type load struct {
		waiting  int
		inflight int64
		kv       float64
	}
	tests := []struct {
		name      string
		params    string
		loads     []load // e0 holds the prompt, e1 and e2 do not
		want      []float64
		wantNotes int
	}{
		{"balanced: affinity stands", "", []load{{2, 3, 0.5}, {1, 2, 0.4}, {0, 0, 0.3}}, []float64{1, 0, 0}, 0},
		{"queue gap at the threshold stands", "", []load{{8, 8, 0.2}, {0, 0, 0.2}, {1, 0, 0.2}}, []float64{1, 0, 0}, 0},
		{"queue gap above the threshold", "", []load{{9, 8, 0.2}, {0, 0, 0.2}, {1, 0, 0.2}}, []float64{0, 0, 0}, 1},
		{"in-flight counts toward the gap", "", []load{{0, 17, 0.2}, {0, 0, 0.2}, {0, 1, 0.2}}, []float64{0, 0, 0}, 1},
		{"KV gap above the threshold", "", []load{{0, 0, 0.95}, {0, 0, 0.6}, {0, 0, 0.5}}, []float64{0, 0, 0}, 1},
		{"KV gap within the threshold", "", []load{{0, 0, 0.85}, {0, 0, 0.6}, {0, 0, 0.5}}, []float64{1, 0, 0}, 0},
		{"all equally hot: affinity stands", "", []load{{50, 50, 0.9}, {50, 50, 0.9}, {50, 50, 0.9}}, []float64{1, 0, 0}, 0},
		{"custom queue gap", `{"loadOverride":{"queueGap":2}}`, []load{{3, 0, 0}, {0, 0, 0}, {0, 0, 0}}, []float64{0, 0, 0}, 1},
		{"checks off", `{"loadOverride":{"queueGap":0,"kvUsageGap":0}}`, []load{{100, 0, 1}, {0, 0, 0}, {0, 0, 0}}, []float64{1, 0, 0}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, tt.params, plugintest.NewHandle())
			var eps []*plugintest.Endpoint
			for i, l := range tt.loads {
				eps = append(eps, plugintest.NewEndpoint(fmt.Sprint("e", i)).
					WithMetrics(framework.Metrics{WaitingRequests: l.waiting, KVCacheUsage: l.kv}).
					WithInFlight(l.inflight, 0))
			}
			send(t, s, tokReq("m", prompt), eps[0])
			state := framework.NewCycleState()
			framework.SetExplaining(state)
			got := plugintest.Score(s, state, tokReq("m", prompt), plugintest.Endpoints(eps...))
			if diff := cmp.Diff(tt.want, got, approx); diff != "" {
				t.Errorf("scores (-want +got):\n%s", diff)
			}
			notes := framework.Notes(state)
			if len(notes) != tt.wantNotes {
				t.Fatalf("notes %q, want %d", notes, tt.wantNotes)
			}
			if len(notes) > 0 && !strings.Contains(notes[0], "load overrides affinity on e0") {
				t.Errorf("note %q does not say load overrode affinity on e0", notes[0])
			}
			if got := s.Stats().LoadOverrides; got != uint64(tt.wantNotes) {
				t.Errorf("LoadOverrides = %d, want %d", got, tt.wantNotes)
			}
			// The cycle state keeps the true matches and marks the
			// overridden endpoint (e0) for the predicted-latency scorer.
			m, _ := framework.ReadAs[prefixcache.Matched](state, prefixcache.MatchedKey)
			var wantOver []bool
			if tt.wantNotes > 0 {
				wantOver = []bool{true, false, false}
			}
			if !cmp.Equal(m.Overridden, wantOver) || m.Tokens[0] != len(prompt) {
				t.Errorf("matched %+v, want e0's %d tokens kept and overridden %v", m, len(prompt), wantOver)
			}
		})
	}
}

func TestPreRequestLeavesThePredictedHit(t *testing.T) {
	s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, "", plugintest.NewHandle())
	e0 := plugintest.NewEndpoint("e0")
	first := tokReq("m", ids(1, 64))
	state := framework.NewCycleState()
	plugintest.Score(s, state, first, plugintest.Endpoints(e0))
	s.PreRequest(t.Context(), state, first, e0)
	got, ok := framework.ReadAs[prefixcache.PredictedHit](state, prefixcache.PredictedHitKey)
	if !ok || !cmp.Equal(got, prefixcache.PredictedHit{Endpoint: "e0", PromptBlocks: 4}) {
		t.Errorf("first request: predicted %+v (found %v), want 0 of 4 blocks on e0", got, ok)
	}
	second := send(t, s, tokReq("m", cat(ids(1, 64), ids(500, 64))), e0)
	got, _ = framework.ReadAs[prefixcache.PredictedHit](second, prefixcache.PredictedHitKey)
	if want := (prefixcache.PredictedHit{Endpoint: "e0", MatchedBlocks: 4, PromptBlocks: 8, Ratio: 0.5, MatchedTokens: 64}); !cmp.Equal(got, want) {
		t.Errorf("second request: predicted %+v, want %+v", got, want)
	}
	// Text prompts count 64-byte chunks as 16 tokens.
	text := &framework.Request{Model: "m", Prompt: framework.Prompt{Text: []byte(strings.Repeat("x", 256))}}
	send(t, s, text, e0)
	third := send(t, s, text, e0)
	got, _ = framework.ReadAs[prefixcache.PredictedHit](third, prefixcache.PredictedHitKey)
	if want := (prefixcache.PredictedHit{Endpoint: "e0", MatchedBlocks: 4, PromptBlocks: 4, Ratio: 1, MatchedTokens: 64}); !cmp.Equal(got, want) {
		t.Errorf("text request: predicted %+v, want %+v", got, want)
	}
}

// recordingIndex is an Index that counts its calls, around an approximate
// index.
type recordingIndex struct {
	prefixcache.Index
	matches, adds int
}

func (r *recordingIndex) Match(c []prefixindex.BlockHash, eps []string, m []int) {
	r.matches++
	r.Index.Match(c, eps, m)
}

func (r *recordingIndex) Add(ep string, capacity int, c []prefixindex.BlockHash) {
	r.adds++
	r.Index.Add(ep, capacity, c)
}

func TestFactoryReadsTheSharedIndex(t *testing.T) {
	var wrapped *recordingIndex
	h := plugintest.NewHandle()
	h.Instances = map[string]any{prefixcache.SharedIndexKey: prefixcache.SharedIndex{BlockSize: 16, Wrap: func(approx *prefixindex.Approximate) prefixcache.Index {
		wrapped = &recordingIndex{Index: approx}
		return wrapped
	}}}
	s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, `{"blockSize":16}`, h)
	e0 := plugintest.NewEndpoint("e0")
	req := tokReq("m", ids(1, 64))
	send(t, s, req, e0)
	got := plugintest.Score(s, nil, req, plugintest.Endpoints(e0))
	if diff := cmp.Diff([]float64{1}, got, approx); diff != "" {
		t.Errorf("scores through the wrapper (-want +got):\n%s", diff)
	}
	if wrapped.matches != 2 || wrapped.adds != 1 {
		t.Errorf("wrapper saw %d matches and %d adds, want 2 and 1", wrapped.matches, wrapped.adds)
	}
	if s.Stats().Index.Blocks != 4 {
		t.Errorf("stats report %d blocks of the approximate index, want 4", s.Stats().Index.Blocks)
	}
	nilWrap := plugintest.NewHandle()
	nilWrap.Instances = map[string]any{prefixcache.SharedIndexKey: prefixcache.SharedIndex{BlockSize: 16, Wrap: func(*prefixindex.Approximate) prefixcache.Index { return nil }}}
	if _, err := prefixcache.Factory("p", nil, nilWrap); err == nil {
		t.Error("a wrapper returning nil was accepted")
	}
	if _, err := prefixcache.Factory("p", []byte(`{"blockSize":0}`), h); err == nil || !strings.Contains(err.Error(), "params.blockSize") {
		t.Errorf("invalid params: error = %v", err)
	}
	if _, err := prefixcache.Factory("p", []byte(`{"blockSize":32}`), h); err == nil || !strings.Contains(err.Error(), "params.blockSize: 32 differs from the shared index's block size 16") {
		t.Errorf("block size unlike the shared index's: error = %v", err)
	}
	wrong := plugintest.NewHandle()
	wrong.Instances = map[string]any{prefixcache.SharedIndexKey: 1}
	if _, err := prefixcache.Factory("p", nil, wrong); err == nil {
		t.Error("a shared instance of the wrong type was accepted")
	}
}

func TestIndexFollowsTheEngineCapacity(t *testing.T) {
	s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, "", plugintest.NewHandle())
	// 8 engine blocks of 32 tokens: 256 tokens, 16 of our blocks of 16.
	small := plugintest.NewEndpoint("small").WithMetrics(framework.Metrics{NumBlocks: 8, BlockSize: 32})
	old := tokReq("m", ids(1, 160))       // 10 blocks
	newer := tokReq("m", ids(10000, 160)) // 10 more: 4 of old's go
	send(t, s, old, small)
	send(t, s, newer, small)
	if got := s.Stats().Index.Blocks; got != 16 {
		t.Errorf("index holds %d blocks for an endpoint of 16, want 16", got)
	}
	got := plugintest.Score(s, nil, old, plugintest.Endpoints(small))
	if diff := cmp.Diff([]float64{0.6}, got, approx); diff != "" {
		t.Errorf("old prompt after eviction (-want +got):\n%s", diff)
	}
}

func TestLongPromptsAreCapped(t *testing.T) {
	s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, `{"maxPromptBlocks":4}`, plugintest.NewHandle())
	e := plugintest.NewEndpoint("e")
	send(t, s, tokReq("m", ids(1, 64)), e)
	// 10 blocks long, only the first 4 count, and all 4 are cached.
	got := plugintest.Score(s, nil, tokReq("m", ids(1, 160)), plugintest.Endpoints(e))
	if diff := cmp.Diff([]float64{1}, got, approx); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
}

func TestFactoryValidates(t *testing.T) {
	tests := []struct{ params, want string }{
		{`{"blockSize":0}`, "params.blockSize: must be positive, got 0"},
		{`{"chunkBytes":-1}`, "params.chunkBytes: must be positive, got -1"},
		{`{"maxIndexBlocks":0}`, "params.maxIndexBlocks: must be positive"},
		{`{"loadOverride":{"queueGap":-1}}`, "params.loadOverride.queueGap: must not be negative, got -1"},
		{`{"loadOverride":{"kvUsageGap":1.5}}`, "params.loadOverride.kvUsageGap: must be in [0,1], got 1.5"},
		{`{"loadOverride":{"queue":1}}`, `params: json: unknown field "queue"`},
		{`{"blockSize":"16"}`, "params: json: cannot unmarshal string"},
	}
	for _, tt := range tests {
		_, err := prefixcache.Factory("p", []byte(tt.params), plugintest.NewHandle())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Factory(%s) error = %v, want it to contain %q", tt.params, err, tt.want)
		}
	}
	s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, `{"blockSize":64,"loadOverride":{"queueGap":3}}`, plugintest.NewHandle())
	if s.TypedName().Type != prefixcache.Type {
		t.Errorf("type %q", s.TypedName().Type)
	}
}

func TestConcurrentScoreAndPreRequest(t *testing.T) {
	s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, `{"maxIndexBlocks":500,"defaultCapacityTokens":2000}`, plugintest.NewHandle())
	eps := plugintest.Endpoints(plugintest.NewEndpoint("a"), plugintest.NewEndpoint("b"), plugintest.NewEndpoint("c"))
	system := ids(1, 320)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				req := tokReq("m", cat(system, ids(1000*(g*200+i), 16*(i%7))))
				state := framework.NewCycleState()
				scores := plugintest.Score(s, state, req, eps)
				for _, v := range scores {
					if v < 0 || v > 1 {
						t.Errorf("score %v outside [0,1]", v)
					}
				}
				s.PreRequest(t.Context(), state, req, eps[i%3])
			}
		}()
	}
	wg.Wait()
	if st := s.Stats().Index; st.Blocks > 500 {
		t.Errorf("index holds %d blocks, above its bound", st.Blocks)
	}
}

// TestMatchedTokensOfATextHead: for a text prompt of which the router keeps
// only the head (Prompt.TextBytes), matched tokens are the matched bytes'
// share of the whole text, not of the head.
func TestMatchedTokensOfATextHead(t *testing.T) {
	s := plugintest.Build[*prefixcache.Scorer](t, prefixcache.Factory, "", plugintest.NewHandle())
	e0 := plugintest.NewEndpoint("e0")
	head := []byte(strings.Repeat("x", 256)) // 4 chunks
	send(t, s, &framework.Request{Model: "m", Prompt: framework.Prompt{Text: head}}, e0)
	for _, tc := range []struct {
		textBytes, want int
	}{{0, 400}, {1024, 100}} {
		state := framework.NewCycleState()
		ask := &framework.Request{Model: "m", Prompt: framework.Prompt{Text: head, TextBytes: tc.textBytes}, PromptTokens: 400}
		plugintest.Score(s, state, ask, plugintest.Endpoints(e0))
		m, ok := framework.ReadAs[prefixcache.Matched](state, prefixcache.MatchedKey)
		if !ok || len(m.Tokens) != 1 || m.Tokens[0] != tc.want {
			t.Errorf("TextBytes %d: matched %+v, want %d tokens", tc.textBytes, m, tc.want)
		}
	}
}
