package latencymodel_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/latencymodel"
	"github.com/halyard-dev/halyard/internal/steptime"
)

// TestPredictSeesEveryEvent checks that each of Sent, FirstToken and Done
// (before and after the first token) is visible to the next prediction:
// PredictWith reads a snapshot that every event publishes.
func TestPredictSeesEveryEvent(t *testing.T) {
	e := latencymodel.NewEngine(latencymodel.Config{Fit: latencymodel.FitConfig{Frozen: true}})
	c := steptime.H100Llama3_8B
	t0 := time.Unix(0, 0)
	check := func(step string, waitingTokens, decoding int) {
		t.Helper()
		p := e.PredictWith(c, 100, 0, latencymodel.Scraped{})
		if p.WaitingTokens != waitingTokens || p.Decoding != decoding {
			t.Fatalf("after %s: waiting tokens %d, decoding %d; want %d, %d", step, p.WaitingTokens, p.Decoding, waitingTokens, decoding)
		}
	}
	check("nothing", 0, 0)
	e.Sent("a", t0, 1000, 600, 10)
	check("sent a", 600, 0)
	e.Sent("b", t0, 500, 500, 10)
	check("sent b", 1100, 0)
	e.FirstToken("a", t0.Add(time.Second))
	check("a's first token", 500, 1)
	e.Done("b", t0.Add(2*time.Second), 0)
	check("b done before its first token", 0, 1)
	e.Done("a", t0.Add(3*time.Second), 10)
	check("a done", 0, 0)
}

// TestPredictConcurrentWithEvents runs predictions while other goroutines
// record events (for the race detector), then checks the final counts.
func TestPredictConcurrentWithEvents(t *testing.T) {
	e := latencymodel.NewEngine(latencymodel.Config{})
	c := steptime.H100Llama3_8B
	t0 := time.Unix(0, 0)
	const workers, each = 4, 200
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var predictor sync.WaitGroup
	predictor.Add(1)
	go func() {
		defer predictor.Done()
		for {
			select {
			case <-stop:
				return
			default:
				if p := e.PredictWith(c, 100, 50, latencymodel.Scraped{}); p.WaitingTokens < 0 || p.Decoding < 0 {
					t.Errorf("negative counts: %+v", p)
					return
				}
			}
		}
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("%d-%d", w, i)
				at := t0.Add(time.Duration(i) * time.Millisecond)
				e.Sent(id, at, 200, 100, 8)
				if i%2 == 0 { // half finish; the other half stay waiting
					e.FirstToken(id, at.Add(time.Microsecond))
					if i%4 == 0 {
						e.Done(id, at.Add(2*time.Microsecond), 8)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	predictor.Wait()
	// Per worker: 100 waiting (odd i), 50 decoding (i%4 == 2), 50 done.
	p := e.PredictWith(c, 100, 50, latencymodel.Scraped{})
	if want := workers * each / 2 * 100; p.WaitingTokens != want {
		t.Errorf("waiting tokens %d, want %d", p.WaitingTokens, want)
	}
	if want := workers * each / 4; p.Decoding != want {
		t.Errorf("decoding %d, want %d", p.Decoding, want)
	}
}
