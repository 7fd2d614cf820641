package router

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// HeaderPriority asks for a priority class (critical, standard,
// sheddable); a tenant may lower its class and raise it up to its
// maxPriority.
const HeaderPriority = "X-Halyard-Priority"

// Admission error codes (OpenAI's where it has one).
const (
	codeInvalidAPIKey    = "invalid_api_key"
	codeModelNotAllowed  = "model_not_allowed"
	codeRateLimit        = "rate_limit_exceeded"
	codeOverloaded       = "model_overloaded"
	codeStoreUnavailable = "budget_store_unavailable"
	typePermission       = "permission_error"
)

// newAdmission builds the admission stage from the configuration; nil when
// the configuration asks for none.
func (r *Router) newAdmission(cfg *config.Config, opts Options) error {
	a, err := admission.New(admission.Options{Config: cfg, Gate: admission.GateFunc(r.capacity), Clock: opts.Clock,
		Log: r.log, Registerer: r.metrics.Registry})
	if err != nil {
		return err
	}
	r.admission, r.authOn, r.keySource = a, cfg.Auth != nil, opts.KeySource
	if a != nil {
		r.budgetRemaining = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "halyard_router_admission_budget_remaining_ratio",
			Help: "Share of a tenant's tightest request or token budget left after its last admitted request (0..1), as the x-ratelimit-remaining-* headers say.",
		}, []string{"tenant", "budget"})
		r.metrics.Registry.MustRegister(r.budgetRemaining)
	}
	return nil
}

// Admission returns the admission stage (nil when off).
func (r *Router) Admission() *admission.Admission { return r.admission }

// authenticate maps the caller to a tenant before the body is read; nil
// tenant and no rejection when admission is off.
func (r *Router) authenticate(w http.ResponseWriter, hr *http.Request) (*admission.Tenant, bool) {
	if r.admission == nil {
		return nil, true
	}
	t, rej := r.admission.Authenticate(hr.Header.Get("Authorization"))
	if rej != nil {
		r.reject(w, "", nil, rej, false)
		return nil, false
	}
	return t, true
}

// admit runs admission for a parsed and routed request: the model
// allow-list, the budgets and the fair queue. It answers the client itself
// when the request is refused.
func (r *Router) admit(w http.ResponseWriter, hr *http.Request, c *call, tenant *admission.Tenant) bool {
	if r.admission == nil {
		return true
	}
	if !tenant.CanExplain && r.authOn {
		c.explain = false
	}
	ctx, span := r.startSpan(hr.Context(), "halyard.admission", trace.SpanKindInternal, attrTenant.String(tenantName(tenant)))
	if rej := r.admission.Authorize(tenant, c.route.Model); rej != nil {
		endAdmissionSpan(span, nil, rej)
		r.reject(w, c.route.Model, c, rej, c.explain)
		return false
	}
	t, rej := r.admission.Admit(ctx, admission.Request{
		ID: c.req.ID, Tenant: tenant, Model: c.route.Model,
		PromptTokens: c.req.PromptTokens, OutputTokens: r.director.OutputTokens(c.req),
		Priority: hr.Header.Get(HeaderPriority),
	})
	endAdmissionSpan(span, t, rej)
	if rej != nil {
		r.reject(w, c.route.Model, c, rej, c.explain)
		return false
	}
	c.ticket = t
	c.start = time.Now() // added latency and TTFT are counted after the queue
	if rate := t.Rate(); rate != nil {
		setRateHeaders(w.Header(), rate)
		r.observeBudget(tenant, rate)
	}
	return true
}

// tenantName is the tenant's name, "" when unknown.
func tenantName(t *admission.Tenant) string {
	if t == nil {
		return ""
	}
	return t.Name
}

// endAdmissionSpan records admission's outcome on its span: admitted or
// the refusal's reason, and the time queued.
func endAdmissionSpan(span trace.Span, t *admission.Ticket, rej *admission.Rejection) {
	if span == nil {
		return
	}
	if rej != nil {
		span.SetAttributes(attrAdmission.String("refused"), attrAdmissionReason.String(string(rej.Reason)))
		span.SetStatus(codes.Error, string(rej.Reason))
	} else {
		span.SetAttributes(attrAdmission.String("admitted"),
			attrQueueWait.Float64(float64(t.Waited().Microseconds())/1000))
	}
	span.End()
}

// observeBudget sets the tenant's remaining budget shares.
func (r *Router) observeBudget(tenant *admission.Tenant, rate *admission.RateInfo) {
	name := tenantName(tenant)
	if rate.LimitRequests > 0 {
		r.budgetRemaining.WithLabelValues(name, "requests").Set(float64(rate.RemainingRequests) / float64(rate.LimitRequests))
	}
	if rate.LimitTokens > 0 {
		r.budgetRemaining.WithLabelValues(name, "tokens").Set(float64(rate.RemainingTokens) / float64(rate.LimitTokens))
	}
}

// settle ends the request's admission ticket with the engine's usage: the
// reported usage, else (a stream without usage) the prompt and the chunks
// relayed, else nothing at all when no engine answered.
func (r *Router) settle(c *call) {
	u := c.usage
	switch {
	case u.Known:
	case c.chunks > 0:
		u = admission.Usage{PromptTokens: c.req.PromptTokens, CompletionTokens: c.chunks, Known: true}
	case !c.answered:
		u = admission.Usage{Known: true} // never reached an engine: a full refund
	}
	c.ticket.Done(u)
}

// shedUnmeetable refuses an admitted request that no endpoint is
// predicted to meet the objectives of (router.admission.unmeetable: shed):
// admission refunds it and the client gets a 429 saying why.
func (r *Router) shedUnmeetable(w http.ResponseWriter, c *call, un *framework.Unmeetable) {
	// The objectives the scorer checked (a disaggregated pool's prefill
	// side checks no TPOT objective).
	detail := fmt.Sprintf("no endpoint is predicted to meet the request's objectives (%s; least predicted ttft %.0fms)",
		un.Objectives(), un.LeastTTFTMs)
	r.reject(w, c.route.Model, c, c.ticket.Shed(admission.ShedUnmeetable, detail), c.explain)
}

// reject answers a refused request, OpenAI-shaped, with Retry-After and
// the x-ratelimit-* headers when they apply.
func (r *Router) reject(w http.ResponseWriter, model string, c *call, rej *admission.Rejection, explain bool) {
	e := &openai.Error{Status: rej.Status(), Message: rej.Message}
	switch rej.Status() {
	case http.StatusUnauthorized:
		e.Type, e.Code = openai.TypeInvalidRequest, codeInvalidAPIKey
	case http.StatusForbidden:
		e.Type, e.Code = typePermission, codeModelNotAllowed
	case http.StatusTooManyRequests:
		e.Type, e.Code = openai.TypeRateLimit, codeOverloaded
		if rej.Reason == admission.ReasonOverBudget {
			e.Code = codeRateLimit
		}
	case http.StatusServiceUnavailable:
		e.Type, e.Code = openai.TypeUnavailable, openai.CodeNoEndpoint
		if rej.Reason == admission.ReasonStoreUnavailable {
			e.Code = codeStoreUnavailable
		}
	}
	h := w.Header()
	if rej.Rate != nil {
		setRateHeaders(h, rej.Rate)
	}
	if rej.RetryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(rej.RetryAfter.Seconds())), 10))
	}
	if explain && rej.Explain != "" {
		h.Set(HeaderRoute, "admission=refused; "+rej.Explain)
	}
	if rej.Reason == admission.ReasonClientGone {
		r.metrics.Requests.WithLabelValues(model, "", "499").Inc()
		return
	}
	r.fail(w, model, e, "admission_"+string(rej.Reason))
}

// setRateHeaders writes OpenAI's x-ratelimit-* headers.
func setRateHeaders(h http.Header, ri *admission.RateInfo) {
	if ri.LimitRequests > 0 {
		h["X-Ratelimit-Limit-Requests"] = []string{strconv.FormatInt(ri.LimitRequests, 10)}
		h["X-Ratelimit-Remaining-Requests"] = []string{strconv.FormatInt(ri.RemainingRequests, 10)}
		h["X-Ratelimit-Reset-Requests"] = []string{resetString(ri.ResetRequests)}
	}
	if ri.LimitTokens > 0 {
		h["X-Ratelimit-Limit-Tokens"] = []string{strconv.FormatInt(ri.LimitTokens, 10)}
		h["X-Ratelimit-Remaining-Tokens"] = []string{strconv.FormatInt(ri.RemainingTokens, 10)}
		h["X-Ratelimit-Reset-Tokens"] = []string{resetString(ri.ResetTokens)}
	}
}

// resetString writes a reset time as OpenAI does ("1s", "6m0s", "20ms").
func resetString(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// capacity is the fair queue's Gate: the decision's view of how many
// requests of this router may be in flight to model's endpoints now, and
// how many endpoints could serve it (decision.Director.Capacity, which the
// virtual bench drives too).
func (r *Router) capacity(model string) (int, int) {
	route, ok := r.routes().table.Lookup(model)
	if !ok {
		return -1, 1 // the route went away: let it fail in scheduling
	}
	ts := route.Targets()
	targets := make([]decision.Target, len(ts))
	for i, t := range ts {
		targets[i] = decision.Target{Pool: t.Pool, Model: t.Model}
	}
	return r.director.Capacity(context.Background(), &framework.Request{Model: route.Model, Adapter: route.Adapter}, targets, r.cfg.Admission.Queue)
}

// runAdmission runs admission's background work (credential reloads, queue
// re-checks at the scrape interval) until ctx is done.
func (r *Router) runAdmission(ctx context.Context) {
	if r.admission == nil {
		return
	}
	if r.keySource != nil {
		go func() {
			if err := r.keySource.Run(ctx, r.admission.SetTenantKeys); err != nil {
				r.log.Error("following tenants' key secrets stopped", "error", err)
			}
		}()
	}
	r.admission.Run(ctx, r.cfg.ScrapeInterval.Duration)
}
