package admission

import (
	"math"
	"sort"
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
	// ShedExpectedWait: refused on arrival, its expected wait (requests
	// ahead of it over the model's recent completion rate) exceeded maxWait.
	ShedExpectedWait ShedReason = "expected_wait"
	// ShedUnmeetable: admitted, then refused before reaching an engine,
	// because scheduling found no endpoint predicted to meet the
	// request's objectives (router.admission.unmeetable: shed).
	ShedUnmeetable ShedReason = "slo_unmeetable"
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
	weight   float64
	counter  float64
	fifo     [numPriorities][]*waiter
	n        int
	inflight int // admitted and not yet released
	// served is the cost admitted, decayed with time constant shareTau
	// (at servedAt): the tenant's recent share of the model's service.
	served   float64
	servedAt time.Time
}

// shareTau is the time constant of a tenant's recent service, and a tenant
// admitted within it counts as active for the fair shares.
const shareTau = 10 * time.Second

// recent is tq's served cost decayed to now.
func (tq *tenantQueue) recent(now time.Time) float64 {
	if tq.servedAt.IsZero() {
		return 0
	}
	return tq.served * math.Exp(-now.Sub(tq.servedAt).Seconds()/shareTau.Seconds())
}

// active reports whether tq counts in the fair shares: it waits, has
// requests in flight, or was admitted within shareTau.
func (tq *tenantQueue) active(now time.Time) bool {
	return tq.n > 0 || tq.inflight > 0 || (!tq.servedAt.IsZero() && now.Sub(tq.servedAt) < shareTau)
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
	// Completion rate, for the expected wait of an arrival: an
	// exponentially decayed count of releases (time constant rateTau).
	relCount float64
	relAt    time.Time
	relSince time.Time // first release
	releases int
	firstAt  time.Time // first admission since the model was last idle
}

// minReleases is how many releases the rate estimate needs.
const minReleases = 8

// rateTau is the time constant of a model's completion-rate estimate.
const rateTau = 5 * time.Second

// Queue holds requests per model while the model's endpoints are all
// saturated, and releases them in priority order and, within a class, to
// the tenant with the lowest virtual token counter (VTC: tokens served
// divided by weight; a tenant that returns from idle is lifted to the
// lowest counter of those waiting, so idleness earns no credit).
type Queue struct {
	MaxPerModel    int
	MaxWait        time.Duration
	NoEndpointWait time.Duration
	// Reserve is the share of a model's slots, and of its queue bound,
	// that a tenant already holding its fair share of the slots may not
	// take: it is kept for tenants under their share, so that they are
	// admitted on arrival while a heavy tenant keeps the model saturated.
	Reserve float64
	Gate    Gate
	Clock   simclock.Clock
	Metrics *Metrics
	// OnWaitingRoom, when set, is called (outside the queue's locks) each
	// time a request starts waiting for a model that has no endpoint at
	// all: the hook for scale-from-zero to start an engine at once rather
	// than at its next look at Demand.
	OnWaitingRoom func(model string)

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

// submit admits w at once when the model has room for it and nobody
// the queue would serve first waits, else queues it, or refuses it on
// arrival when it would wait in vain (its expected wait exceeds maxWait, or
// the queue is full for it). It returns true when w was admitted at once
// (done is not called then); otherwise done is called exactly once, later
// or before submit returns (refused on arrival).
func (q *Queue) submit(model string, w *waiter) bool {
	mq := q.model(model)
	now := q.Clock.Now()
	mq.mu.Lock()
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
	// The queue's own order decides whether w goes now: it does when it is
	// the first the model has room for.
	var admittedNow bool
	notify := q.dispatchLocked(mq, now, w, &admittedNow)
	if admittedNow {
		mq.mu.Unlock()
		for _, f := range notify {
			f()
		}
		return true
	}
	slots, endpoints := q.Gate.Capacity(model)
	q.Metrics.queueLen(model, w.tenant.Name, w.prio, 1)
	if endpoints == 0 && q.OnWaitingRoom != nil {
		notify = append(notify, func() { q.OnWaitingRoom(model) })
	}
	switch why := q.refuseOnArrival(mq, tq, w, slots, endpoints, now); {
	case why != "":
		mq.remove(w)
		q.Metrics.queueLen(model, w.tenant.Name, w.prio, -1)
		notify = append(notify, q.shedFn(mq, w, why, now))
	default:
		wait := q.MaxWait
		if endpoints == 0 && q.NoEndpointWait < wait {
			wait = q.NoEndpointWait
		}
		w.timer = q.Clock.AfterFunc(wait, func() { q.expire(mq, w) })
		if q.MaxPerModel > 0 && mq.n > q.MaxPerModel {
			v := mq.victim()
			mq.remove(v)
			q.Metrics.queueLen(model, v.tenant.Name, v.prio, -1)
			notify = append(notify, q.shedFn(mq, v, ShedQueueFull, now))
		}
	}
	mq.mu.Unlock()
	for _, f := range notify {
		f()
	}
	return false
}

// refuseOnArrival says why w, just queued, should be refused now rather
// than after waiting ("" when it may wait): past the queue's reserve while
// its tenant holds more than its share of the queue, or when the requests
// the queue would serve before it take longer than maxWait to drain at the
// model's recent completion rate. A request the full queue would shed
// first (the victim is w itself) is also refused here, by the caller.
func (q *Queue) refuseOnArrival(mq *modelQueue, tq *tenantQueue, w *waiter, slots, endpoints int, now time.Time) ShedReason {
	if endpoints == 0 {
		return "" // the waiting room: hold it for scale-from-zero
	}
	if q.MaxPerModel > 0 {
		soft := q.MaxPerModel - int(float64(q.MaxPerModel)*q.Reserve)
		if mq.n > soft && float64(tq.n) > mq.queueShare(tq) {
			return ShedQueueFull
		}
	}
	if rate := mq.rate(now); rate > 0 && q.MaxWait > 0 {
		// Completions as a Poisson process: the wait for ahead+1 of them
		// exceeds maxWait with probability P(N(maxWait) <= ahead). An
		// arrival is refused now when that is over 1%, or when ahead
		// takes more than waitMargin of maxWait at the mean rate (the
		// completion rate varies more than Poisson's when a tenant's
		// admissions stall behind the reserve).
		m := rate * q.MaxWait.Seconds()
		ahead := mq.ahead(tq, w)
		if ahead == 0 && !mq.overShare(tq, slots, now) {
			return "" // next in line and under its share: the next free slot is its
		}
		if float64(ahead) > waitMargin*m || poissonCDF(ahead, m) > refuseTail {
			return ShedExpectedWait
		}
	}
	return ""
}

// queueShare is tq's weighted share of the queue bound among the tenants
// that wait.
func (mq *modelQueue) queueShare(tq *tenantQueue) float64 {
	var sum float64
	for _, x := range mq.tenants {
		if x.n > 0 {
			sum += weightOf(x)
		}
	}
	if sum == 0 {
		return math.Inf(1)
	}
	return float64(mq.n) * weightOf(tq) / sum
}

// ahead estimates how many requests the queue serves before w: every
// request of a higher class, and in w's class, while w's tenant is served
// its k = (its waiting) requests, about k·weight_j/weight of each other
// tenant j (what the virtual counters converge to), at most what j has.
func (mq *modelQueue) ahead(tq *tenantQueue, w *waiter) int {
	n := 0
	for p := w.prio + 1; p < numPriorities; p++ {
		n += mq.band[p]
	}
	// w is the k-th of its tenant: before it, its tenant's k-1 and about
	// (k-1)·weight_j/weight of each other tenant j (a tenant that starts
	// waiting is lifted to the lowest counter and wins the tie).
	k := float64(len(tq.fifo[w.prio]) - 1)
	n += int(k)
	for _, x := range mq.tenants {
		if x == tq {
			continue
		}
		n += int(math.Min(float64(len(x.fifo[w.prio])), math.Ceil(k*weightOf(x)/weightOf(tq))))
	}
	return n
}

// released counts a completion for the rate estimate.
func (mq *modelQueue) released(now time.Time) {
	if mq.relSince.IsZero() {
		mq.relSince = now
	}
	mq.relCount = mq.decayed(now) + 1
	mq.relAt = now
	mq.releases++
}

func (mq *modelQueue) decayed(now time.Time) float64 {
	if mq.relAt.IsZero() {
		return 0
	}
	return mq.relCount * math.Exp(-now.Sub(mq.relAt).Seconds()/rateTau.Seconds())
}

// rate is the model's recent completion rate per second: the decayed
// count over the decayed window (which is shorter than rateTau while the
// first releases are recent). Before minReleases releases it is the
// releases plus one over the time since the model first admitted a
// request: a model that has served nothing yet for a while drains its
// queue slowly as far as anyone knows, one that just started may drain it
// fast (0: nothing admitted yet, no estimate).
func (mq *modelQueue) rate(now time.Time) float64 {
	if mq.releases < minReleases {
		if mq.firstAt.IsZero() {
			return 0
		}
		return float64(mq.releases+1) / max(now.Sub(mq.firstAt).Seconds(), 1e-3)
	}
	window := rateTau.Seconds() * (1 - math.Exp(-now.Sub(mq.relSince).Seconds()/rateTau.Seconds()))
	if window <= 0 {
		return 0
	}
	return mq.decayed(now) / window
}

// overShare reports whether tq holds its fair share of the model or more:
// at least its weighted share of the slots, and at least its weighted
// share of the recent service (cost admitted, decayed over shareTau),
// among the active tenants (waiting, in flight, or admitted within
// shareTau). A tenant sending a tenth of another's traffic is under its
// share even while a burst of its long requests holds half the slots; a
// heavy tenant stays over its share while a light one that comes and goes
// is between requests.
func (mq *modelQueue) overShare(tq *tenantQueue, slots int, now time.Time) bool {
	weights, recent := weightOf(tq), tq.recent(now)
	mine := recent
	for _, x := range mq.tenants {
		if x != tq && x.active(now) {
			weights += weightOf(x)
			recent += x.recent(now)
		}
	}
	share := weightOf(tq) / weights
	if float64(tq.inflight) < float64(slots)*share {
		return false
	}
	return recent == 0 || mine >= recent*share
}

// room reports whether the model may admit one more request of tq: under
// slots while tq is under its fair share (overShare), else under slots
// less the reserve.
func (q *Queue) room(mq *modelQueue, tq *tenantQueue, slots int, now time.Time) bool {
	if slots < 0 {
		return true
	}
	limit := slots
	if mq.overShare(tq, slots, now) {
		limit -= q.reserveSlots(slots)
	}
	return mq.inflight < limit
}

// minReserveSlots is the fewest slots the reserve holds (at most a quarter
// of the slots): in a small fleet a reserve of one slot is taken by one
// light request, and the next light arrival before a completion waits.
const minReserveSlots = 3

// reserveSlots is how many of slots an over-share tenant may not take.
func (q *Queue) reserveSlots(slots int) int {
	if q.Reserve <= 0 {
		return 0
	}
	return max(int(math.Ceil(float64(slots)*q.Reserve)), min(minReserveSlots, slots/4))
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
// tenant with the lowest counter, then the oldest of its requests; among
// those the model has room for (see room), nil when none.
func (q *Queue) next(mq *modelQueue, slots int, now time.Time) *waiter {
	type cand struct {
		tq *tenantQueue
		f  []*waiter
	}
	var cands []cand
	for p := numPriorities - 1; p >= 0; p-- {
		if mq.band[p] == 0 {
			continue
		}
		cands = cands[:0]
		for _, tq := range mq.tenants {
			if f := tq.fifo[p]; len(f) > 0 {
				cands = append(cands, cand{tq, f})
			}
		}
		// Ties (a tenant just lifted to the others' counter) go to the
		// tenant with fewer waiting, then to the older request.
		sort.Slice(cands, func(i, j int) bool {
			a, b := cands[i], cands[j]
			if a.tq.counter != b.tq.counter {
				return a.tq.counter < b.tq.counter
			}
			if len(a.f) != len(b.f) {
				return len(a.f) < len(b.f)
			}
			return a.f[0].seq < b.f[0].seq
		})
		for _, c := range cands {
			if q.room(mq, c.tq, slots, now) {
				return c.f[0]
			}
		}
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
// notifications to send after unlocking. When self is admitted, no
// notification is made for it and *selfAdmitted is set (submit's caller
// learns it from submit's answer).
func (q *Queue) dispatchLocked(mq *modelQueue, now time.Time, self *waiter, selfAdmitted *bool) []func() {
	var notify []func()
	for mq.n > 0 {
		slots, endpoints := q.Gate.Capacity(mq.model)
		if endpoints == 0 {
			break
		}
		w := q.next(mq, slots, now)
		if w == nil {
			break
		}
		mq.remove(w)
		tq := mq.tenants[w.tenant.Name]
		if mq.inflight == 0 && (mq.firstAt.IsZero() || now.Sub(mq.relAt) > rateTau) {
			// Busy after idle (or for the first time): the old rate says
			// nothing about now; start the estimate again.
			mq.firstAt, mq.releases, mq.relCount, mq.relSince, mq.relAt = now, 0, 0, time.Time{}, time.Time{}
		}
		mq.inflight++
		tq.inflight++
		tq.counter += w.cost / w.tenant.Weight
		tq.served, tq.servedAt = tq.recent(now)+w.cost, now
		if w == self {
			*selfAdmitted = true
			continue
		}
		q.Metrics.queueLen(mq.model, w.tenant.Name, w.prio, -1)
		if w.timer != nil {
			w.timer.Stop()
		}
		res := queueResult{admitted: true, waited: now.Sub(w.enq), position: w.position + 1}
		q.Metrics.waited(mq.model, w.tenant.Name, w.prio, res.waited)
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
	q.Metrics.queueLen(mq.model, w.tenant.Name, w.prio, -1)
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
	q.Metrics.queueLen(model, w.tenant.Name, w.prio, -1)
	if w.timer != nil {
		w.timer.Stop()
	}
	return true
}

// release ends an admitted request: its slot frees and its tenant's
// counter is corrected from the estimated to the actual cost. served says
// it reached an engine: only those count in the model's completion rate,
// which the arrival rule divides the queue by.
func (q *Queue) release(model string, t *Tenant, estimate, actual float64, served bool) {
	mq := q.model(model)
	mq.mu.Lock()
	now := q.Clock.Now()
	if mq.inflight > 0 {
		mq.inflight--
	}
	if tq := mq.tenants[t.Name]; tq != nil {
		tq.counter += (actual - estimate) / t.Weight
		if tq.inflight > 0 {
			tq.inflight--
		}
	}
	if served {
		mq.released(now)
	}
	notify := q.dispatchLocked(mq, now, nil, nil)
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
			notify = q.dispatchLocked(mq, now, nil, nil)
		}
		mq.mu.Unlock()
		for _, f := range notify {
			f()
		}
	}
}

// dispatchModel re-checks one model's room (a prefill ended) and admits
// the waiters that now fit.
func (q *Queue) dispatchModel(model string) {
	mq := q.model(model)
	mq.mu.Lock()
	var notify []func()
	if mq.n > 0 {
		notify = q.dispatchLocked(mq, q.Clock.Now(), nil, nil)
	}
	mq.mu.Unlock()
	for _, f := range notify {
		f()
	}
}

// Demand returns, for each model with requests waiting, how many wait:
// the demand an autoscaler sees before any engine does (requests for a
// model with no endpoint wait here, in the waiting room, up to
// noEndpointWait and maxPerModel).
func (q *Queue) Demand() map[string]int {
	q.mu.Lock()
	mqs := make([]*modelQueue, 0, len(q.models))
	for _, mq := range q.models {
		mqs = append(mqs, mq)
	}
	q.mu.Unlock()
	out := map[string]int{}
	for _, mq := range mqs {
		mq.mu.Lock()
		if mq.n > 0 {
			out[mq.model] = mq.n
		}
		mq.mu.Unlock()
	}
	return out
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

// waitMargin is the share of maxWait an arrival's expected wait may take.
const waitMargin = 0.3

// poissonCDF is P(N <= k) for N Poisson of mean m (normal approximation
// with continuity correction past m = 50).
func poissonCDF(k int, m float64) float64 {
	if m > 50 {
		return 0.5 * math.Erfc(-(float64(k)+0.5-m)/math.Sqrt(2*m))
	}
	term := math.Exp(-m)
	sum := term
	for i := 1; i <= k && sum < 1; i++ {
		term *= m / float64(i)
		sum += term
	}
	return min(sum, 1)
}

// refuseTail is the chance of waiting past maxWait above which an arrival
// is refused at once: at 1% about one refusal in a hundred still came after
// maxWait (the p99 time to 429) on a 16-slot simulated fleet at 3x load.
const refuseTail = 0.003
