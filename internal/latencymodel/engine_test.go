package latencymodel_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/latencymodel"
	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/steptime"
)

// drive runs a simulated engine of profile on a virtual clock under a
// Poisson load whose rate changes every phase, and feeds the estimate what
// a router sees: the send, the first token and the end of each request.
func drive(t *testing.T, profile string, est *latencymodel.Engine, requests int, seed uint64) {
	t.Helper()
	p, err := simulator.LoadProfile(profile)
	if err != nil {
		t.Fatal(err)
	}
	clock := simclock.NewVirtual(time.Unix(0, 0))
	eng, err := simulator.NewEngine(p.Config("m"), clock)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	// Phases of different rates and prompt lengths, so that the batch's
	// decode count and context vary apart.
	phases := []struct {
		rate           float64 // requests per second
		prompt, spread int     // prompt tokens: prompt + [0, spread)
	}{{2, 4000, 4000}, {12, 200, 800}, {6, 1000, 3000}, {20, 100, 300}, {3, 6000, 2000}, {9, 500, 2500}}
	at := time.Duration(0)
	for i := range requests {
		ph := phases[i*len(phases)/requests]
		at += time.Duration(rng.ExpFloat64() / ph.rate * float64(time.Second))
		promptLen := ph.prompt + rng.IntN(ph.spread)
		output := 20 + rng.IntN(300)
		prompt := make([]uint32, promptLen)
		for j := range prompt {
			prompt[j] = uint32(i)<<14 | uint32(j) // unique: nothing is cached
		}
		id := fmt.Sprint(i)
		clock.AfterFunc(at, func() {
			est.Sent(id, clock.Now(), promptLen, promptLen, output)
			err := eng.Submit(simulator.Request{ID: id, Prompt: prompt, MaxTokens: output, IgnoreEOS: true, Sink: simulator.SinkFuncs{
				OnToken: func(_ uint32, index int, now time.Time) {
					if index == 0 {
						est.FirstToken(id, now)
					}
				},
				OnDone: func(r simulator.Result) { est.Done(id, r.Finished, r.OutputTokens) },
			}})
			if err != nil {
				t.Errorf("submit %s: %v", id, err)
			}
		})
	}
	clock.Run()
}

// The fit starts from the H100 prior and, fed an A100 engine's traffic,
// converges to the A100's step time within 10 % over the batches such an
// engine runs (up to 64 sequences and 128k tokens of context).
func TestFitConvergesToUnseenProfile(t *testing.T) {
	a100, err := simulator.LoadProfile("a100-llama3-8b")
	if err != nil {
		t.Fatal(err)
	}
	est := latencymodel.NewEngine(latencymodel.Config{
		Fit:              latencymodel.FitConfig{Prior: steptime.H100Llama3_8B},
		MaxBatchedTokens: a100.Capacity.MaxNumBatchedTokens,
	})
	prior := est.Coefficients()
	drive(t, "a100-llama3-8b", est, 1200, 7)
	got := est.Coefficients()
	want := a100.StepTime
	t.Logf("prior %+v\nfitted %+v\ntruth  %+v", prior, got, want)
	worstPrior, worstFit := 0.0, 0.0
	for _, pre := range []float64{0, 256, 1024, 2048} {
		for _, dec := range []float64{1, 8, 32, 64} {
			for _, ctxPerSeq := range []float64{500, 2000, 4000} {
				if dec*ctxPerSeq > 128_000 {
					continue // beyond the batches the workload makes
				}
				truth := want.Ms(pre, dec, dec*ctxPerSeq)
				errFit := math.Abs(got.Ms(pre, dec, dec*ctxPerSeq)-truth) / truth
				errPrior := math.Abs(prior.Ms(pre, dec, dec*ctxPerSeq)-truth) / truth
				worstFit, worstPrior = max(worstFit, errFit), max(worstPrior, errPrior)
				if errFit > 0.10 {
					t.Errorf("step(prefill %v, decode %v, context %v): fitted %.2f ms, a100 %.2f ms (%.0f%% off)",
						pre, dec, dec*ctxPerSeq, got.Ms(pre, dec, dec*ctxPerSeq), truth, 100*errFit)
				}
			}
		}
	}
	t.Logf("worst relative step-time error: prior %.0f%%, fitted %.1f%%", 100*worstPrior, 100*worstFit)
}

// A frozen fit fed the same A100 traffic counts its observations and
// stays at its H100 prior, coefficient for coefficient.
func TestFrozenFitStaysAtPrior(t *testing.T) {
	est := latencymodel.NewEngine(latencymodel.Config{Fit: latencymodel.FitConfig{Prior: steptime.H100Llama3_8B, Frozen: true}})
	drive(t, "a100-llama3-8b", est, 200, 7)
	if n := est.Fit().Observations(); n == 0 {
		t.Fatal("no observation reached the fit: the test drives nothing")
	}
	if got := est.Coefficients(); got != steptime.H100Llama3_8B {
		t.Errorf("frozen fit moved: %+v, prior %+v", got, steptime.H100Llama3_8B)
	}
}

// DecodeStepMs is the decode batch's step alone; TPOTMs adds the prefill the
// engine has mixed into its steps, which it learns when a stream that
// decoded through another request's prefill ends.
func TestDecodeStepLeavesOutThePrefillRate(t *testing.T) {
	e := latencymodel.NewEngine(latencymodel.Config{Fit: latencymodel.FitConfig{Frozen: true}})
	t0 := time.Unix(0, 0)
	e.Sent("a", t0, 1000, 1000, 50)
	e.FirstToken("a", t0.Add(20*time.Millisecond))
	p := e.Predict(2000, 2000, latencymodel.Scraped{})
	if p.TPOTMs != p.DecodeStepMs {
		t.Fatalf("no prefill seen yet: TPOT %v ms, decode step %v ms, want equal", p.TPOTMs, p.DecodeStepMs)
	}
	// b's 8,000-token prefill runs while a decodes.
	e.Sent("b", t0.Add(30*time.Millisecond), 8000, 8000, 50)
	e.FirstToken("b", t0.Add(200*time.Millisecond))
	e.Done("a", t0.Add(time.Second), 50)
	p = e.Predict(2000, 2000, latencymodel.Scraped{})
	if !(p.TPOTMs > p.DecodeStepMs) {
		t.Errorf("after a stream decoded through a prefill: TPOT %v ms, decode step %v ms, want TPOT above", p.TPOTMs, p.DecodeStepMs)
	}
	if p.DecodeStepMs <= 0 {
		t.Errorf("decode step %v ms, want positive", p.DecodeStepMs)
	}
}
