package admission

import (
	"sync"
	"time"

	"github.com/halyard-dev/halyard/internal/simclock"
)

// Gate tells the queue how much a model can take now. slots is how many
// requests this router may have in flight to the model's endpoints (-1: no
// bound; the router counts the endpoints that are not saturated by its own
// in-flight counts or the engines' queue and KV metrics); endpoints is how
// many endpoints could serve the model at all (0: none, the waiting room).
type Gate interface {
	Capacity(model string) (slots, endpoints int)
}

// GateFunc adapts a function to Gate.
type GateFunc func(model string) (slots, endpoints int)

// Capacity implements Gate.
func (f GateFunc) Capacity(model string) (int, int) { return f(model) }

// ShedReason says why the queue refused a request.
type ShedReason string

// Reasons a request leaves the queue without being served.
const (
	ShedQueueFull  ShedReason = "queue_full"  // the queue was full and this was the lowest priority
	ShedTimeout    ShedReason = "timeout"     // it waited maxWait
	ShedNoEndpoint ShedReason = "no_endpoint" // the model had no endpoint for noEndpointWait
)

// queueResult is how a waiter left the queue.
type queueResult struct {
	admitted bool
	shed     ShedReason
	waited   time.Duration
	position int // requests ahead when it arrived (0: not queued)
}

// waiter is one request in the queue.
type waiter struct {
	tenant   *Tenant
	prio     Priority
	cost     float64 // estimated VTC cost: uncached prompt + output tokens
	enq      time.Time
	seq      uint64 // arrival order, for ties
	position int
	timer    simclock.Timer
	done     func(queueResult)
	queued   bool
}

// tenantQueue is one tenant's waiters and virtual token counter in one
// model's queue.
type tenantQueue struct {
	weight  float64
	counter float64
	fifo    [numPriorities][]*waiter
	n       int
}

// modelQueue is the fair queue of one model.
type modelQueue struct {
	model    string
	mu       sync.Mutex
	inflight int
	n        int
	seq      uint64
	band     [numPriorities]int
	tenants  map[string]*tenantQueue
}

// Queue holds requests per model while the model's endpoints are all
// saturated, and releases them in priority order and, within a class, to
// the tenant with the lowest virtual token counter (VTC: tokens served
// divided by weight; a tenant that returns from idle is lifted to the
// lowest counter of those waiting, so idleness earns no credit).
type Queue struct {
	MaxPerModel    int
	MaxWait        time.Duration
	NoEndpointWait time.Duration
	Gate           Gate
	Clock          simclock.Clock
	Metrics        *Metrics

	mu     sync.Mutex
	models map[string]*modelQueue
}

func (q *Queue) model(name string) *modelQueue {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.models == nil {
		q.models = map[string]*modelQueue{}
	}
	mq := q.models[name]
	if mq == nil {
		mq = &modelQueue{model: name, tenants: map[string]*tenantQueue{}}
		q.models[name] = mq
	}
	return mq
}

func (mq *modelQueue) tenant(t *Tenant) *tenantQueue {
	tq := mq.tenants[t.Name]
	if tq == nil {
		tq = &tenantQueue{weight: t.Weight}
		mq.tenants[t.Name] = tq
	}
	return tq
}

// submit admits w at once when the model has room and nobody waits, else
// queues it. It returns true when w was admitted at once (done is not
// called then); otherwise done is called exactly once, later or before
// submit returns (shed).
func (q *Queue) submit(model string, w *waiter) bool {
	mq := q.model(model)
	now := q.Clock.Now()
	var notify []func()
	mq.mu.Lock()
	slots, endpoints := q.Gate.Capacity(model)
	if mq.n == 0 && endpoints > 0 && (slots < 0 || mq.inflight < slots) {
		mq.inflight++
		mq.tenant(w.tenant).counter += w.cost / w.tenant.Weight
		mq.mu.Unlock()
		return true
	}
	tq := mq.tenant(w.tenant)
	if tq.n == 0 {
		// VTC lift: no credit for the time this tenant did not wait.
		if low, ok := mq.lowestWaiting(); ok && low > tq.counter {
			tq.counter = low
		}
	}
	mq.seq++
	w.enq, w.seq, w.position, w.queued = now, mq.seq, mq.n, true
	mq.push(tq, w)
	q.Metrics.queueLen(model, w.prio, 1)
	wait := q.MaxWait
	if endpoints == 0 && q.NoEndpointWait < wait {
		wait = q.NoEndpointWait
	}
	w.timer = q.Clock.AfterFunc(wait, func() { q.expire(mq, w) })
	if q.MaxPerModel > 0 && mq.n > q.MaxPerModel {
		v := mq.victim()
		mq.remove(v)
		q.Metrics.queueLen(model, v.prio, -1)
		notify = append(notify, q.shedFn(mq, v, ShedQueueFull, now))
	}
	notify = append(notify, q.dispatchLocked(mq, now)...)
	mq.mu.Unlock()
	for _, f := range notify {
		f()
	}
	return false
}

func (q *Queue) shedFn(mq *modelQueue, w *waiter, why ShedReason, now time.Time) func() {
	if w.timer != nil {
		w.timer.Stop()
	}
	res := queueResult{shed: why, waited: now.Sub(w.enq), position: w.position + 1}
	q.Metrics.shed(w.tenant.Name, w.prio, why)
	return func() { w.done(res) }
}

// lowestWaiting is the lowest counter among tenants with waiters.
func (mq *modelQueue) lowestWaiting() (float64, bool) {
	low, ok := 0.0, false
	for _, tq := range mq.tenants {
		if tq.n > 0 && (!ok || tq.counter < low) {
			low, ok = tq.counter, true
		}
	}
	return low, ok
}

func (mq *modelQueue) push(tq *tenantQueue, w *waiter) {
	tq.fifo[w.prio] = append(tq.fifo[w.prio], w)
	tq.n++
	mq.n++
	mq.band[w.prio]++
}

// remove takes w out of its FIFO (any position).
func (mq *modelQueue) remove(w *waiter) {
	tq := mq.tenants[w.tenant.Name]
	f := tq.fifo[w.prio]
	for i, x := range f {
		if x == w {
			copy(f[i:], f[i+1:])
			f[len(f)-1] = nil
			tq.fifo[w.prio] = f[:len(f)-1]
			tq.n--
			mq.n--
			mq.band[w.prio]--
			w.queued = false
			return
		}
	}
}

// next is the waiter to serve: the highest class that waits, then the
// tenant with the lowest counter, then the oldest of its requests.
func (mq *modelQueue) next() *waiter {
	for p := numPriorities - 1; p >= 0; p-- {
		if mq.band[p] == 0 {
			continue
		}
		var best *tenantQueue
		var bw *waiter
		for _, tq := range mq.tenants {
			f := tq.fifo[p]
			if len(f) == 0 {
				continue
			}
			// Ties (a tenant just lifted to the others' counter) go to the
			// tenant with fewer waiting, then to the older request.
			if best == nil || tq.counter < best.counter || (tq.counter == best.counter &&
				(len(f) < len(best.fifo[p]) || (len(f) == len(best.fifo[p]) && f[0].seq < bw.seq))) {
				best, bw = tq, f[0]
			}
		}
		return bw
	}
	return nil
}

// victim is the waiter to shed when the queue is over its bound: the
// lowest class that waits, then the tenant with the most waiters for its
// weight, then its newest request.
func (mq *modelQueue) victim() *waiter {
	for p := Priority(0); p < numPriorities; p++ {
		if mq.band[p] == 0 {
			continue
		}
		var worst *tenantQueue
		for _, tq := range mq.tenants {
			if len(tq.fifo[p]) == 0 {
				continue
			}
			// The tenant holding the most of the queue for its weight,
			// then the highest counter.
			n, wn := float64(len(tq.fifo[p]))/weightOf(tq), 0.0
			if worst != nil {
				wn = float64(len(worst.fifo[p])) / weightOf(worst)
			}
			if worst == nil || n > wn || (n == wn && tq.counter > worst.counter) {
				worst = tq
			}
		}
		f := worst.fifo[p]
		return f[len(f)-1]
	}
	return nil
}

// dispatchLocked admits waiters while the model has room; it returns the
// notifications to send after unlocking.
func (q *Queue) dispatchLocked(mq *modelQueue, now time.Time) []func() {
	var notify []func()
	for mq.n > 0 {
		slots, endpoints := q.Gate.Capacity(mq.model)
		if endpoints == 0 || (slots >= 0 && mq.inflight >= slots) {
			break
		}
		w := mq.next()
		mq.remove(w)
		q.Metrics.queueLen(mq.model, w.prio, -1)
		if w.timer != nil {
			w.timer.Stop()
		}
		mq.inflight++
		mq.tenants[w.tenant.Name].counter += w.cost / w.tenant.Weight
		res := queueResult{admitted: true, waited: now.Sub(w.enq), position: w.position + 1}
		q.Metrics.waited(mq.model, w.prio, res.waited)
		notify = append(notify, func() { w.done(res) })
	}
	return notify
}

// expire sheds w when its wait is over.
func (q *Queue) expire(mq *modelQueue, w *waiter) {
	mq.mu.Lock()
	if !w.queued {
		mq.mu.Unlock()
		return
	}
	mq.remove(w)
	q.Metrics.queueLen(mq.model, w.prio, -1)
	why := ShedTimeout
	if _, endpoints := q.Gate.Capacity(mq.model); endpoints == 0 {
		why = ShedNoEndpoint
	}
	f := q.shedFn(mq, w, why, q.Clock.Now())
	mq.mu.Unlock()
	f()
}

// cancel takes w out of the queue (its client left). It reports false when
// w was no longer queued: admitted (the caller must release it) or shed.
func (q *Queue) cancel(model string, w *waiter) bool {
	mq := q.model(model)
	mq.mu.Lock()
	defer mq.mu.Unlock()
	if !w.queued {
		return false
	}
	mq.remove(w)
	q.Metrics.queueLen(model, w.prio, -1)
	if w.timer != nil {
		w.timer.Stop()
	}
	return true
}

// release ends an admitted request: its slot frees and its tenant's
// counter is corrected from the estimated to the actual cost.
func (q *Queue) release(model string, t *Tenant, estimate, actual float64) {
	mq := q.model(model)
	mq.mu.Lock()
	if mq.inflight > 0 {
		mq.inflight--
	}
	if tq := mq.tenants[t.Name]; tq != nil {
		tq.counter += (actual - estimate) / t.Weight
	}
	notify := q.dispatchLocked(mq, q.Clock.Now())
	mq.mu.Unlock()
	for _, f := range notify {
		f()
	}
}

// Dispatch re-checks every model's room (engine metrics change between
// releases) and admits waiters that now fit.
func (q *Queue) Dispatch() {
	q.mu.Lock()
	mqs := make([]*modelQueue, 0, len(q.models))
	for _, mq := range q.models {
		mqs = append(mqs, mq)
	}
	q.mu.Unlock()
	now := q.Clock.Now()
	for _, mq := range mqs {
		mq.mu.Lock()
		var notify []func()
		if mq.n > 0 {
			notify = q.dispatchLocked(mq, now)
		}
		mq.mu.Unlock()
		for _, f := range notify {
			f()
		}
	}
}

// Len returns how many requests wait for model.
func (q *Queue) Len(model string) int {
	mq := q.model(model)
	mq.mu.Lock()
	defer mq.mu.Unlock()
	return mq.n
}

// InFlight returns how many admitted requests of model have not ended.
func (q *Queue) InFlight(model string) int {
	mq := q.model(model)
	mq.mu.Lock()
	defer mq.mu.Unlock()
	return mq.inflight
}

func weightOf(tq *tenantQueue) float64 {
	if tq.weight <= 0 {
		return 1
	}
	return tq.weight
}
