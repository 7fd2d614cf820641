package router

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/observability"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/routing"
	"github.com/halyard-dev/halyard/internal/scheduling"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
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
	// clientID is the client's X-Request-Id, bounded and sanitised, for
	// logs only (clientRequestID).
	clientID string
	// held is the request's share of the buffer budget.
	held hold
	// tokenizedFor is the engine model req's token ids are for (prefix
	// routing), "" before tokenisation.
	tokenizedFor string
	// dc is the request's passage through the decision (decisionCall).
	dc *decision.Call
	// span is the request's trace span; nil when tracing is off or the
	// request is not sampled.
	span trace.Span
	// ticket is the admission ticket (nil when admission is off), settled
	// from usage, or chunks relayed when a stream reported no usage;
	// answered is set once an engine answered.
	ticket   *admission.Ticket
	usage    admission.Usage
	chunks   int
	answered bool
	// firstByte is when the current attempt's first token reached the
	// client (autoscaling signals); zero before.
	firstByte time.Time
	// watched is set when the console's feed had a subscriber as the
	// request came (the decision is then explained and published);
	// published once it was; firstToken is when the first token was
	// relayed.
	watched, published bool
	firstToken         time.Time
	// raw is the body's buffer when the body pool may take it back once
	// the request is done (recycleBody); keepBody is set when something
	// may still read it then (a prefill outliving the handler, an https
	// Transport writing the body from its own goroutine).
	raw      []byte
	keepBody bool
}

func (r *Router) serveChat(w http.ResponseWriter, hr *http.Request) {
	r.serveInference(w, hr, openai.KindChat)
}

func (r *Router) serveCompletion(w http.ResponseWriter, hr *http.Request) {
	r.serveInference(w, hr, openai.KindCompletion)
}

func (r *Router) serveInference(w http.ResponseWriter, hr *http.Request, kind openai.Kind) {
	hr, span := r.startRequestSpan(hr)
	watched := r.feed.Watching()
	var c *call
	if span != nil || watched || r.log.Enabled(hr.Context(), slog.LevelDebug) {
		sr := &statusRecorder{ResponseWriter: w}
		w = sr
		start := time.Now()
		defer func() {
			r.logAccess(hr, sr.status, start, span)
			if c != nil && c.watched {
				r.publishOutcome(c, sr.status, start)
			}
		}()
	}
	tenant, ok := r.authenticate(w, hr)
	if !ok {
		return
	}
	c, aerr, cause := r.prepare(w, hr, kind)
	if c != nil {
		c.watched = watched
		defer c.held.release()
		defer r.recycleBody(c)
	}
	if aerr != nil {
		model := ""
		if c != nil && c.route != nil { // never label by an unknown model name
			model = c.route.Model
		}
		r.fail(w, model, aerr, cause)
		return
	}
	if span != nil && span.IsRecording() {
		// An unsampled request's span only carries the trace context to
		// the engines: no attributes, no explanation for it.
		c.span = span
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
	held := hold{b: r.budget}
	body, aerr := r.readBody(w, hr, &held)
	if aerr != nil {
		held.release()
		cause := observability.CauseBadRequest
		switch aerr.Status {
		case http.StatusRequestEntityTooLarge:
			cause = observability.CauseTooLarge
		case http.StatusRequestTimeout:
			cause = observability.CauseRequestTimeout
		case http.StatusServiceUnavailable:
			cause = observability.CauseOverloaded
		}
		return nil, aerr, cause
	}
	c, aerr, cause := r.prepareBody(hr, kind, body)
	if c != nil {
		c.start = start
		c.held = held
		if hr.ContentLength >= bodyPoolMin {
			c.raw = body
		}
	} else {
		held.release()
	}
	return c, aerr, cause
}

// prepareBody parses body, finds the route and fills the scheduling request.
func (r *Router) prepareBody(hr *http.Request, kind openai.Kind, body []byte) (*call, *openai.Error, string) {
	c := &call{start: time.Now(), kind: kind}
	oreq, perr := openai.ParseHead(kind, body, tokenizeHeadBytes)
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
	if v := hr.Header.Get(HeaderRequestID); v != "" {
		c.clientID = clientRequestID(v)
	}
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

// readBody reads at most maxBodyBytes, reserving the bytes from the buffer
// budget (into held) before reading them: the declared length at once, a
// body of unknown length as its buffer grows. A body the budget cannot hold
// gets 503 with Retry-After before it is read. The body must arrive within
// timeouts.requestBody and, after minBodyRateGrace, at limits.minBodyRate
// at least (bodyClock). Memory grows with the bytes that arrive, never with
// the declared length alone. An answer before the whole body was read
// closes the connection (Connection: close): the rest is never read.
func (r *Router) readBody(w http.ResponseWriter, hr *http.Request, held *hold) ([]byte, *openai.Error) {
	limit := r.cfg.MaxBodyBytes
	if hr.ContentLength > limit {
		w.Header().Set("Connection", "close")
		return nil, openai.TooLarge(limit)
	}
	if hr.ContentLength > 0 && !held.grow(hr.ContentLength) {
		return nil, r.overloaded(w)
	}
	rc := http.NewResponseController(w)
	timeout := r.cfg.Timeouts.RequestBody.Duration
	bc := bodyClock{rc: rc, start: time.Now(), total: timeout, rate: r.cfg.Limits.MinBodyRate}
	deadlineSet := bc.arm(0)
	// A declared length is already checked against the limit and net/http
	// never reads past it: only a body of unknown length needs the
	// MaxBytesReader.
	var rd io.Reader = hr.Body
	if hr.ContentLength < 0 {
		rd = http.MaxBytesReader(w, hr.Body, limit)
	}
	if deadlineSet && bc.rate > 0 {
		rd = &pacedReader{r: rd, bc: &bc}
	}
	var grow func(int64) bool
	if hr.ContentLength < 0 {
		grow = held.grow
	}
	body, err := readGrowing(rd, hr.ContentLength, limit, grow, r.bodies)
	if err != nil {
		// The rest of the body is not read: the connection cannot carry
		// another request. The read deadline stays (passed, for a
		// timeout) so that nothing waits for the rest.
		w.Header().Set("Connection", "close")
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, openai.TooLarge(limit)
		case errors.Is(err, errBudget):
			return nil, r.overloaded(w)
		case isTimeout(err):
			_ = rc.SetReadDeadline(time.Now())
			return nil, openai.RequestTimeout("The request body did not arrive in time.")
		}
		return nil, openai.BadRequest("", openai.CodeInvalidJSON, "Could not read the request body.")
	}
	if deadlineSet {
		_ = rc.SetReadDeadline(time.Time{})
	}
	return body, nil
}

// recycleBody gives c's body buffer to the body pool once the handler is
// done with it, unless something may still read it.
func (r *Router) recycleBody(c *call) {
	if c.raw != nil && !c.keepBody {
		r.bodies.put(c.raw)
	}
	c.raw = nil
}

// overloaded answers a request the buffer budget cannot hold: 503 with
// Retry-After, and the connection closed since its body is not read.
func (r *Router) overloaded(w http.ResponseWriter) *openai.Error {
	w.Header().Set("Retry-After", budgetRetryAfter)
	w.Header().Set("Connection", "close")
	return openai.Overloaded("The router is holding as many request bytes as it may (router.limits.bufferBytes); retry shortly.")
}

// minBodyRateGrace is the time a request body gets before
// limits.minBodyRate applies (Apache's mod_reqtimeout model: a first
// timeout, extended by one second per minBodyRate bytes received).
const minBodyRateGrace = 2 * time.Second

// bodyClock sets the read deadline of a request body: start + total, or
// sooner with a minimum rate: start + minBodyRateGrace + received/rate.
type bodyClock struct {
	rc       *http.ResponseController
	start    time.Time
	total    time.Duration
	rate     int64 // bytes per second; <= 0 off
	received int64
}

// arm sets the deadline after n more bytes arrived; false when the
// connection has no deadlines (not a net.Conn the server controls).
func (bc *bodyClock) arm(n int64) bool {
	if bc.total <= 0 {
		return false
	}
	bc.received += n
	d := bc.start.Add(bc.total)
	if bc.rate > 0 {
		paced := bc.start.Add(minBodyRateGrace + time.Duration(float64(bc.received)/float64(bc.rate)*float64(time.Second)))
		if paced.Before(d) {
			d = paced
		}
	}
	return bc.rc.SetReadDeadline(d) == nil
}

// pacedReader moves the body's read deadline on as bytes arrive.
type pacedReader struct {
	r  io.Reader
	bc *bodyClock
}

func (p *pacedReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 && err == nil {
		p.bc.arm(int64(n))
	}
	return n, err
}

// prefaultStep is how far ahead of the bytes received a long body's
// fresh buffer is mapped, and how much each prefault call maps.
const prefaultStep = 512 << 10

// Sizes of the request body buffer: its first allocation, and for a body of
// unknown length the first allocation before any byte arrived.
const (
	bodyChunk        = 32 << 10
	bodyUnknownFirst = 4 << 10
)

// readGrowing reads rd to the end. The buffer starts small and grows only
// when the bytes received fill it, up to the declared length (when known)
// or limit+1, so a client that declares 16 MiB and sends one byte costs
// bodyChunk, not 16 MiB. It doubles for a body of unknown length (each step
// reserved through grow) and grows sixteenfold for a declared one, whose
// length the budget already holds: a 4 MiB body is copied 0.5 MiB on the
// way (2.3 MiB growing eightfold, 4 doubling) and at most 16 times the
// bytes received are allocated (BenchmarkReadGrowing). grow, when set,
// reserves each new buffer's extra capacity first; a refusal ends the read
// with errBudget. pool, when set, gives a declared body of bodyPoolMin
// bytes or more a buffer already mapped (bodypool.go), and its last growth
// a capacity the pool can take back.
func readGrowing(rd io.Reader, declared, limit int64, grow func(int64) bool, pool *bodyPool) ([]byte, error) {
	capacity := int64(bodyUnknownFirst)
	if declared >= 0 {
		capacity = min(declared, bodyChunk)
	}
	most := limit + 1 // one byte more than the limit, to see it exceeded
	if declared >= 0 {
		most = declared
	}
	if grow != nil && !grow(capacity) {
		return nil, errBudget
	}
	var buf []byte
	if declared >= 0 {
		buf = pool.get(declared)
	}
	if buf == nil {
		buf = make([]byte, 0, capacity)
	}
	mapped := int64(-1) // how far a long body's fresh buffer is mapped (prefault); -1 not
	for {
		if declared >= 0 && int64(len(buf)) == declared {
			return buf, nil
		}
		if int64(len(buf)) == min(int64(cap(buf)), most) {
			if int64(cap(buf)) >= most {
				// Unknown length and the limit passed: MaxBytesReader
				// reports it on the next read.
				var one [1]byte
				if _, err := rd.Read(one[:]); err != nil && !errors.Is(err, io.EOF) {
					return nil, err
				}
				return buf, nil
			}
			factor := int64(2)
			if declared >= 0 {
				factor = 16
			}
			size := min(max(factor*int64(cap(buf)), bodyChunk), most)
			if grow != nil && !grow(size) {
				return nil, errBudget
			}
			alloc := size
			if pool != nil && size == most && declared >= bodyPoolMin {
				alloc = poolCap(size) // reusable for a body of about this length
			}
			next := make([]byte, len(buf), alloc)
			if declared >= bodyPoolMin {
				// A long body's fresh buffer: its pages are mapped a
				// step ahead of the bytes, one call per step (prefault),
				// rather than a fault per 4 KiB as the copy and the
				// kernel's reads first touch them; memory still grows
				// with the bytes that arrive.
				prefault(next, 0, len(buf)+prefaultStep)
				mapped = int64(len(buf)) + prefaultStep
			}
			copy(next, buf)
			buf = next
		}
		upto := min(int64(cap(buf)), most)
		if mapped >= 0 {
			if mapped < upto && int64(len(buf))+prefaultStep > mapped {
				prefault(buf, int(mapped), int(mapped+prefaultStep))
				mapped += prefaultStep
			}
			// A read stops where the mapping does: the kernel would
			// fault the pages past it one by one.
			upto = min(upto, mapped)
		}
		n, err := rd.Read(buf[len(buf):upto])
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

// schedulingRequest fills the framework.Request once after parsing.
func (r *Router) schedulingRequest(hr *http.Request, o *openai.Request, route *routing.Route) *framework.Request {
	id := newRequestID()
	headers := make(map[string]string, len(hr.Header))
	for k, v := range hr.Header {
		if len(v) > 0 && k != HeaderRequestID {
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
		// A long prompt's text is its head (openai.ParseHead): routing
		// reads no more (hashing, tokenising, counting).
		req.Prompt.Text, req.Prompt.TextBytes = o.PromptText, o.PromptTextBytes
		req.PromptTokens = countText(o.PromptText, req.Prompt.TextLen())
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

// targetsOf converts a route's pick (the split's target, then the
// fallbacks) into the decision's targets.
func targetsOf(primary routing.Target, fallback []routing.Target) []decision.Target {
	out := make([]decision.Target, 0, 1+len(fallback))
	out = append(out, decision.Target{Pool: primary.Pool, Model: primary.Model})
	for _, t := range fallback {
		out = append(out, decision.Target{Pool: t.Pool, Model: t.Model})
	}
	return out
}

// decisionCall returns c's passage through the decision, made once.
func (r *Router) decisionCall(c *call) *decision.Call {
	if c.dc == nil {
		c.dc = &decision.Call{Req: c.req, Profile: c.profile, Prepare: func(model string) { r.prefix.tokenize(c, model) }}
		if c.ticket != nil && r.admission.Queue() != nil {
			// The fair queue admitted it for the room it saw: the pick
			// goes where that room is.
			c.dc.Queue = &r.cfg.Admission.Queue
		}
		// Admission takes back an admitted request that no endpoint is
		// predicted to meet the objectives of (forward sheds it).
		c.dc.ShedUnmeetable = c.ticket != nil && r.cfg.Admission != nil && r.cfg.Admission.Unmeetable == config.UnmeetableShed
	}
	// A traced request is explained too: its scheduling span carries the
	// scores (the response headers still follow c.explain).
	// So is a watched one: the console shows the explanation.
	c.dc.Explain = c.explain || c.span != nil || c.watched
	return c.dc
}

// pick is the decision for one attempt, with what the router adds.
type pick struct {
	decision.Decision
	endpoint *datastore.Endpoint
	// body, when set, is sent instead of the client's body (PD flow).
	body []byte
	// pd is set for the decode request of a disaggregated pool.
	pd *pdAttempt
}

// decide asks the director for an endpoint among the targets, leaving out
// those tried when others remain; the scheduling span covers it.
func (r *Router) decide(ctx context.Context, c *call, targets []decision.Target, tried []framework.Endpoint) (pick, bool) {
	sctx, span := r.startSpan(ctx, "halyard.schedule", trace.SpanKindInternal, attrProfile.String(c.profile.Name()))
	d, ok := r.director.Decide(sctx, r.decisionCall(c), targets, tried)
	p := pick{Decision: d}
	if ok {
		p.endpoint, ok = d.Endpoint.(*datastore.Endpoint)
	}
	endScheduleSpan(span, p.endpoint, d.Explanation, d.Prefix, d.HasPrefix)
	return p, ok
}

// fail writes an error response and counts it.
func (r *Router) fail(w http.ResponseWriter, model string, e *openai.Error, cause string) {
	if cause != "" {
		r.metrics.Errors.WithLabelValues(model, cause).Inc()
	}
	r.metrics.Requests.WithLabelValues(model, "", strconv.Itoa(e.Status)).Inc()
	e.Write(w)
}
