package admission

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/simclock"
)

// Reason says why a request was refused.
type Reason string

// Reasons of a Rejection, also the outcome label of
// halyard_admission_requests_total.
const (
	ReasonUnauthenticated  Reason = "unauthenticated"
	ReasonForbidden        Reason = "forbidden"
	ReasonOverBudget       Reason = "over_budget"
	ReasonShed             Reason = "shed"
	ReasonNoEndpoint       Reason = "no_endpoint"
	ReasonStoreUnavailable Reason = "store_unavailable"
	ReasonClientGone       Reason = "client_gone"
)

// Rejection is a refused request: the router answers it with Status.
type Rejection struct {
	Reason  Reason
	Message string
	// Err is the cause (authentication errors are sentinel errors).
	Err error
	// RetryAfter, when positive, is the Retry-After to send.
	RetryAfter time.Duration
	// Rate, when set, fills the x-ratelimit-* headers.
	Rate *RateInfo
	// Explain is the admission part of an explanation.
	Explain string
	// Tenant is the caller, when known (nil before authentication).
	Tenant *Tenant
}

// Status is the HTTP status of the answer: 401, 403, 429 or 503.
func (r *Rejection) Status() int {
	switch r.Reason {
	case ReasonUnauthenticated:
		if errors.Is(r.Err, ErrUnknownTenant) {
			return 403
		}
		return 401
	case ReasonForbidden:
		return 403
	case ReasonNoEndpoint, ReasonStoreUnavailable:
		return 503
	case ReasonClientGone:
		return 499
	}
	return 429
}

// Usage is what the engine reported for a request, for settlement.
type Usage struct {
	PromptTokens, CompletionTokens, CachedTokens int
	// Known is false when the engine reported nothing: the reservation
	// is then charged whole.
	Known bool
}

// Request is what admission needs to know of a request.
type Request struct {
	ID     string
	Tenant *Tenant
	// Model is the public model name (the queue and model budgets are per
	// public model).
	Model        string
	PromptTokens int
	// OutputTokens is max_tokens, or the route's default when unset.
	OutputTokens int
	// Priority is the class the request asks for ("" for its tenant's).
	Priority string
}

// Options build an Admission.
type Options struct {
	// Config is a loaded configuration: its auth, tenants and
	// router.admission blocks are read.
	Config *config.Config
	// Gate gives each model's room for the fair queue; required when the
	// queue is on.
	Gate Gate
	// Clock; nil means real.
	Clock simclock.Clock
	// Log; nil means slog.Default().
	Log *slog.Logger
	// Registerer for the metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Store overrides the budget store of router.admission.store.
	Store Store
}

// Admission authenticates, budgets and queues requests.
type Admission struct {
	tenants   map[string]*Tenant
	auth      *Authenticator
	anonymous *Tenant
	budgets   bool // any tenant has limits
	local     *LocalStore
	shared    Store
	fallback  *LocalStore
	reject    bool // onStoreError: reject
	timeout   time.Duration
	queue     *Queue
	clock     simclock.Clock
	log       *slog.Logger
	metrics   *Metrics
	cancel    context.CancelFunc

	storeMu   sync.Mutex
	storeDown time.Time // zero while the store answers; else retry after
	seq       atomic.Uint64
}

// storeRetry is how long the router uses its fallback after a failed
// store round trip before trying the store again.
const storeRetry = time.Second

// New builds admission from the configuration. It returns nil, nil when
// the configuration asks for nothing (no auth, no tenants, no admission
// block): the router then skips admission entirely.
func New(opts Options) (*Admission, error) {
	cfg := opts.Config
	if cfg.Auth == nil && len(cfg.Tenants) == 0 && cfg.Router.Admission == nil {
		return nil, nil
	}
	a := &Admission{tenants: map[string]*Tenant{}, clock: opts.Clock, log: opts.Log, local: &LocalStore{}}
	if a.clock == nil {
		a.clock = simclock.Real{}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.metrics = NewMetrics(opts.Registerer)
	for _, s := range cfg.Tenants {
		t := newTenant(s)
		a.tenants[t.Name] = t
		a.budgets = a.budgets || t.limits.any() || len(t.modelLimits) > 0
	}
	a.anonymous = anonymous(a.tenants)
	a.budgets = a.budgets || a.anonymous.limits.any()
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	if cfg.Auth != nil {
		auth, err := NewAuthenticator(ctx, cfg.Auth, a.tenants, cfg.Tenants, a.clock.Now, a.log)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("admission: %w", err)
		}
		a.auth = auth
	}
	ac := cfg.Router.Admission
	if ac == nil {
		return a, nil
	}
	a.timeout, a.reject = ac.StoreTimeout.Duration, ac.OnStoreError == config.StoreErrorReject
	a.fallback = &LocalStore{Fraction: ac.LocalFraction}
	a.shared = opts.Store
	if a.shared == nil && ac.Store != "" {
		rs, err := NewRedisStore(ac.Store, a.timeout)
		if err != nil {
			cancel()
			return nil, err
		}
		a.shared = rs
	}
	if !ac.Queue.Disabled {
		if opts.Gate == nil {
			cancel()
			return nil, errors.New("admission: the fair queue needs a Gate")
		}
		a.queue = &Queue{MaxPerModel: ac.Queue.MaxPerModel, MaxWait: ac.Queue.MaxWait.Duration,
			NoEndpointWait: ac.Queue.NoEndpointWait.Duration, Reserve: ac.Queue.Reserve, Gate: opts.Gate, Clock: a.clock, Metrics: a.metrics}
	}
	return a, nil
}

// Close stops background work and closes the store.
func (a *Admission) Close() {
	a.cancel()
	if c, ok := a.shared.(interface{ Close() error }); ok {
		_ = c.Close()
	}
}

// Run reloads credentials and re-checks the queues every tick until ctx
// is done.
func (a *Admission) Run(ctx context.Context, tick time.Duration) {
	if a.auth != nil {
		go a.auth.Run(ctx)
	}
	if a.queue == nil {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.queue.Dispatch()
		}
	}
}

// KeySecret is a Kubernetes Secret holding a tenant's API keys
// (keysFrom.secret).
type KeySecret struct {
	Tenant, Namespace, Name string
}

// KeySecrets lists the Secrets the configuration takes keys from.
func KeySecrets(cfg *config.Config) []KeySecret {
	var out []KeySecret
	for _, t := range cfg.Tenants {
		if kf := t.KeysFrom; kf != nil && kf.Secret != nil {
			out = append(out, KeySecret{Tenant: t.Name, Namespace: kf.Secret.Namespace, Name: kf.Secret.Name})
		}
	}
	return out
}

// KeySource pushes tenants' API keys as they change (a Kubernetes Secret
// informer, package secretkeys): Run calls set with a tenant's plain keys
// after each change, until ctx ends.
type KeySource interface {
	Run(ctx context.Context, set func(tenant string, keys [][]byte)) error
}

// SetTenantKeys replaces the keys a KeySource pushed for tenant (nothing
// when authentication is off).
func (a *Admission) SetTenantKeys(tenant string, keys [][]byte) {
	if a.auth != nil && !a.auth.SetKeys(tenant, keys) {
		a.log.Warn("keys pushed for an unknown tenant", "tenant", tenant)
	}
}

// Queue returns the fair queue (nil when off).
func (a *Admission) Queue() *Queue { return a.queue }

// Tenant returns the configured tenant of that name.
func (a *Admission) Tenant(name string) (*Tenant, bool) {
	t, ok := a.tenants[name]
	return t, ok
}

// Authenticate maps an Authorization header value to a tenant. Without an
// auth block every caller is the tenant "anonymous".
func (a *Admission) Authenticate(authorization string) (*Tenant, *Rejection) {
	if a.auth == nil {
		return a.anonymous, nil
	}
	t, err := a.auth.Authenticate(authorization)
	if err != nil {
		a.metrics.outcome("unknown", string(ReasonUnauthenticated))
		msg := "Incorrect API key provided."
		switch {
		case errors.Is(err, ErrNoCredentials):
			msg = "You didn't provide an API key. Send it as \"Authorization: Bearer <key>\"."
		case errors.Is(err, ErrUnknownTenant):
			msg = "The token is valid but names no configured tenant."
		case errors.Is(err, ErrInvalidToken):
			msg = "Invalid bearer token: " + strings.TrimPrefix(err.Error(), ErrInvalidToken.Error()+": ")
		}
		return nil, &Rejection{Reason: ReasonUnauthenticated, Err: err, Message: msg}
	}
	return t, nil
}

// Authorize checks the tenant's model allow-list.
func (a *Admission) Authorize(t *Tenant, model string) *Rejection {
	if t.Allows(model) {
		return nil
	}
	a.metrics.outcome(t.Name, string(ReasonForbidden))
	return &Rejection{Reason: ReasonForbidden, Tenant: t,
		Message: fmt.Sprintf("The model %q is not available to tenant %q.", model, t.Name)}
}

// Ticket is an admitted request. Done must be called once when its
// response ends.
type Ticket struct {
	a        *Admission
	req      Request
	res      *Reservation
	rate     *RateInfo
	prio     Priority
	cost     float64
	queued   bool
	waited   time.Duration
	position int
	waiter   *waiter
	done     atomic.Bool
}

// Rate is the budget state after admission, for x-ratelimit-* headers
// (nil when the tenant has no request or token budget).
func (t *Ticket) Rate() *RateInfo { return t.rate }

// Tenant is the request's tenant.
func (t *Ticket) Tenant() *Tenant { return t.req.Tenant }

// FirstToken tells the queue that the request's first token came back:
// its prefill is done, so the endpoint it went to may have room again
// (queue.prefillTokens) and the model's waiters are re-checked.
func (t *Ticket) FirstToken() {
	if q := t.a.queue; q != nil {
		q.dispatchModel(t.req.Model)
	}
}

// Waited is the time spent in the fair queue.
func (t *Ticket) Waited() time.Duration { return t.waited }

// Explain is the admission part of the explanation: tenant, class, budget,
// queue position and wait.
func (t *Ticket) Explain() string {
	var b strings.Builder
	b.WriteString("tenant=")
	b.WriteString(t.req.Tenant.Name)
	b.WriteString("; priority=")
	b.WriteString(t.prio.String())
	b.WriteString("; budget=")
	if t.res == nil {
		b.WriteString("none")
	} else {
		b.WriteString("reserved(")
		b.WriteString(strconv.FormatInt(t.res.Tokens, 10))
		b.WriteString(" tokens")
		if t.rate != nil && t.rate.LimitTokens > 0 {
			b.WriteString(", ")
			b.WriteString(strconv.FormatInt(t.rate.RemainingTokens, 10))
			b.WriteString(" left")
		}
		if t.res.local && t.a.shared != nil {
			b.WriteString(", store down: local share")
		}
		b.WriteByte(')')
	}
	if t.queued {
		b.WriteString("; queued=")
		b.WriteString(strconv.Itoa(t.position))
		b.WriteString("; waited=")
		b.WriteString(t.waited.Round(time.Millisecond).String())
	} else {
		b.WriteString("; queued=no")
	}
	return b.String()
}

// Done settles the ticket from the engine's usage: the token reservation
// is corrected to what was used (a refund when less was generated than
// reserved), the concurrency slot and the queue slot are freed, and the
// tenant's virtual counter is corrected. Calls after the first do nothing.
func (t *Ticket) Done(u Usage) { t.done1(u, true) }

// Shed refuses an admitted request before it reaches an engine, for why
// (ShedUnmeetable): its budgets are refunded in full, its slot frees
// without counting as a completion, the shed is counted, and the returned
// Rejection is what the client is answered (429, Retry-After 1s). detail,
// when not empty, ends the message. A ticket already settled (Done or
// Shed) is not settled or counted again; the Rejection is returned all
// the same.
func (t *Ticket) Shed(why ShedReason, detail string) *Rejection {
	if t.done1(Usage{Known: true}, false) {
		t.a.metrics.shed(t.req.Tenant.Name, t.prio, why)
	}
	msg := fmt.Sprintf("The model %q is overloaded: no endpoint is predicted to meet the request's objectives.", t.req.Model)
	if detail != "" {
		msg = fmt.Sprintf("The model %q is overloaded: %s.", t.req.Model, detail)
	}
	return &Rejection{Reason: ReasonShed, Tenant: t.req.Tenant, Message: msg, RetryAfter: time.Second, Rate: t.rate,
		Explain: t.Explain() + "; shed=" + string(why)}
}

// done1 settles the ticket once (Done, Shed); served says the request
// reached an engine. It reports whether this call settled it.
func (t *Ticket) done1(u Usage, served bool) bool {
	if !t.done.CompareAndSwap(false, true) {
		return false
	}
	a := t.a
	used := int64(-1)
	if u.Known {
		used = int64(u.PromptTokens + u.CompletionTokens)
	}
	if t.res != nil {
		if used < 0 {
			used = t.res.Tokens
		}
		a.metrics.tokens(t.req.Tenant.Name, "charged", used)
		a.settle(t.res, used)
	}
	if a.queue != nil {
		actual := t.cost
		if u.Known {
			actual = float64(max(u.PromptTokens-u.CachedTokens, 0) + u.CompletionTokens)
		}
		a.queue.release(t.req.Model, t.req.Tenant, t.cost, actual, served)
	}
	return true
}

func (m *Metrics) tokens(tenant, kind string, n int64) {
	if m != nil && n > 0 {
		m.Tokens.WithLabelValues(tenant, kind).Add(float64(n))
	}
}

// scopes are the budgets req is charged against.
func (a *Admission) scopes(req *Request) []Scope {
	t := req.Tenant
	var out []Scope
	if t.limits.any() {
		out = append(out, Scope{Key: "t:" + t.Name, Name: "tenant", Limits: t.limits})
	}
	if l, ok := t.modelLimits[req.Model]; ok && l.any() {
		out = append(out, Scope{Key: "m:" + t.Name + ":" + req.Model, Name: "model " + req.Model, Limits: l})
	}
	return out
}

// Admit reserves the request's budgets and, when its model is saturated,
// waits in the fair queue until it is admitted, shed or ctx ends. The
// router calls it between routing and scheduling.
func (a *Admission) Admit(ctx context.Context, req Request) (*Ticket, *Rejection) {
	w := &pending{ch: make(chan queueResult, 1)}
	t, rej, queued := a.begin(ctx, req, func(_ *Ticket, r queueResult) { w.ch <- r })
	if !queued {
		return t, rej
	}
	select {
	case r := <-w.ch:
		return a.finish(t, r)
	case <-ctx.Done():
		if a.queue.cancel(req.Model, t.waiter) {
			a.undo(t)
			return nil, &Rejection{Reason: ReasonClientGone, Tenant: req.Tenant, Message: "the client left while queued"}
		}
		// Admitted or shed meanwhile: take that answer.
		return a.finish(t, <-w.ch)
	}
}

// Submit is Admit for callers that cannot block (the virtual bench): done
// is called once with the ticket or the rejection, possibly before Submit
// returns, else from the call (Dispatch, Ticket.Done, a clock timer) that
// admits or sheds it.
func (a *Admission) Submit(req Request, done func(*Ticket, *Rejection)) {
	t, rej, queued := a.begin(context.Background(), req, func(t *Ticket, r queueResult) { done(a.finish(t, r)) })
	if !queued {
		done(t, rej)
	}
}

// pending is a request waiting in the queue.
type pending struct {
	ch chan queueResult
}

// begin reserves budgets and enters the queue. It returns a ticket or a
// rejection when the answer is known now, else queued is true and
// onQueue gets the queue's answer later.
func (a *Admission) begin(ctx context.Context, req Request, onQueue func(*Ticket, queueResult)) (_ *Ticket, _ *Rejection, queued bool) {
	if req.ID == "" {
		req.ID = strconv.FormatUint(a.seq.Add(1), 36)
	}
	tn := req.Tenant
	t := &Ticket{a: a, req: req, prio: tn.priorityFor(req.Priority)}
	t.cost = float64(req.PromptTokens + req.OutputTokens)
	if a.budgets {
		if sc := a.scopes(&req); len(sc) > 0 {
			res := &Reservation{ID: tn.Name + "/" + req.ID, Scopes: sc, Tokens: int64(req.PromptTokens + req.OutputTokens)}
			v, rej := a.reserve(ctx, res)
			if rej != nil {
				rej.Tenant = tn
				a.metrics.outcome(tn.Name, string(rej.Reason))
				return nil, rej, false
			}
			if v.Rate.LimitRequests > 0 || v.Rate.LimitTokens > 0 {
				rate := v.Rate
				t.rate = &rate
			}
			if !v.OK {
				a.metrics.outcome(tn.Name, string(ReasonOverBudget))
				sc := res.Scopes[v.DeniedScope]
				return nil, &Rejection{Reason: ReasonOverBudget, Tenant: tn, RetryAfter: v.RetryAfter, Rate: t.rate,
					Message: fmt.Sprintf("Rate limit reached for tenant %q (%s budget, %s): retry after %s.", tn.Name, sc.Name, v.Dim, ceilSecond(v.RetryAfter)),
					Explain: fmt.Sprintf("tenant=%s; budget=%s/%s exhausted; retry-after=%s", tn.Name, sc.Name, v.Dim, v.RetryAfter.Round(time.Millisecond))}, false
			}
			t.res = res
			a.metrics.tokens(tn.Name, "reserved", res.Tokens)
		}
	}
	if a.queue == nil {
		a.metrics.outcome(tn.Name, "admitted")
		return t, nil, false
	}
	t.waiter = &waiter{tenant: tn, prio: t.prio, cost: t.cost, done: func(r queueResult) { onQueue(t, r) }}
	if a.queue.submit(req.Model, t.waiter) {
		a.metrics.outcome(tn.Name, "admitted")
		return t, nil, false
	}
	return t, nil, true
}

// finish turns a queue result into the answer.
func (a *Admission) finish(t *Ticket, r queueResult) (*Ticket, *Rejection) {
	t.queued, t.waited, t.position = true, r.waited, r.position
	if r.admitted {
		a.metrics.outcome(t.req.Tenant.Name, "admitted")
		return t, nil
	}
	a.undo(t)
	reason, msg := ReasonShed, ""
	retry := time.Second
	switch r.shed {
	case ShedNoEndpoint:
		reason = ReasonNoEndpoint
		msg = fmt.Sprintf("No endpoint is available for model %q (waited %s).", t.req.Model, r.waited.Round(time.Millisecond))
		retry = 5 * time.Second
	case ShedTimeout:
		msg = fmt.Sprintf("The model %q is overloaded: the request waited %s in the queue.", t.req.Model, r.waited.Round(time.Millisecond))
	case ShedExpectedWait:
		msg = fmt.Sprintf("The model %q is overloaded: the request would wait past the queue's time limit.", t.req.Model)
	default:
		msg = fmt.Sprintf("The model %q is overloaded: its queue is full and this request had the lowest priority.", t.req.Model)
	}
	a.metrics.outcome(t.req.Tenant.Name, string(reason))
	return nil, &Rejection{Reason: reason, Tenant: t.req.Tenant, Message: msg, RetryAfter: retry, Rate: t.rate,
		Explain: fmt.Sprintf("tenant=%s; priority=%s; queued=%d; waited=%s; shed=%s", t.req.Tenant.Name, t.prio, r.position, r.waited.Round(time.Millisecond), r.shed)}
}

// undo gives back the budgets of a request that never reached an engine.
func (a *Admission) undo(t *Ticket) {
	if t.res != nil {
		a.settle(t.res, 0)
	}
}

// reserve asks the shared store, or the local one, and applies
// onStoreError when the shared store fails.
func (a *Admission) reserve(ctx context.Context, r *Reservation) (Verdict, *Rejection) {
	now := a.clock.Now()
	if a.shared != nil && a.storeUsable(now) {
		cctx, cancel := context.WithTimeout(ctx, a.timeout)
		v, err := a.shared.Reserve(cctx, now, r)
		cancel()
		if err == nil {
			a.storeOK()
			return v, nil
		}
		a.storeFailed(now, "reserve", err)
	}
	if a.shared != nil {
		if a.reject {
			return Verdict{}, &Rejection{Reason: ReasonStoreUnavailable, RetryAfter: storeRetry,
				Message: "The budget store is unavailable; try again shortly."}
		}
		r.local = true
		v, _ := a.fallback.Reserve(ctx, now, r)
		return v, nil
	}
	r.local = true
	v, _ := a.local.Reserve(ctx, now, r)
	return v, nil
}

func (a *Admission) settle(r *Reservation, used int64) {
	now := a.clock.Now()
	switch {
	case r.local && a.shared != nil:
		_ = a.fallback.Settle(context.Background(), now, r, used)
	case r.local:
		_ = a.local.Settle(context.Background(), now, r, used)
	default:
		ctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		err := a.shared.Settle(ctx, now, r, used)
		cancel()
		if err != nil {
			a.storeFailed(now, "settle", err)
		}
	}
}

func (a *Admission) storeUsable(now time.Time) bool {
	a.storeMu.Lock()
	defer a.storeMu.Unlock()
	return a.storeDown.IsZero() || !now.Before(a.storeDown)
}

func (a *Admission) storeOK() {
	a.storeMu.Lock()
	was := !a.storeDown.IsZero()
	a.storeDown = time.Time{}
	a.storeMu.Unlock()
	if was {
		a.metrics.Fallback.Set(0)
		a.log.Info("budget store reachable again")
	}
}

// storeFailed counts the error and, the first time, logs it and switches
// to the fallback for storeRetry.
func (a *Admission) storeFailed(now time.Time, op string, err error) {
	a.metrics.StoreErrors.WithLabelValues(op).Inc()
	a.storeMu.Lock()
	first := a.storeDown.IsZero()
	a.storeDown = now.Add(storeRetry)
	a.storeMu.Unlock()
	if first {
		mode := "per-router share of each limit"
		if a.reject {
			mode = "rejecting requests with 503"
		}
		a.metrics.Fallback.Set(1)
		a.log.Warn("budget store unreachable; falling back", "mode", mode, "op", op, "error", err)
	}
}

// ceilSecond rounds d up to whole seconds for messages.
func ceilSecond(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
}
