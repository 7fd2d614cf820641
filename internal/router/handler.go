package router

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/observability"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/routing"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// call is the state of one inference request through the router.
type call struct {
	start   time.Time
	kind    openai.Kind
	body    *openai.Request
	route   *routing.Route
	profile *scheduling.Profile
	req     *framework.Request
	explain bool
	// tokenizedFor is the engine model req's token ids are for (prefix
	// routing), "" before tokenisation.
	tokenizedFor string
	// span is the request's trace span; nil when tracing is off.
	span trace.Span
	// ticket is the admission ticket (nil when admission is off), settled
	// from usage, or chunks relayed when a stream reported no usage;
	// answered is set once an engine answered.
	ticket   *admission.Ticket
	usage    admission.Usage
	chunks   int
	answered bool
}

func (r *Router) serveChat(w http.ResponseWriter, hr *http.Request) {
	r.serveInference(w, hr, openai.KindChat)
}

func (r *Router) serveCompletion(w http.ResponseWriter, hr *http.Request) {
	r.serveInference(w, hr, openai.KindCompletion)
}

func (r *Router) serveInference(w http.ResponseWriter, hr *http.Request, kind openai.Kind) {
	hr, span := r.startRequestSpan(hr)
	if span != nil || r.log.Enabled(hr.Context(), slog.LevelDebug) {
		sr := &statusRecorder{ResponseWriter: w}
		w = sr
		start := time.Now()
		defer func() { r.logAccess(hr, sr.status, start, span) }()
	}
	tenant, ok := r.authenticate(w, hr)
	if !ok {
		return
	}
	c, aerr, cause := r.prepare(w, hr, kind)
	if aerr != nil {
		model := ""
		if c != nil && c.route != nil { // never label by an unknown model name
			model = c.route.Model
		}
		r.fail(w, model, aerr, cause)
		return
	}
	c.span = span
	if span != nil {
		span.SetAttributes(attrModel.String(c.route.Model), attrRequestID.String(c.req.ID))
	}
	if !r.admit(w, hr, c, tenant) {
		return
	}
	if c.ticket != nil {
		defer r.settle(c)
	}
	r.metrics.InFlight.Inc()
	defer r.metrics.InFlight.Dec()
	r.forward(w, hr, c)
}

// logAccess writes the access log line of an inference request (level
// debug; info when tracing is on), with its trace id, and ends its span.
func (r *Router) logAccess(hr *http.Request, status int, start time.Time, span trace.Span) {
	level := slog.LevelDebug
	if span != nil {
		level = slog.LevelInfo
		endSpan(span, nil, attrStatus.Int(status))
	}
	if r.log.Enabled(hr.Context(), level) {
		r.log.Log(hr.Context(), level, "request", "method", hr.Method, "path", hr.URL.Path, "status", status,
			"duration", time.Since(start).Round(time.Microsecond).String(), "trace_id", traceID(hr.Context()))
	}
}

// prepare reads and parses the body, finds the route and fills the
// scheduling request.
func (r *Router) prepare(w http.ResponseWriter, hr *http.Request, kind openai.Kind) (*call, *openai.Error, string) {
	start := time.Now()
	body, aerr := r.readBody(w, hr)
	if aerr != nil {
		cause := observability.CauseBadRequest
		switch aerr.Status {
		case http.StatusRequestEntityTooLarge:
			cause = observability.CauseTooLarge
		case http.StatusRequestTimeout:
			cause = observability.CauseRequestTimeout
		}
		return nil, aerr, cause
	}
	c, aerr, cause := r.prepareBody(hr, kind, body)
	if c != nil {
		c.start = start
	}
	return c, aerr, cause
}

// prepareBody parses body, finds the route and fills the scheduling request.
func (r *Router) prepareBody(hr *http.Request, kind openai.Kind, body []byte) (*call, *openai.Error, string) {
	c := &call{start: time.Now(), kind: kind}
	oreq, perr := openai.Parse(kind, body)
	if perr != nil {
		return c, perr, observability.CauseBadRequest
	}
	c.body = oreq
	routes := r.routes()
	route, ok := routes.table.Lookup(oreq.Model)
	if !ok {
		return c, openai.ModelNotFound(oreq.Model), observability.CauseModelNotFound
	}
	c.route = route
	c.profile = routes.profiles[route.Profile]
	c.req = r.schedulingRequest(hr, oreq, route)
	c.explain = r.cfg.Debug.ExplainEnabled() && explainRequested(hr.Header)
	return c, nil, ""
}

func explainRequested(h http.Header) bool {
	switch strings.ToLower(h.Get(HeaderExplain)) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// readBody reads at most maxBodyBytes within timeouts.requestBody. Memory
// grows with the bytes that arrive, never with the declared length alone.
func (r *Router) readBody(w http.ResponseWriter, hr *http.Request) ([]byte, *openai.Error) {
	limit := r.cfg.MaxBodyBytes
	if hr.ContentLength > limit {
		return nil, openai.TooLarge(limit)
	}
	rc := http.NewResponseController(w)
	timeout := r.cfg.Timeouts.RequestBody.Duration
	deadlineSet := timeout > 0 && rc.SetReadDeadline(time.Now().Add(timeout)) == nil
	// A declared length is already checked against the limit and net/http
	// never reads past it: only a body of unknown length needs the
	// MaxBytesReader.
	var rd io.Reader = hr.Body
	if hr.ContentLength < 0 {
		rd = http.MaxBytesReader(w, hr.Body, limit)
	}
	body, err := readGrowing(rd, hr.ContentLength, limit)
	if deadlineSet {
		_ = rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, openai.TooLarge(limit)
		case isTimeout(err):
			return nil, openai.RequestTimeout("The request body did not arrive within " + timeout.String() + ".")
		}
		return nil, openai.BadRequest("", openai.CodeInvalidJSON, "could not read the request body: "+err.Error())
	}
	return body, nil
}

// Sizes of the request body buffer: its first allocation, and for a body of
// unknown length the first allocation before any byte arrived.
const (
	bodyChunk        = 32 << 10
	bodyUnknownFirst = 4 << 10
)

// readGrowing reads rd to the end. The buffer starts small and doubles only
// when the bytes received fill it, up to the declared length (when known)
// or limit+1, so a client that declares 16 MiB and sends one byte costs
// bodyChunk, not 16 MiB.
func readGrowing(rd io.Reader, declared, limit int64) ([]byte, error) {
	capacity := int64(bodyUnknownFirst)
	if declared >= 0 {
		capacity = min(declared, bodyChunk)
	}
	most := limit + 1 // one byte more than the limit, to see it exceeded
	if declared >= 0 {
		most = declared
	}
	buf := make([]byte, 0, capacity)
	for {
		if declared >= 0 && int64(len(buf)) == declared {
			return buf, nil
		}
		if len(buf) == cap(buf) {
			if int64(cap(buf)) >= most {
				// Unknown length and the limit passed: MaxBytesReader
				// reports it on the next read.
				var one [1]byte
				if _, err := rd.Read(one[:]); err != nil && !errors.Is(err, io.EOF) {
					return nil, err
				}
				return buf, nil
			}
			next := make([]byte, len(buf), min(max(2*int64(cap(buf)), bodyChunk), most))
			copy(next, buf)
			buf = next
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			if declared >= 0 && int64(len(buf)) < declared {
				return nil, io.ErrUnexpectedEOF
			}
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

var requestSeq atomic.Uint64

var requestPrefix = "halyard-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + "-"

func newRequestID() string {
	return requestPrefix + strconv.FormatUint(requestSeq.Add(1), 36)
}

// schedulingRequest fills the framework.Request once after parsing.
func (r *Router) schedulingRequest(hr *http.Request, o *openai.Request, route *routing.Route) *framework.Request {
	id := hr.Header.Get(HeaderRequestID)
	if id == "" {
		id = newRequestID()
	}
	headers := make(map[string]string, len(hr.Header))
	for k, v := range hr.Header {
		if len(v) > 0 {
			headers[lowerHeader(k)] = v[0]
		}
	}
	req := &framework.Request{
		ID:         id,
		Model:      o.Model,
		Adapter:    route.Adapter,
		Headers:    headers,
		SessionKey: hr.Header.Get(r.cfg.SessionHeader),
		MaxTokens:  o.MaxTokens,
		Stream:     o.Stream,
	}
	if req.SessionKey == "" {
		req.SessionKey = o.User
	}
	if o.PromptTokenIDs != nil {
		req.Prompt.TokenIDs = o.PromptTokenIDs
		req.PromptTokens = len(o.PromptTokenIDs)
	} else {
		req.Prompt.Text = o.PromptText
		req.PromptTokens = tokenizer.Pseudo{}.CountBytes(o.PromptText)
	}
	return req
}

// commonHeaders maps canonical header names to lowercase without allocating.
var commonHeaders = map[string]string{}

func init() {
	for _, h := range []string{"Accept", "Accept-Encoding", "Authorization", "Content-Length", "Content-Type",
		"Connection", "User-Agent", "X-Request-Id", "X-Session-Id", HeaderExplain, "X-Stainless-Lang",
		"X-Stainless-Package-Version", "X-Stainless-Os", "X-Stainless-Arch", "X-Stainless-Runtime",
		"X-Stainless-Runtime-Version", "X-Stainless-Retry-Count", "X-Stainless-Timeout", "Openai-Organization", "Openai-Project",
		"X-Halyard-Slo-Ttft-Ms", "X-Halyard-Slo-Tpot-Ms"} {
		commonHeaders[h] = strings.ToLower(h)
	}
}

func lowerHeader(k string) string {
	if l, ok := commonHeaders[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// engineModel is the model name sent to ep for target.
func engineModel(t routing.Target, ep framework.Endpoint) string {
	if t.Model != "" {
		return t.Model
	}
	return ep.Metadata().Model
}

// exclusion says why an endpoint of a pool was not a candidate.
type exclusion struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// candidates returns the healthy endpoints of pool that can serve the route,
// leaving out those already tried when others remain, and never the last
// tried one when another exists.
func (r *Router) candidates(route *routing.Route, pool string, tried []*datastore.Endpoint, explain bool) ([]framework.Endpoint, []exclusion) {
	eps := r.store.Pool(pool)
	out := make([]framework.Endpoint, 0, len(eps))
	var excluded []exclusion
	var ejected []framework.Endpoint
	now := r.now()
	for _, e := range eps {
		reason := ""
		switch {
		case !e.Healthy():
			reason = "unhealthy"
		case e.Metadata().Role != framework.RoleBoth && e.Metadata().Role != "":
			reason = "role " + string(e.Metadata().Role)
		case route.Adapter != "" && !servesAdapter(e, route.Adapter):
			reason = "adapter " + route.Adapter + " not listed"
		case e.Ejected(now):
			ejected = append(ejected, e)
			reason = "ejected after consecutive 5xx"
		}
		if reason != "" {
			if explain {
				excluded = append(excluded, exclusion{Name: e.Metadata().Name, Reason: reason})
			}
			continue
		}
		out = append(out, e)
	}
	if len(out) == 0 && len(ejected) > 0 {
		// Every servable endpoint is ejected: use them rather than none.
		out = append(out, ejected...)
	}
	if len(tried) == 0 || len(out) == 0 {
		return out, excluded
	}
	fresh := make([]framework.Endpoint, 0, len(out))
	for _, e := range out {
		if !contains(tried, e) {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) > 0 {
		return fresh, excluded
	}
	last := tried[len(tried)-1]
	for _, e := range out {
		if e != framework.Endpoint(last) {
			fresh = append(fresh, e)
		}
	}
	if len(fresh) > 0 {
		return fresh, excluded
	}
	return out, excluded
}

func contains(tried []*datastore.Endpoint, e framework.Endpoint) bool {
	for _, t := range tried {
		if framework.Endpoint(t) == e {
			return true
		}
	}
	return false
}

func servesAdapter(e framework.Endpoint, adapter string) bool {
	for _, a := range e.Metadata().Adapters {
		if a == adapter {
			return true
		}
	}
	for _, a := range e.Metrics().RunningAdapters {
		if a == adapter {
			return true
		}
	}
	return false
}

// decision is the outcome of choosing an endpoint for one attempt.
type decision struct {
	endpoint    *datastore.Endpoint
	target      routing.Target
	fallback    bool
	state       *framework.CycleState
	explanation *framework.Explanation
	excluded    []exclusion
	prefix      float64
	hasPrefix   bool
	// body, when set, is sent instead of the client's body (PD flow).
	body []byte
	// pd is set for the decode request of a disaggregated pool.
	pd *pdAttempt
}

// decide runs the route's targets in order (the split's pick, then the
// fallbacks) until one has an endpoint the profile picks.
func (r *Router) decide(ctx context.Context, c *call, targets []routing.Target, tried []*datastore.Endpoint) (decision, bool) {
	var d decision
	for i, t := range targets {
		cands, excluded := r.candidates(c.route, t.Pool, tried, c.explain)
		d.excluded = append(d.excluded, excluded...)
		if len(cands) == 0 {
			continue
		}
		if c.req.TargetModel == "" || i > 0 {
			c.req.TargetModel = engineModel(t, cands[0])
		}
		r.prefix.tokenize(c, cands[0].Metadata().Model)
		state := framework.NewCycleState()
		sctx, span := r.startSpan(ctx, "halyard.schedule", trace.SpanKindInternal, attrProfile.String(c.profile.Name()), attrPool.String(t.Pool))
		t0 := time.Now()
		res, err := c.profile.Schedule(sctx, state, c.req, cands, c.explain || span != nil)
		r.metrics.SchedulingTime.WithLabelValues(c.profile.Name()).Observe(time.Since(t0).Seconds())
		if res.Explanation != nil && c.explain {
			r.prefix.explain(res.Explanation)
			d.explanation = res.Explanation
		}
		var ep *datastore.Endpoint
		if err == nil && len(res.Picked) > 0 {
			ep, _ = res.Picked[0].(*datastore.Endpoint)
		}
		if ep == nil {
			endScheduleSpan(span, nil, res.Explanation, len(cands), 0, false)
			continue
		}
		d.endpoint, d.target, d.fallback, d.state = ep, t, i > 0, state
		if ps, ok := framework.ReadAs[*prefixScores](state, prefixScoresKey); ok {
			d.prefix, d.hasPrefix = ps.scoreOf(ep)
		}
		endScheduleSpan(span, ep, res.Explanation, len(cands), d.prefix, d.hasPrefix)
		return d, true
	}
	return d, false
}

// fail writes an error response and counts it.
func (r *Router) fail(w http.ResponseWriter, model string, e *openai.Error, cause string) {
	if cause != "" {
		r.metrics.Errors.WithLabelValues(model, cause).Inc()
	}
	r.metrics.Requests.WithLabelValues(model, "", strconv.Itoa(e.Status)).Inc()
	e.Write(w)
}
