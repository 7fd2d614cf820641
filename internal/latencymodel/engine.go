package latencymodel

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/halyard-dev/halyard/internal/steptime"
)

// Config tunes an Engine.
type Config struct {
	// Fit configures the engine's own online step-time fit (its prior
	// among others) when Shared is nil.
	Fit FitConfig
	// Shared, when set, is a fit the engine shares with the other engines
	// of its pool: it feeds it and predicts from it.
	Shared *Fit
	// MaxBatchedTokens is the engine's token budget per step (vLLM's
	// max_num_batched_tokens), which chunks prefill. Default 8192.
	MaxBatchedTokens int
}

// Engine is the router's view of one engine: the work it has sent there
// that has not finished, and the online step-time fit. It is safe for
// concurrent use.
type Engine struct {
	// load is the counters PredictWith and InFlight read, published by every change
	// under mu, so that a scheduling cycle reads each of its endpoints
	// with one atomic load rather than a lock.
	load   atomic.Pointer[load]
	mu     sync.Mutex
	fit    *Fit
	budget int
	reqs   map[string]*request
	// expect holds the requests whose first token will not be reported
	// (ExpectFirst), each moved to decoding at its expected time;
	// nextExpect is the earliest of those times in Unix nanoseconds
	// (math.MaxInt64 when none), read without the lock by Expire.
	expect     map[string]time.Time
	nextExpect atomic.Int64

	waiting       int     // sent, first token not seen
	waitingTokens int     // their uncached prompt tokens
	decoding      int     // first token seen, not done
	decodeContext int     // Σ context (prompt + half the output) of decoding requests
	prefillRate   float64 // observed prefill tokens per step while decoding (EWMA)
	meanUncached  float64 // EWMA of requests' uncached tokens

	// Running integrals since the first event: ∫decoding dt, ∫context dt
	// (seconds), and the uncached tokens whose prefill has finished.
	last        time.Time
	intDecode   float64
	intContext  float64
	prefillDone float64
}

// load is a snapshot of the counters a prediction reads.
type load struct {
	waiting, waitingTokens, decoding, decodeContext int
	prefillRate, meanUncached                       float64
}

// publish makes the current counters visible to PredictWith. Callers hold
// mu.
func (e *Engine) publish() {
	e.load.Store(&load{
		waiting: e.waiting, waitingTokens: e.waitingTokens,
		decoding: e.decoding, decodeContext: e.decodeContext,
		prefillRate: e.prefillRate, meanUncached: e.meanUncached,
	})
}

type request struct {
	uncached, context int
	firstSeen         bool
	// estimated: its first token was not observed but assumed at its
	// expected time, so its decode is no observation of the step time.
	estimated    bool
	first        time.Time
	intDecode0   float64
	intContext0  float64
	prefillDone0 float64
}

// NewEngine returns an empty engine estimate.
func NewEngine(c Config) *Engine {
	if c.MaxBatchedTokens <= 0 {
		c.MaxBatchedTokens = 8192
	}
	fit := c.Shared
	if fit == nil {
		fit = NewFit(c.Fit)
	}
	e := &Engine{fit: fit, budget: c.MaxBatchedTokens, reqs: map[string]*request{}}
	e.load.Store(&load{})
	e.nextExpect.Store(math.MaxInt64)
	return e
}

// ExpectFirst records that request id's first token will not be reported
// (a buffered answer: its first byte comes with its last token) and that
// its prefill is expected to end at at: from then on it counts as decoding,
// not as prefill waiting ahead of later requests (Expire). Without it such
// a request would count as waiting prefill until it ended, and an engine
// serving long buffered answers would look backed up.
func (e *Engine) ExpectFirst(id string, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.reqs[id]
	if !ok || r.firstSeen {
		return
	}
	if e.expect == nil {
		e.expect = map[string]time.Time{}
	}
	e.expect[id] = at
	if n := at.UnixNano(); n < e.nextExpect.Load() {
		e.nextExpect.Store(n)
	}
}

// Expire moves the requests whose expected first token (ExpectFirst) is
// at or before now to decoding. It takes the lock only when one is due,
// so a scheduling cycle may call it for every endpoint.
func (e *Engine) Expire(now time.Time) {
	if now.UnixNano() < e.nextExpect.Load() {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	next := int64(math.MaxInt64)
	moved := false
	for id, at := range e.expect {
		if at.After(now) {
			next = min(next, at.UnixNano())
			continue
		}
		delete(e.expect, id)
		r, ok := e.reqs[id]
		if !ok || r.firstSeen {
			continue
		}
		e.advance(at)
		r.estimated = true
		e.toDecoding(r, at)
		moved = true
	}
	e.nextExpect.Store(next)
	if moved {
		e.publish()
	}
}

// advance integrates the state up to now. Callers hold mu.
func (e *Engine) advance(now time.Time) {
	if !e.last.IsZero() {
		if dt := now.Sub(e.last).Seconds(); dt > 0 {
			e.intDecode += dt * float64(e.decoding)
			e.intContext += dt * float64(e.decodeContext)
		}
	}
	if now.After(e.last) {
		e.last = now
	}
}

// Sent records that request id was sent at now with prompt tokens, of which
// uncached are predicted not cached, and output tokens expected.
func (e *Engine) Sent(id string, now time.Time, prompt, uncached, output int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, dup := e.reqs[id]; dup {
		return
	}
	e.advance(now)
	uncached = min(max(uncached, 0), prompt)
	r := &request{uncached: uncached, context: prompt + max(output, 0)/2}
	e.reqs[id] = r
	e.waiting++
	e.waitingTokens += uncached
	e.meanUncached = ewma(e.meanUncached, float64(uncached), 0.05)
	e.publish()
}

// FirstToken records that request id's first token came at now: its
// prefill is over and it decodes.
func (e *Engine) FirstToken(id string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.reqs[id]
	if !ok || r.firstSeen {
		return
	}
	e.advance(now)
	delete(e.expect, id)
	e.toDecoding(r, now)
	e.publish()
}

func (e *Engine) toDecoding(r *request, now time.Time) {
	r.firstSeen, r.first = true, now
	e.waiting--
	e.waitingTokens -= r.uncached
	e.prefillDone += float64(r.uncached)
	e.decoding++
	e.decodeContext += r.context
	r.intDecode0, r.intContext0, r.prefillDone0 = e.intDecode, e.intContext, e.prefillDone
}

// Done records that request id ended at now after outputTokens tokens (0 if
// unknown). A request that streamed at least two tokens is an observation
// of the engine's step time: its mean inter-token time against the mean
// batch over its decode.
func (e *Engine) Done(id string, now time.Time, outputTokens int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.reqs[id]
	if !ok {
		return
	}
	e.advance(now)
	delete(e.reqs, id)
	delete(e.expect, id)
	defer e.publish() // runs before the deferred unlock
	if !r.firstSeen {
		e.waiting--
		e.waitingTokens -= r.uncached
		e.prefillDone += float64(r.uncached)
		return
	}
	dur := now.Sub(r.first).Seconds()
	steps := float64(outputTokens - 1)
	if outputTokens >= 2 && dur > 0 && !r.estimated {
		dec := (e.intDecode - r.intDecode0) / dur
		ctx := (e.intContext - r.intContext0) / dur
		pre := (e.prefillDone - r.prefillDone0) / steps
		e.fit.Observe(pre, dec, ctx, dur*1e3/steps)
		e.prefillRate = ewma(e.prefillRate, pre, 0.1)
	}
	e.decoding--
	e.decodeContext -= r.context
}

// Scraped is what the engine's own metrics last said, used to correct the
// router's count for requests it did not send (other routers) or has lost
// track of.
type Scraped struct {
	Running, Waiting int
}

// Prediction is an estimate for one request on one engine.
type Prediction struct {
	// TTFTMs is the predicted time to first token: the prefill waiting
	// ahead plus the request's own uncached tokens, in chunks of the step
	// budget, each step also paying for the decoding streams.
	TTFTMs float64
	// TPOTMs is the predicted step time of the request's own decode.
	TPOTMs float64
	// DecodeStepMs is TPOTMs without the prefill the engine has been
	// mixing into its steps: the step time of the decode batch the request
	// joins (its streams and their context, the request's own included).
	DecodeStepMs float64
	// StallMs is the time the request's own prefill adds to every stream
	// decoding on the engine; Decoding is how many there are.
	StallMs  float64
	Decoding int
	// WaitingTokens is the uncached prefill queued ahead of the request.
	WaitingTokens int
	// Step is the fitted step-time model used.
	Step steptime.Coefficients
}

// Predict estimates, for a request of prompt tokens of which uncached are
// not cached, its TTFT and TPOT on the engine and the stall it imposes on
// the streams there.
func (e *Engine) Predict(prompt, uncached int, sc Scraped) Prediction {
	return e.PredictWith(e.fit.Coefficients(), prompt, uncached, sc)
}

// Fit returns the step-time fit the engine feeds and predicts from (its
// own, or its pool's shared one).
func (e *Engine) Fit() *Fit { return e.fit }

// PredictWith is Predict with the step-time model c instead of the fit's
// current estimate, for callers that read a shared fit once per cycle.
func (e *Engine) PredictWith(c steptime.Coefficients, prompt, uncached int, sc Scraped) Prediction {
	l := e.load.Load()
	waiting, wTokens, decoding, dctx := l.waiting, l.waitingTokens, l.decoding, l.decodeContext
	rate, meanU := l.prefillRate, l.meanUncached

	// Work the router did not send (other routers) shows in the scrape.
	w := float64(max(wTokens, 0))
	if extra := sc.Waiting - waiting; extra > 0 {
		if meanU == 0 {
			meanU = float64(prompt) // no history: requests like this one
		}
		w += float64(extra) * meanU
	}
	d := float64(decoding)
	if extra := sc.Running - decoding - waiting; extra > 0 {
		meanCtx := 0.0
		if decoding > 0 {
			meanCtx = float64(dctx) / float64(decoding)
		}
		d += float64(extra)
		dctx += int(float64(extra) * meanCtx)
	}
	uncached = min(max(uncached, 0), prompt)
	work := w + float64(uncached)
	chunk := max(float64(e.budget)-d, 16) // the builtin: math.Max's result, inlined
	steps := max(1, math.Ceil(work/chunk))
	decodeStep := c.Ms(0, d, float64(dctx+prompt))
	return Prediction{
		TTFTMs:        steps*decodeStep + c.PrefillTokenMs*work,
		TPOTMs:        c.Ms(rate, d+1, float64(dctx+prompt)),
		DecodeStepMs:  c.Ms(0, d+1, float64(dctx+prompt)),
		StallMs:       c.PrefillTokenMs * float64(uncached),
		Decoding:      int(d),
		WaitingTokens: int(w),
		Step:          c,
	}
}

// Coefficients returns the fitted step-time model.
func (e *Engine) Coefficients() steptime.Coefficients {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fit.Coefficients()
}

// InFlight returns the requests the engine estimate holds: waiting for
// their first token and decoding (from the published counters, as
// PredictWith reads them).
func (e *Engine) InFlight() (waiting, decoding int) {
	l := e.load.Load()
	return l.waiting, l.decoding
}

func ewma(old, v, alpha float64) float64 {
	if old == 0 {
		return v
	}
	return old + alpha*(v-old)
}
