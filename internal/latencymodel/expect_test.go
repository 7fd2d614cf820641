package latencymodel_test

import (
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/latencymodel"
	"github.com/halyard-dev/halyard/internal/steptime"
)

// A buffered answer reports no first token: with ExpectFirst its prefill
// stops counting as waiting at the expected time, and its decode then
// counts; without it, it waits until Done. Its estimated decode feeds no
// step-time observation.
func TestExpectFirstMovesABufferedAnswerToDecoding(t *testing.T) {
	t0 := time.Unix(100, 0)
	fc := latencymodel.FitConfig{Prior: steptime.H100Llama3_8B}
	e := latencymodel.NewEngine(latencymodel.Config{Fit: fc})
	e.Sent("buffered", t0, 4000, 4000, 200)
	e.Sent("plain", t0, 2000, 2000, 200) // also buffered, but nobody said so
	e.ExpectFirst("buffered", t0.Add(80*time.Millisecond))

	e.Expire(t0.Add(79 * time.Millisecond))
	if w, d := e.InFlight(); w != 2 || d != 0 {
		t.Fatalf("before the expected time: %d waiting, %d decoding; want 2, 0", w, d)
	}
	before := e.Predict(1000, 1000, latencymodel.Scraped{})
	e.Expire(t0.Add(80 * time.Millisecond))
	if w, d := e.InFlight(); w != 1 || d != 1 {
		t.Fatalf("at the expected time: %d waiting, %d decoding; want 1, 1", w, d)
	}
	after := e.Predict(1000, 1000, latencymodel.Scraped{})
	if before.WaitingTokens != 6000 || after.WaitingTokens != 2000 {
		t.Errorf("waiting tokens %d then %d, want 6000 then 2000", before.WaitingTokens, after.WaitingTokens)
	}
	if !(after.TTFTMs < before.TTFTMs) || after.Decoding != 1 {
		t.Errorf("predicted TTFT %.1f then %.1f ms with %d decoding; want it lower, with the buffered answer decoding", before.TTFTMs, after.TTFTMs, after.Decoding)
	}

	prior := e.Coefficients()
	e.Done("buffered", t0.Add(2*time.Second), 200)
	if got := e.Coefficients(); got != prior {
		t.Errorf("an estimated first token fed the fit: %+v, was %+v", got, prior)
	}
	if w, d := e.InFlight(); w != 1 || d != 0 {
		t.Errorf("after Done: %d waiting, %d decoding; want 1, 0", w, d)
	}
	// A first token reported after all wins over the expectation, and a
	// finished request is never moved.
	e.ExpectFirst("plain", t0.Add(time.Second))
	e.FirstToken("plain", t0.Add(500*time.Millisecond))
	e.Expire(t0.Add(2 * time.Second))
	if w, d := e.InFlight(); w != 0 || d != 1 {
		t.Errorf("plain: %d waiting, %d decoding; want 0, 1", w, d)
	}
	e.ExpectFirst("gone", t0) // unknown: ignored
	e.Expire(t0.Add(3 * time.Second))
	if w, d := e.InFlight(); w != 0 || d != 1 {
		t.Errorf("after an unknown expectation: %d waiting, %d decoding; want 0, 1", w, d)
	}
}
