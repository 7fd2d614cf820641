package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/halyard-dev/halyard/internal/admission"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/observability"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// maxBufferedResponse caps a non-streamed response the router reads whole
// before forwarding (to retry on failure and to read its usage).
const maxBufferedResponse = 64 << 20

// maxUpstreamErrorBody caps the engine error body kept for the client.
const maxUpstreamErrorBody = 64 << 10

// hopHeaders are not forwarded in either direction (RFC 9110 §7.6.1), plus
// the ones the router sets itself.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Accept-Encoding": true, "Host": true, HeaderExplain: true,
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// outcome of one attempt.
type attemptResult int

const (
	attemptDone  attemptResult = iota // the client got a response (or left)
	attemptRetry                      // nothing reached the client; try elsewhere
)

// forward sends the request to endpoints until one answers, within
// maxAttempts, and streams the answer to the client.
func (r *Router) forward(w http.ResponseWriter, hr *http.Request, c *call) {
	ctx := hr.Context()
	targets := targetsOf(c.route.Pick(hr.Header))
	if r.director.PDPools() && r.forwardPD(w, hr, c, targets) {
		return
	}
	var (
		tried   []framework.Endpoint
		lastErr *upstreamError
	)
	attempts := max(r.cfg.MaxAttempts, 1)
	for attempt := 1; attempt <= attempts; attempt++ {
		d, ok := r.decide(ctx, c, targets, tried)
		if !ok && d.Unmeetable != nil {
			r.shedUnmeetable(w, c, d.Unmeetable)
			return
		}
		if !ok {
			break
		}
		r.metrics.Picks.WithLabelValues(c.profile.Name(), d.endpoint.Metadata().Name).Inc()
		r.metrics.RouteTargets.WithLabelValues(c.route.Model, d.Target.Pool, strconv.FormatBool(d.Fallback)).Inc()
		if d.HasPrefix {
			r.metrics.PrefixPredicted.WithLabelValues(c.route.Model).Observe(d.Prefix)
		}
		if r.log.Enabled(ctx, -4) {
			r.log.Debug("route decision", "request_id", c.req.ID, "model", c.route.Model, "pool", d.Target.Pool,
				"fallback", d.Fallback, "endpoint", d.endpoint.Metadata().Name, "attempt", attempt, "profile", c.profile.Name())
		}
		res, uerr := r.attempt(ctx, w, hr, c, &d, attempt)
		if res == attemptDone {
			return
		}
		lastErr = uerr
		tried = append(tried, d.endpoint)
		if uerr.final {
			break
		}
		if attempt < attempts {
			r.metrics.Retries.WithLabelValues(c.route.Model, uerr.reason).Inc()
			r.log.Info("retrying on another endpoint", "request_id", c.req.ID, "endpoint", d.endpoint.Metadata().Name,
				"attempt", attempt, "reason", uerr.reason, "error", uerr.err)
		}
	}
	if lastErr == nil {
		w.Header().Set("Retry-After", noEndpointRetryAfter)
		r.fail(w, c.route.Model, openai.Unavailable(fmt.Sprintf("no endpoint is available for model %q", c.route.Model)), observability.CauseNoEndpoint)
		return
	}
	r.failUpstream(w, c, lastErr)
}

// noEndpointRetryAfter is the Retry-After (seconds) of a 503
// no_endpoint_available: endpoints come back on the next health checks.
const noEndpointRetryAfter = "2"

// failUpstream answers a request whose last attempt failed before anything
// reached the client: the engine's own error when it answered one (made
// OpenAI-shaped if it was not), else a 502, a 504 for a timeout, or a 503
// when the router is stopping.
func (r *Router) failUpstream(w http.ResponseWriter, c *call, ue *upstreamError) {
	r.metrics.Errors.WithLabelValues(c.route.Model, ue.cause).Inc()
	// The details (addresses, Go errors) go to the log, not to the client.
	r.log.Warn("request failed", "request_id", c.req.ID, "client_request_id", c.clientID, "model", c.route.Model,
		"endpoint", ue.endpoint, "reason", ue.reason, "cause", ue.cause, "error", ue.err)
	if ue.status >= 500 && ue.body != nil {
		writeUpstreamError(w, ue.status, ue.header, ue.body)
		r.metrics.Requests.WithLabelValues(c.route.Model, ue.endpoint, strconv.Itoa(ue.status)).Inc()
		return
	}
	var e *openai.Error
	switch {
	case errors.Is(ue.err, errShutdown):
		e = openai.ShuttingDown()
	case ue.cause == observability.CauseUpstreamTimeout:
		e = openai.GatewayTimeout("The model's endpoint did not answer in time.")
	default:
		e = openai.UpstreamUnavailable("The model's endpoints could not be reached or gave no usable answer.")
	}
	r.metrics.Requests.WithLabelValues(c.route.Model, ue.endpoint, strconv.Itoa(e.Status)).Inc()
	e.Write(w)
}

// writeUpstreamError hands an engine's error answer to the client: as is
// when it is OpenAI-shaped ({"error":{"message":...}}), else wrapped into
// that shape with the engine's message and the same status.
func writeUpstreamError(w http.ResponseWriter, status int, header http.Header, body []byte) {
	if e := openai.FromUpstream(status, body); e != nil {
		e.Write(w)
		return
	}
	copyHeaders(w.Header(), header)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// upstreamError describes a failed attempt.
type upstreamError struct {
	endpoint string
	reason   string // retry reason: connect, status, timeout, body
	cause    string // error cause for metrics
	err      error
	status   int
	header   http.Header
	body     []byte
	// final: the request must not be tried elsewhere (the engine may have
	// admitted it, or the router is stopping).
	final bool
}

// timeoutError classifies an attempt the router ended (a timeout or the
// shutdown): whether it may be retried follows router.retryOnTimeout.
func (r *Router) timeoutError(endpoint string, cause error) *upstreamError {
	ue := &upstreamError{endpoint: endpoint, reason: "timeout", cause: observability.CauseUpstreamTimeout, err: cause}
	switch {
	case errors.Is(cause, errShutdown):
		ue.reason, ue.cause, ue.final = "shutdown", observability.CauseShutdown, true
	case errors.Is(cause, errHeaderTimeout):
		// Headers of a stream come at once: the engine is hung.
	default:
		ue.final = !r.cfg.RetryOnTimeout
	}
	return ue
}

// attempt sends the request to d.endpoint and, if the engine answers, relays
// the answer. It returns attemptRetry only when nothing reached the client.
func (r *Router) attempt(ctx context.Context, w http.ResponseWriter, hr *http.Request, c *call, d *pick, attempt int) (attemptResult, *upstreamError) {
	ep := d.endpoint
	md := ep.Metadata()
	body := d.body
	if body == nil {
		body = c.body.WithModel(decision.EngineModel(d.Target, ep))
	}
	if d.pd != nil || !strings.HasPrefix(md.Address, "http://") {
		// Not the h1 client, which writes the body before RoundTrip
		// returns: the body pool must not take the buffer back.
		c.keepBody = true
	}

	base := ctx
	if d.pd != nil && d.pd.upCtx != nil {
		base = d.pd.upCtx // the PD flow cancels a decode whose prefill failed
	}
	spanName := "halyard.upstream"
	if d.pd != nil {
		spanName = "halyard.pd.decode"
	}
	base, span := r.startSpan(base, spanName, trace.SpanKindClient, attrEndpoint.String(md.Name), attrAttempt.Int(attempt), attrPool.String(d.Target.Pool))
	var spanErr error
	var spanStatus int
	if span != nil {
		defer func() { endSpan(span, spanErr, attrStatus.Int(spanStatus)) }()
	}
	actx, cancel := context.WithCancelCause(base)
	defer cancel(nil)
	stopOnShutdown := context.AfterFunc(r.hardStop, func() { cancel(errShutdown) })
	defer stopOnShutdown()
	wd := newWatchdog(cancel)
	defer wd.stop()
	up, err := r.upstream.newRequest(actx, md.Address, hr.URL.Path, body, len(hr.Header)+1)
	if err != nil {
		return attemptRetry, &upstreamError{endpoint: md.Name, reason: "connect", cause: observability.CauseUpstreamConnect, err: err}
	}
	copyHeaders(up.Header, hr.Header)
	if r.authOn || !r.cfg.ForwardAuthorization {
		// The caller's credential stays here: with authentication on it is
		// Halyard's own key, and otherwise it is forwarded only when the
		// operator asks for it (router.forwardAuthorization).
		delete(up.Header, "Authorization")
	}
	up.Header.Set(HeaderRequestID, c.req.ID)
	if span != nil {
		injectTrace(actx, up.Header)
	}
	if up.Header.Get("Content-Type") == "" {
		up.Header.Set("Content-Type", "application/json")
	}

	// The load accounting hooks: sent now, done when the attempt ends.
	dc := r.decisionCall(c)
	r.director.Sent(ctx, dc, &d.Decision)
	out := framework.Outcome{}
	defer func() { r.director.Done(ctx, dc, &d.Decision, out) }()
	// Autoscaling signals (autoscale.go): outstanding prefill until the
	// first token, the outcome against the objectives at the end.
	c.firstByte = time.Time{}
	r.signals.sent(d.Target.Pool, c.req.PromptTokens)
	defer func() { r.signalAttempt(c, d.Target.Pool, md.Name, out) }()
	if d.pd == nil {
		r.prefix.predicted(d.State, md.Name)
	}

	sent := time.Now()
	if d.pd != nil {
		d.pd.sent = sent
	}
	tm := r.cfg.Timeouts
	if c.body.Stream {
		wd.arm(tm.ResponseHeader.Duration, errHeaderTimeout)
	} else {
		wd.arm(tm.FirstByte.Duration, errFirstByteTimeout)
	}
	resp, err := r.upstream.do(up)
	if err != nil {
		out.Err, spanErr = err, err
		if ctx.Err() != nil {
			r.clientGone(c, md.Name)
			return attemptDone, nil
		}
		if cause := routerCause(actx); cause != nil {
			r.observeTimeout(ep, cause)
			return attemptRetry, r.timeoutError(md.Name, cause)
		}
		ue := &upstreamError{endpoint: md.Name, reason: "connect", cause: observability.CauseUpstreamConnect, err: err}
		switch {
		case isDialError(err):
			// Only a failed dial counts against health: an error on a
			// reused keep-alive connection may be a stale connection.
			r.collector.ReportFailure(ep, err)
			r.observeFailure(ep, ejectReasonConnect)
		case isTimeout(err):
			ue.reason, ue.cause = "timeout", observability.CauseUpstreamTimeout
			r.observeFailure(ep, ejectReasonTimeout)
		default:
			r.observeFailure(ep, ejectReasonReset)
		}
		return attemptRetry, ue
	}
	defer resp.Body.Close()
	spanStatus = resp.StatusCode
	c.answered = true
	if resp.StatusCode >= 500 {
		r.observeStatus(ep, resp.StatusCode)
		// Other statuses are observed once the body arrives
		// (relayStream, relayBuffered): headers then a close is a
		// failure, not a success.
		wd.arm(tm.StreamIdle.Duration, errIdleTimeout)
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamErrorBody))
		out.Err = fmt.Errorf("engine status %d", resp.StatusCode)
		return attemptRetry, &upstreamError{endpoint: md.Name, reason: "status", cause: observability.CauseUpstreamStatus,
			err: out.Err, status: resp.StatusCode, header: resp.Header.Clone(), body: b}
	}
	if d.pd != nil && resp.StatusCode == http.StatusBadRequest {
		// A decode engine that refuses the KV transfer parameters is a
		// failed transfer, not the client's error.
		wd.arm(tm.StreamIdle.Duration, errIdleTimeout)
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamErrorBody))
		if param, msg, ok := transferRefusal(b); ok {
			out.Err = fmt.Errorf("decode engine refused %s: %s", param, msg)
			return attemptRetry, &upstreamError{endpoint: md.Name, reason: pdReasonTransfer, cause: pdCauseTransfer,
				err: out.Err, status: resp.StatusCode, header: resp.Header.Clone(), body: b}
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
	}
	r.metrics.AddedLatency.WithLabelValues("request").Observe(sent.Sub(c.start).Seconds())
	if isEventStream(resp.Header) {
		// Until the first chunk the engine queues and prefills: that wait
		// is bounded by firstByte, counted from sending.
		wd.arm(max(tm.FirstByte.Duration-time.Since(sent), time.Millisecond), errFirstByteTimeout)
		return r.relayStream(ctx, actx, w, c, d, resp, wd, &out, attempt)
	}
	wd.arm(tm.StreamIdle.Duration, errIdleTimeout)
	return r.relayBuffered(ctx, actx, w, c, d, resp, wd, &out, attempt)
}

// relayBuffered reads a non-streamed response whole, with at most
// streamIdle of silence, then writes it.
func (r *Router) relayBuffered(ctx, actx context.Context, w http.ResponseWriter, c *call, d *pick, resp *http.Response, wd *watchdog, out *framework.Outcome, attempt int) (attemptResult, *upstreamError) {
	name := d.endpoint.Metadata().Name
	idle := r.cfg.Timeouts.StreamIdle.Duration
	if resp.ContentLength > maxBufferedResponse {
		wd.stop()
		out.Err = fmt.Errorf("the response declares %d bytes, more than %d", resp.ContentLength, maxBufferedResponse)
		return attemptRetry, &upstreamError{endpoint: name, reason: "body", cause: observability.CauseStreamBroken, err: out.Err}
	}
	if resp.ContentLength > 0 && !c.held.grow(resp.ContentLength) {
		wd.stop()
		r.failOverloaded(w, c)
		return attemptDone, nil
	}
	var grow func(int64) bool
	if resp.ContentLength < 0 {
		grow = c.held.grow
	}
	b, err := readGrowing(&idleReader{r: resp.Body, wd: wd, idle: idle}, resp.ContentLength, maxBufferedResponse, grow, nil)
	wd.stop()
	if err == nil && resp.ContentLength < 0 && int64(len(b)) > maxBufferedResponse {
		err = fmt.Errorf("the response is larger than %d bytes", maxBufferedResponse)
	}
	if errors.Is(err, errBudget) {
		r.failOverloaded(w, c)
		return attemptDone, nil
	}
	if err != nil {
		out.Err = err
		if ctx.Err() != nil {
			r.clientGone(c, name)
			return attemptDone, nil
		}
		if cause := routerCause(actx); cause != nil {
			r.observeTimeout(d.endpoint, cause)
			return attemptRetry, r.timeoutError(name, cause)
		}
		r.observeFailure(d.endpoint, ejectReasonTruncated)
		return attemptRetry, &upstreamError{endpoint: name, reason: "body", cause: observability.CauseStreamBroken, err: err}
	}
	r.observeStatus(d.endpoint, resp.StatusCode)
	if u, ok := openai.FindUsage(b); ok {
		r.account(c, out, u)
	}
	firstByte := time.Now()
	if d.pd != nil {
		d.pd.firstByte(firstByte, false)
	}
	h := w.Header()
	if resp.StatusCode >= 400 {
		if e := openai.FromUpstream(resp.StatusCode, b); e != nil {
			b = e.Body()
			h.Set("Content-Type", "application/json")
		} else {
			copyHeaders(h, resp.Header)
		}
	} else {
		copyHeaders(h, resp.Header)
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	r.setResponseHeaders(h, c, d, attempt)
	cw := r.newClientWriter(w)
	cw.arm(firstByte)
	w.WriteHeader(resp.StatusCode)
	if _, werr := w.Write(b); werr != nil {
		r.clientWriteFailed(c, name, werr)
	}
	cw.done()
	end := time.Now()
	r.metrics.TTFT.WithLabelValues(c.route.Model).Observe(firstByte.Sub(c.start).Seconds())
	r.signalFirstToken(c, d.Target.Pool, firstByte)
	c.traceFirstToken(firstByte)
	r.metrics.E2E.WithLabelValues(c.route.Model).Observe(end.Sub(c.start).Seconds())
	if d.pd != nil {
		d.pd.finished(end)
	}
	r.metrics.Requests.WithLabelValues(c.route.Model, name, strconv.Itoa(resp.StatusCode)).Inc()
	return attemptDone, nil
}

// idleReader re-arms the watchdog with the idle timeout after every read
// that brought bytes.
type idleReader struct {
	r    io.Reader
	wd   *watchdog
	idle time.Duration
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.wd.arm(ir.idle, errIdleTimeout)
	}
	return n, err
}

// relayStream forwards an SSE response chunk by chunk, flushing each at
// once. Nothing is written to the client before the first chunk arrives, so
// an engine that fails before it can still be retried. An engine that fails
// after it gets an SSE error event and the stream ends. A stream is
// complete once "data: [DONE]" went to the client, whatever happens after.
func (r *Router) relayStream(ctx, actx context.Context, w http.ResponseWriter, c *call, d *pick, resp *http.Response, wd *watchdog, out *framework.Outcome, attempt int) (attemptResult, *upstreamError) {
	name := d.endpoint.Metadata().Name
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	idle := r.cfg.Timeouts.StreamIdle.Duration

	n, err := readSome(resp.Body, buf)
	if n == 0 {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		out.Err = err
		if ctx.Err() != nil {
			r.clientGone(c, name)
			return attemptDone, nil
		}
		if cause := routerCause(actx); cause != nil {
			r.observeTimeout(d.endpoint, cause)
			return attemptRetry, r.timeoutError(name, cause)
		}
		// Headers, then the connection closed or reset: a gateway failure.
		r.observeFailure(d.endpoint, ejectReasonTruncated)
		return attemptRetry, &upstreamError{endpoint: name, reason: "body", cause: observability.CauseStreamBroken, err: err}
	}
	upFirst := time.Now()
	r.observeStatus(d.endpoint, resp.StatusCode)
	if d.pd != nil {
		d.pd.firstByte(upFirst, true)
	}
	h := w.Header()
	copyHeaders(h, resp.Header)
	r.setResponseHeaders(h, c, d, attempt)
	cw := r.newClientWriter(w)
	defer cw.done()
	cw.arm(upFirst)
	w.WriteHeader(resp.StatusCode)
	rc := cw.rc
	var sc streamScanner
	sc.usage = c.body.IncludeUsage
	defer func() { c.chunks += sc.chunks }()
	accounted := false
	accountUsage := func() {
		if u, ok := sc.result(); ok && !accounted {
			accounted = true
			r.account(c, out, u)
		}
	}
	first := true
	for {
		if n > 0 {
			wd.arm(idle, errIdleTimeout)
			sc.feed(buf[:n])
			cw.arm(time.Now())
			if _, werr := w.Write(buf[:n]); werr != nil {
				return r.streamClientGone(c, name, out, werr, &sc, accountUsage)
			}
			if ferr := rc.Flush(); ferr != nil {
				return r.streamClientGone(c, name, out, ferr, &sc, accountUsage)
			}
			if first {
				first = false
				now := time.Now()
				r.metrics.AddedLatency.WithLabelValues("response").Observe(now.Sub(upFirst).Seconds())
				r.metrics.TTFT.WithLabelValues(c.route.Model).Observe(now.Sub(c.start).Seconds())
				r.signalFirstToken(c, d.Target.Pool, now)
				c.traceFirstToken(now)
				r.director.FirstByte(ctx, r.decisionCall(c), &d.Decision)
				if c.ticket != nil {
					c.ticket.FirstToken() // its prefill is done: the queue may admit more
				}
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if sc.done {
				break // complete: the engine or the client closed after [DONE]
			}
			out.Err = err
			if ctx.Err() != nil {
				accountUsage()
				r.clientGone(c, name)
				return attemptDone, nil
			}
			cause, ev := observability.CauseStreamBroken, openai.BadGateway("the model's endpoint failed in the middle of the stream")
			switch why := routerCause(actx); {
			case errors.Is(why, errShutdown):
				cause, ev = observability.CauseShutdown, openai.ShuttingDown()
			case why != nil:
				cause, ev = observability.CauseUpstreamTimeout, openai.GatewayTimeout("the model's endpoint sent nothing for "+idle.String())
			}
			accountUsage()
			r.metrics.Errors.WithLabelValues(c.route.Model, cause).Inc()
			r.log.Warn("stream broken", "request_id", c.req.ID, "endpoint", name, "error", err, "cause", cause)
			w.Write(ev.SSE())
			_ = rc.Flush()
			r.metrics.Requests.WithLabelValues(c.route.Model, name, "stream_error").Inc()
			return attemptDone, nil
		}
		n, err = readSome(resp.Body, buf)
	}
	wd.stop()
	out.Err = nil
	accountUsage()
	if d.pd != nil {
		d.pd.finished(time.Now())
	}
	r.metrics.E2E.WithLabelValues(c.route.Model).Observe(time.Since(c.start).Seconds())
	r.metrics.Requests.WithLabelValues(c.route.Model, name, strconv.Itoa(resp.StatusCode)).Inc()
	return attemptDone, nil
}

// streamClientGone ends a stream whose client write failed: complete if the
// client had [DONE] already, else a 499. Usage seen so far is counted: the
// engine did that work.
func (r *Router) streamClientGone(c *call, name string, out *framework.Outcome, err error, sc *streamScanner, accountUsage func()) (attemptResult, *upstreamError) {
	accountUsage()
	if sc.done {
		out.Err = nil
		r.metrics.E2E.WithLabelValues(c.route.Model).Observe(time.Since(c.start).Seconds())
		r.metrics.Requests.WithLabelValues(c.route.Model, name, strconv.Itoa(http.StatusOK)).Inc()
		return attemptDone, nil
	}
	out.Err = err
	r.clientWriteFailed(c, name, err)
	return attemptDone, nil
}

// clientWriteFailed counts a write to the client that failed: a client that
// read nothing for limits.writeStall (the engine request is then cancelled
// as the attempt returns), or one that left.
func (r *Router) clientWriteFailed(c *call, name string, err error) {
	if !isTimeout(err) {
		r.clientGone(c, name)
		return
	}
	r.metrics.Errors.WithLabelValues(c.route.Model, observability.CauseClientStalled).Inc()
	r.metrics.Requests.WithLabelValues(c.route.Model, name, "499").Inc()
	r.log.Info("client stalled; request cancelled", "request_id", c.req.ID, "client_request_id", c.clientID, "endpoint", name, "writeStall", r.cfg.Limits.WriteStall.Duration)
}

// failOverloaded answers a request whose engine answer the buffer budget
// cannot hold.
func (r *Router) failOverloaded(w http.ResponseWriter, c *call) {
	r.fail(w, c.route.Model, r.overloaded(w), observability.CauseOverloaded)
}

// observeTimeout feeds an attempt the router timed out (not the shutdown)
// to outlier ejection: a hung engine leaves rotation.
func (r *Router) observeTimeout(ep *datastore.Endpoint, cause error) {
	if !errors.Is(cause, errShutdown) {
		r.observeFailure(ep, ejectReasonTimeout)
	}
}

// clientWriter bounds writes to a client (limits.writeStall): a write
// deadline, moved on as writes succeed. It re-arms only when half the
// stall time has passed since it last did, so a fast stream pays one
// deadline change per writeStall/2, and a stall is seen within writeStall.
type clientWriter struct {
	rc      *http.ResponseController
	stall   time.Duration
	armedAt time.Time
	armed   bool
}

func (r *Router) newClientWriter(w http.ResponseWriter) *clientWriter {
	return &clientWriter{rc: http.NewResponseController(w), stall: r.cfg.Limits.WriteStall.Duration}
}

func (cw *clientWriter) arm(now time.Time) {
	if cw.stall <= 0 || (cw.armed && now.Sub(cw.armedAt) < cw.stall/2) {
		return
	}
	if cw.rc.SetWriteDeadline(now.Add(cw.stall)) == nil {
		cw.armedAt, cw.armed = now, true
	}
}

// done clears the deadline for the connection's next request.
func (cw *clientWriter) done() {
	if cw.armed {
		_ = cw.rc.SetWriteDeadline(time.Time{})
	}
}

// readSome reads at least one byte unless the body ends or fails.
func readSome(body io.Reader, buf []byte) (int, error) {
	for {
		n, err := body.Read(buf)
		if n > 0 || err != nil {
			return n, err
		}
	}
}

func (r *Router) account(c *call, out *framework.Outcome, u openai.Usage) {
	out.PromptTokens, out.CompletionTokens, out.CachedTokens = u.PromptTokens, u.CompletionTokens, u.CachedTokens()
	c.usage = admission.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, CachedTokens: u.CachedTokens(), Known: true}
	m := c.route.Model
	r.metrics.Tokens.WithLabelValues(m, "prompt").Add(float64(u.PromptTokens))
	r.metrics.Tokens.WithLabelValues(m, "completion").Add(float64(u.CompletionTokens))
	if c.span != nil {
		c.span.SetAttributes(attrInput.Int(u.PromptTokens), attrOutput.Int(u.CompletionTokens))
	}
	if ct := u.CachedTokens(); ct > 0 {
		r.metrics.Tokens.WithLabelValues(m, "cached").Add(float64(ct))
	}
}

func (r *Router) clientGone(c *call, endpoint string) {
	r.metrics.Errors.WithLabelValues(c.route.Model, observability.CauseClientGone).Inc()
	r.metrics.Requests.WithLabelValues(c.route.Model, endpoint, "499").Inc()
}

// copyHeaders copies src's end-to-end headers into dst. dst shares src's
// value slices: both are only read or replaced whole (Set) afterwards,
// never appended to, and a copy per header showed in the proxy's profile.
//
// Headers that src's Connection header names are hop-by-hop too and are not
// copied (RFC 9110 §7.6.1).
func copyHeaders(dst, src http.Header) {
	named := src["Connection"]
	for k, vs := range src {
		if hopHeaders[k] || (len(named) > 0 && connectionNames(named, k)) {
			continue
		}
		dst[k] = vs
	}
}

// connectionNames reports whether the Connection header values name the
// canonical header k.
func connectionNames(values []string, k string) bool {
	for _, v := range values {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(textproto.TrimString(tok), k) {
				return true
			}
		}
	}
	return false
}

func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	return len(ct) >= 17 && ct[:17] == "text/event-stream"
}

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// streamScanner watches SSE bytes go by: it notes the end of the stream
// ("data: [DONE]") and, when asked, keeps the last usage object seen in a
// data line. It copies only the current line, and without usage only as
// much of it as the end marker needs.
type streamScanner struct {
	usage bool // look for usage objects
	line  []byte
	u     openai.Usage
	found bool
	done  bool // "data: [DONE]" was seen
	// chunks counts data events before [DONE]: about one token each, what
	// a stream that reported no usage is charged.
	chunks int
}

var (
	dataPrefix = []byte("data:")
	doneMarker = []byte("[DONE]")
)

// doneLineMax is the longest line that can still be "data: [DONE]" (with
// spaces and a carriage return around).
const doneLineMax = 32

func (s *streamScanner) feed(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			keep := maxUpstreamErrorBody * 16
			if !s.usage {
				keep = doneLineMax
			}
			if len(s.line) < keep {
				s.line = append(s.line, b[:min(len(b), keep-len(s.line))]...)
			}
			return
		}
		line := b[:i]
		if len(s.line) > 0 {
			s.line = append(s.line, line...)
			line = s.line
		}
		s.scanLine(line)
		s.line = s.line[:0]
		b = b[i+1:]
	}
}

func (s *streamScanner) scanLine(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if !bytes.HasPrefix(line, dataPrefix) {
		return
	}
	payload := bytes.TrimLeft(line[len(dataPrefix):], " ")
	if bytes.Equal(bytes.TrimRight(payload, " "), doneMarker) {
		s.done = true
		return
	}
	s.chunks++
	if !s.usage {
		return
	}
	if u, ok := openai.FindUsage(payload); ok {
		s.u, s.found = u, true
	}
}

func (s *streamScanner) result() (openai.Usage, bool) { return s.u, s.found }
