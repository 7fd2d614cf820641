package predictedlatency_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/plugintest"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/predictedlatency"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins/scorer/prefixcache"
)

// With the queues of triageFleet (120k, 80k and 40k tokens: about 2.2,
// 1.5 and 0.75 s of wait ahead of a 20k-token request's own 0.4 s), the
// slack decides which endpoints count as the cheapest.
func TestSlackCountsNearCostsAsTheLeast(t *testing.T) {
	for _, tt := range []struct {
		name   string
		params string
		ones   [3]bool // which endpoints score 1
	}{
		{"none: the least alone", `{}`, [3]bool{false, false, true}},
		{"an absolute slack reaching b", `{"slackMs": 800}`, [3]bool{false, true, true}},
		{"an absolute slack short of b", `{"slackMs": 300}`, [3]bool{false, false, true}},
		{"a relative slack reaching b", `{"slackShare": 1}`, [3]bool{false, true, true}},
		{"a slack reaching all", `{"slackShare": 1, "slackMs": 1000}`, [3]bool{true, true, true}},
		{"a relative slack capped short of b", `{"slackShare": 1, "slackMaxMs": 300}`, [3]bool{false, false, true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, eps := triageFleet(t, tt.params, triageQueues)
			scores, _ := score(s, eps, 20_000, nil, "0")
			for i, sc := range scores {
				if got := sc == 1; got != tt.ones[i] {
					t.Errorf("endpoint %d scores %v; want 1: %v (scores %v)", i, sc, tt.ones[i], scores)
				}
			}
			// A costlier endpoint outside the slack still scores below 1,
			// and the order of costs is kept: a scores least.
			if !tt.ones[0] && !(scores[0] < 1 && scores[0] <= scores[1]) {
				t.Errorf("scores %v: a outside the slack must score below 1 and not above b", scores)
			}
		})
	}
}

// honorLoadOverride predicts an endpoint whose affinity the prefix-cache
// scorer's load override zeroed as holding none of the prompt: the cached
// endpoint a, which wins on its cache hit without the param, loses to the
// idle c with it; an endpoint not overridden keeps its hit.
func TestHonorLoadOverride(t *testing.T) {
	for _, tt := range []struct {
		params       string
		overridden   []bool
		wantPick     int
		wantUncached string
	}{
		{`{}`, []bool{true, false, false}, 0, "0 uncached tokens"},
		{`{"honorLoadOverride": true}`, []bool{true, false, false}, 2, "20000 uncached tokens"},
		{`{"honorLoadOverride": true}`, nil, 0, "0 uncached tokens"},
	} {
		// a has 10k tokens queued, b 40k, c none; a holds the whole prompt.
		s, eps := triageFleet(t, tt.params, [3]int{10_000, 40_000, 0})
		st := framework.NewCycleState()
		framework.SetExplaining(st)
		st.Write(prefixcache.MatchedKey, prefixcache.Matched{Tokens: []int{20_000, 0, 0}, Overridden: tt.overridden})
		req := &framework.Request{ID: "new", PromptTokens: 20_000, MaxTokens: 100}
		scores := make([]float64, len(eps))
		s.Score(context.Background(), st, req, plugintest.Endpoints(eps...), scores)
		if got := argmax(scores); got != tt.wantPick {
			t.Errorf("%s, overridden %v: picked %d (scores %v), want %d", tt.params, tt.overridden, got, scores, tt.wantPick)
		}
		notes := strings.Join(framework.Notes(st), "\n")
		var aNote string
		for _, n := range framework.Notes(st) {
			if strings.Contains(n, " a predicted ttft") {
				aNote = n
			}
		}
		if !strings.Contains(aNote, tt.wantUncached) {
			t.Errorf("%s, overridden %v: a's note %q, want it to say %q\n%s", tt.params, tt.overridden, aNote, tt.wantUncached, notes)
		}
	}
}

// A request without a stream reports no first token: the scorer expects
// its prefill to end at its predicted TTFT, after which its prompt no
// longer counts as prefill queued ahead of the next request there. A
// streamed request keeps counting until its first token is reported.
func TestBufferedAnswerStopsQueueingAtItsPredictedTTFT(t *testing.T) {
	for _, stream := range []bool{false, true} {
		h := plugintest.NewHandle()
		pl, err := predictedlatency.Factory("pl", nil, h)
		if err != nil {
			t.Fatal(err)
		}
		s := pl.(*predictedlatency.Scorer)
		eps := []*plugintest.Endpoint{plugintest.NewEndpoint("a")}
		queued := func() int {
			return s.Predict(&framework.Request{ID: "probe", PromptTokens: 100}, plugintest.Endpoints(eps...), nil)[0].WaitingTokens
		}
		req := &framework.Request{ID: "r", PromptTokens: 8000, MaxTokens: 500, Stream: stream}
		st := framework.NewCycleState()
		scores := make([]float64, 1)
		s.Score(context.Background(), st, req, plugintest.Endpoints(eps...), scores)
		ttft := s.Predict(req, plugintest.Endpoints(eps...), nil)[0].TTFTMs
		s.PreRequest(context.Background(), st, req, eps[0])
		if got := queued(); got != 8000 {
			t.Fatalf("stream %v: %d tokens queued right after the send, want 8000", stream, got)
		}
		h.Clock.Advance(time.Duration(ttft*float64(time.Millisecond)) + time.Millisecond)
		want := 0
		if stream {
			want = 8000 // until its first token is reported
		}
		if got := queued(); got != want {
			t.Errorf("stream %v: %d tokens queued past the predicted TTFT (%.1f ms), want %d", stream, got, ttft, want)
		}
	}
}

// TestRemotePrefillPredictsNoPrefillAndDecodesAtOnce: with remotePrefill
// (a disaggregated pool's decode profile) a request is predicted with no
// uncached tokens of its own, since its KV arrives by transfer, and once
// sent it counts as decoding on its endpoint, not as prefill queued there,
// although no first token is reported; its context lengthens the decode
// step predicted for the next request. Without the param the same request
// queues its 8,000 tokens until its first token.
func TestRemotePrefillPredictsNoPrefillAndDecodesAtOnce(t *testing.T) {
	for _, remote := range []bool{true, false} {
		pl, err := predictedlatency.Factory("pl", []byte(fmt.Sprintf(`{"remotePrefill": %v}`, remote)), plugintest.NewHandle())
		if err != nil {
			t.Fatal(err)
		}
		s := pl.(*predictedlatency.Scorer)
		eps := []*plugintest.Endpoint{plugintest.NewEndpoint("d")}
		probe := func() predictedlatency.Candidate {
			return s.Predict(&framework.Request{ID: "probe", PromptTokens: 100}, plugintest.Endpoints(eps...), nil)[0]
		}
		before := probe()
		req := &framework.Request{ID: "r", PromptTokens: 8000, MaxTokens: 200, Stream: true}
		st := framework.NewCycleState()
		s.Score(context.Background(), st, req, plugintest.Endpoints(eps...), make([]float64, 1))
		if c := s.Predict(req, plugintest.Endpoints(eps...), nil)[0]; remote && c.Uncached != 0 {
			t.Errorf("remotePrefill: %d uncached tokens predicted, want 0", c.Uncached)
		}
		s.PreRequest(context.Background(), st, req, eps[0])
		after := probe()
		switch {
		case remote && (after.WaitingTokens != 0 || after.Decoding != before.Decoding+1 || !(after.DecodeStepMs > before.DecodeStepMs)):
			t.Errorf("remotePrefill: after the send %d tokens queued, %d decoding (before %d), decode step %.3f ms (before %.3f); want 0 queued, one more decoding, a longer step",
				after.WaitingTokens, after.Decoding, before.Decoding, after.DecodeStepMs, before.DecodeStepMs)
		case !remote && (after.WaitingTokens != 8000 || after.Decoding != before.Decoding):
			t.Errorf("without remotePrefill: after the send %d tokens queued, %d decoding; want 8000 queued, none decoding", after.WaitingTokens, after.Decoding)
		}
	}
}
