package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/prometheus/client_golang/prometheus"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/observability"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/pd"
)

// Reasons and causes of the PD flow, as metric label values.
const (
	// pdReasonTransfer: a decode engine refused the transfer parameters
	// (its 400 names kv_transfer_params or bootstrap_room).
	pdReasonTransfer = "transfer_refused"
	// pdReasonBadResponse: a prefill answer without usable
	// kv_transfer_params.
	pdReasonBadResponse = "bad_response"
	// pdReasonRejected: a prefill engine refused the prefill request with a
	// 4xx about kv_transfer_params (not a KV producer).
	pdReasonRejected = "rejected"
	// pdReasonNoPrefill: no prefill endpoint was available.
	pdReasonNoPrefill = "no_prefill_endpoint"
	// pdReasonPrefillFailed: every prefill attempt failed.
	pdReasonPrefillFailed = "prefill_failed"

	pdCausePrefill  = "pd_prefill_failed"
	pdCauseTransfer = "pd_transfer_failed"

	// Error codes of the PD flow's own errors.
	codePrefillFailed  = "prefill_failed"
	codeTransferFailed = "kv_transfer_failed"
)

// pdMetrics are the halyard_router_pd_* metrics (docs/router.md, docs/pd.md).
type pdMetrics struct {
	pairs          *prometheus.CounterVec
	decodeFirst    *prometheus.CounterVec
	prefillRetries *prometheus.CounterVec
	prefillErrors  *prometheus.CounterVec
	fallbacks      *prometheus.CounterVec
	prefill        *prometheus.HistogramVec
	transfer       *prometheus.HistogramVec
	decode         *prometheus.HistogramVec
}

var pdBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300}

// collectors lists the metrics, for tests that check the documentation.
func (m *pdMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.pairs, m.decodeFirst, m.prefillRetries, m.prefillErrors, m.fallbacks, m.prefill, m.transfer, m.decode}
}

func newPDMetrics(reg prometheus.Registerer) *pdMetrics {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		reg.MustRegister(c)
		return c
	}
	hv := func(name, help string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: pdBuckets}, []string{"model"})
		reg.MustRegister(h)
		return h
	}
	return &pdMetrics{
		pairs: cv("halyard_router_pd_pairs_total",
			"(prefill, decode) pairs picked, one per prefill attempt; topology is same, cross or none.", "model", "mode", "topology"),
		decodeFirst: cv("halyard_router_pd_decode_first_total",
			"Requests served by the decode endpoint without a remote prefill, by reason (prefix_held, short_prompt).", "model", "reason"),
		prefillRetries: cv("halyard_router_pd_prefill_retries_total",
			"Prefills retried on another prefill endpoint, by the failure's reason.", "model", "reason"),
		prefillErrors: cv("halyard_router_pd_prefill_errors_total",
			"Failed prefill attempts by endpoint and reason (connect, status, timeout, bad_response, rejected, transfer_refused).", "model", "endpoint", "reason"),
		fallbacks: cv("halyard_router_pd_local_prefill_fallbacks_total",
			"Requests sent to the decode endpoint without remote KV because no prefill succeeded (pd.fallbackToLocalPrefill).", "model", "reason"),
		prefill: hv("halyard_router_pd_prefill_seconds",
			"Successful prefill requests: sent to answered (nixl: the answer with kv_transfer_params; sglang: the prefill endpoint's whole answer)."),
		transfer: hv("halyard_router_pd_transfer_seconds",
			"Streamed decode requests: sent to the decode endpoint's first byte (the KV pull or bootstrap wait, the transfer, the first step)."),
		decode: hv("halyard_router_pd_decode_seconds",
			"Decode requests: first byte to last (streamed), or sent to answered (not streamed)."),
	}
}

// pdAttempt is the state of one decode request of the PD flow; attempt()
// calls its hooks.
type pdAttempt struct {
	r     *Router
	c     *call
	pool  *decision.PDPool
	plan  *pd.Plan
	upCtx context.Context // cancelled when the room's prefill fails (sglang)

	sent     time.Time
	first    time.Time
	streamed bool
	started  atomic.Bool

	// What the explanation says.
	mode     string
	prefill  string // the prefill endpoint, "" when none
	skip     string // the decode-first decision, when it skipped the prefill
	fallback string // the local-prefill fallback, when taken
	attempts int    // prefill attempts so far
}

func (a *pdAttempt) firstByte(t time.Time, streamed bool) {
	a.started.Store(true)
	a.first, a.streamed = t, streamed
	if streamed {
		a.r.pdm.transfer.WithLabelValues(a.c.route.Model).Observe(t.Sub(a.sent).Seconds())
	}
}

func (a *pdAttempt) finished(t time.Time) {
	from := a.sent
	if a.streamed {
		from = a.first
	}
	a.r.pdm.decode.WithLabelValues(a.c.route.Model).Observe(t.Sub(from).Seconds())
}

// pdFailure is a failed prefill (or KV transfer) attempt.
type pdFailure struct {
	endpoint string
	reason   string // connect, status, timeout, bad_response, rejected, transfer_refused
	err      error
	// passThrough is a prefill engine's 4xx about the request itself,
	// handed to the client as the decode engine would have answered it.
	passThrough *http.Response
	body        []byte
}

// forwardPD serves the request if the first target that can serve it is a
// disaggregated pool, and reports whether it did.
func (r *Router) forwardPD(w http.ResponseWriter, hr *http.Request, c *call, targets []decision.Target) bool {
	ch, ok := r.director.ChoosePD(hr.Context(), r.decisionCall(c), targets)
	if !ok {
		return false
	}
	r.servePD(w, hr, c, ch)
	return true
}

// servePD runs the PD flow: plan the pair, prefill (unless decode-first),
// decode with the transfer parameters, retry prefill and decode failures
// within their bounds, and fall back to a local prefill only when
// configured.
func (r *Router) servePD(w http.ResponseWriter, hr *http.Request, c *call, ch *decision.PDChoice) {
	c.keepBody = true // the prefill may outlive the handler
	ctx := hr.Context()
	model := c.route.Model
	pp, t, fallback, prefill, decode := ch.Pool, ch.Target, ch.Fallback, ch.Prefill, ch.Decode
	dc := r.decisionCall(c)
	plan, err := r.director.Plan(ctx, dc, ch)
	if err != nil {
		r.fail(w, model, openai.Unavailable(fmt.Sprintf("no decode endpoint is available for model %q: %v", model, err)), observability.CauseNoEndpoint)
		return
	}
	if un := r.director.PDUnmeetable(dc, plan); un != nil {
		// Admission takes it back before either request is sent, as
		// forward does for a co-located pool.
		r.shedUnmeetable(w, c, un)
		return
	}
	r.metrics.RouteTargets.WithLabelValues(model, t.Pool, strconv.FormatBool(fallback)).Inc()
	mode := pp.Spec.Mode
	local := plan.Skip != ""
	skip, fallbackNote := "", ""
	if local {
		r.pdm.decodeFirst.WithLabelValues(model, plan.Skip).Inc()
		skip = fmt.Sprintf("skip(%s held=%.2f)", plan.Skip, plan.HeldShare())
		r.log.Debug("decode-first: remote prefill skipped", "request_id", c.req.ID, "decode", plan.Decode.Metadata().Name,
			"reason", plan.Skip, "held_blocks", plan.HeldBlocks, "prompt_blocks", plan.PromptBlocks)
	} else if plan.Prefill == nil {
		if !pp.Spec.FallbackToLocalPrefill {
			r.fail(w, model, openai.Unavailable(fmt.Sprintf("no prefill endpoint is available for model %q: %v", model, plan.PrefillErr)), observability.CauseNoEndpoint)
			return
		}
		r.pdm.fallbacks.WithLabelValues(model, pdReasonNoPrefill).Inc()
		r.log.Warn("no prefill endpoint; prefilling on the decode endpoint", "request_id", c.req.ID, "decode", plan.Decode.Metadata().Name)
		local, fallbackNote = true, pdReasonNoPrefill
	}

	var (
		params        json.RawMessage // nixl: the prefill's answer, kept across decode retries
		failures      []*pdFailure
		prefillFails  int
		decodeFails   int
		triedDecode   = []framework.Endpoint{plan.Decode}
		lastDecodeErr *upstreamError
		attempts      int
	)
	maxDecode := max(r.cfg.MaxAttempts, 1)
	// prefillFailed records a failed prefill and moves to the next prefill
	// endpoint; it reports false when none is left.
	prefillFailed := func(f *pdFailure) bool {
		prefillFails++
		failures = append(failures, f)
		r.pdm.prefillErrors.WithLabelValues(model, f.endpoint, f.reason).Inc()
		if prefillFails < pp.Spec.MaxPrefillAttempts && pp.Planner().NextPrefill(ctx, c.req, plan, prefill, c.explain) == nil {
			r.pdm.prefillRetries.WithLabelValues(model, f.reason).Inc()
			r.log.Info("prefill failed; retrying on another prefill endpoint", "request_id", c.req.ID, "endpoint", f.endpoint,
				"reason", f.reason, "error", f.err, "next", plan.Prefill.Metadata().Name)
			return true
		}
		r.log.Warn("prefill failed", "request_id", c.req.ID, "endpoint", f.endpoint, "reason", f.reason, "error", f.err, "attempts", prefillFails)
		return false
	}
	for {
		if ctx.Err() != nil {
			r.clientGone(c, "")
			return
		}
		dep, ok := plan.Decode.(*datastore.Endpoint)
		if !ok {
			r.fail(w, model, openai.BadGateway("internal error: foreign decode endpoint"), pdCausePrefill)
			return
		}
		a := &pdAttempt{r: r, c: c, pool: pp, plan: plan, mode: mode, skip: skip, fallback: fallbackNote, attempts: attempts}
		d := pick{Decision: r.director.Decode(ch, plan), endpoint: dep, pd: a}
		d.Fallback = fallback
		base := c.body.WithModel(decision.EngineModel(t, dep))
		var prefillDone <-chan *pdFailure
		var stopPrefill context.CancelFunc
		switch {
		case local:
			d.body = base
		case mode == config.PDModeNixl:
			if params == nil {
				attempts++
				a.attempts = attempts
				r.pdm.pairs.WithLabelValues(model, mode, plan.Topology).Inc()
				r.metrics.Picks.WithLabelValues(pp.Spec.PrefillProfile, plan.Prefill.Metadata().Name).Inc()
				var f *pdFailure
				params, f = r.nixlPrefill(ctx, hr, c, pp, plan, t)
				if f != nil {
					if ctx.Err() != nil {
						r.clientGone(c, f.endpoint)
						return
					}
					if f.passThrough != nil {
						r.passPrefillError(w, c, f)
						return
					}
					if prefillFailed(f) {
						continue
					}
					if !pp.Spec.FallbackToLocalPrefill {
						r.failPD(w, c, failures)
						return
					}
					r.pdm.fallbacks.WithLabelValues(model, pdReasonPrefillFailed).Inc()
					local, fallbackNote = true, pdReasonPrefillFailed
					continue
				}
			}
			a.prefill = plan.Prefill.Metadata().Name
			body, err := openai.Patch{Set: []openai.Member{{Key: "kv_transfer_params", Value: params}}}.Apply(base)
			if err != nil {
				r.fail(w, model, openai.BadGateway("Cannot add kv_transfer_params to the request."), pdCauseTransfer)
				return
			}
			d.body = body
		default: // sglang
			attempts++
			a.attempts = attempts
			r.pdm.pairs.WithLabelValues(model, mode, plan.Topology).Inc()
			r.metrics.Picks.WithLabelValues(pp.Spec.PrefillProfile, plan.Prefill.Metadata().Name).Inc()
			a.prefill = plan.Prefill.Metadata().Name
			body, err := sglangBody(base, plan.Prefill, pp.Spec.BootstrapPort)
			if err != nil {
				f := &pdFailure{endpoint: a.prefill, reason: pdReasonRejected, err: err}
				if prefillFailed(f) {
					continue
				}
				r.failPD(w, c, failures)
				return
			}
			d.body = body
			upCtx, cancelDecode := context.WithCancel(ctx)
			a.upCtx = upCtx
			prefillDone, stopPrefill = r.sglangPrefill(ctx, hr, c, pp, plan, t, body, a, cancelDecode)
			defer cancelDecode() // (at most MaxPrefillAttempts+MaxAttempts of them)
		}
		r.metrics.Picks.WithLabelValues(pp.Spec.DecodeProfile, dep.Metadata().Name).Inc()
		res, uerr := r.attempt(ctx, w, hr, c, &d, 1+prefillFails+decodeFails)
		if res == attemptDone {
			if ctx.Err() != nil && stopPrefill != nil {
				stopPrefill() // the client left: cancel the room's prefill too
			}
			return
		}
		var pf *pdFailure
		if prefillDone != nil {
			// The decode failed: the room's prefill is of no use any more.
			// A failure of the prefill before this cancellation is its own.
			select {
			case pf = <-prefillDone:
			default:
				stopPrefill()
				if pf = <-prefillDone; pf != nil && isCanceled(pf.err) {
					pf = nil
				}
			}
			if pf != nil && uerr.reason != pdReasonTransfer && isCanceled(uerr.err) {
				uerr.reason = pdReasonTransfer // cancelled because its prefill failed
			}
		}
		switch {
		case ctx.Err() != nil:
			r.clientGone(c, dep.Metadata().Name)
			return
		case pf != nil || uerr.reason == pdReasonTransfer:
			// The prefill or the KV transfer failed: prefill again.
			if pf == nil {
				pf = &pdFailure{endpoint: a.prefill, reason: pdReasonTransfer, err: uerr.err, body: uerr.body}
			}
			params = nil
			if prefillFailed(pf) {
				continue
			}
			if !pp.Spec.FallbackToLocalPrefill {
				r.failPD(w, c, failures)
				return
			}
			r.pdm.fallbacks.WithLabelValues(model, pdReasonPrefillFailed).Inc()
			local, fallbackNote = true, pdReasonPrefillFailed
		default:
			// The decode endpoint failed before any byte reached the client.
			decodeFails++
			lastDecodeErr = uerr
			if uerr.reason != "connect" {
				params = nil // it may have pulled the KV before failing
			}
			if decodeFails >= maxDecode || uerr.final {
				r.failDecode(w, c, lastDecodeErr)
				return
			}
			if err := pp.Planner().NextDecode(ctx, c.req, plan, decode, triedDecode, c.explain); err != nil {
				r.failDecode(w, c, lastDecodeErr)
				return
			}
			triedDecode = append(triedDecode, plan.Decode)
			r.metrics.Retries.WithLabelValues(model, uerr.reason).Inc()
			r.log.Info("decode endpoint failed; retrying on another", "request_id", c.req.ID, "endpoint", uerr.endpoint,
				"reason", uerr.reason, "error", uerr.err, "next", plan.Decode.Metadata().Name)
		}
	}
}

// nixlPrefill sends the NixlConnector prefill request and returns the
// answer's kv_transfer_params, unchanged.
func (r *Router) nixlPrefill(ctx context.Context, hr *http.Request, c *call, pp *decision.PDPool, plan *pd.Plan, t decision.Target) (json.RawMessage, *pdFailure) {
	ep, _ := plan.Prefill.(*datastore.Endpoint)
	if ep == nil {
		return nil, &pdFailure{reason: pdReasonRejected, err: errors.New("foreign prefill endpoint")}
	}
	name := ep.Metadata().Name
	set := []openai.Member{
		{Key: "stream", Value: json.RawMessage(`false`)},
		{Key: "max_tokens", Value: json.RawMessage(`1`)},
		{Key: "kv_transfer_params", Value: json.RawMessage(`{"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}`)},
	}
	if c.kind == openai.KindChat || bytes.Contains(c.body.Raw, []byte(`"max_completion_tokens"`)) {
		set = append(set, openai.Member{Key: "max_completion_tokens", Value: json.RawMessage(`1`)})
	}
	body, err := openai.Patch{Set: set, Delete: []string{"stream_options"}}.Apply(c.body.WithModel(decision.EngineModel(t, ep)))
	if err != nil {
		return nil, &pdFailure{endpoint: name, reason: pdReasonRejected, err: err}
	}
	pctx, cancel := context.WithTimeout(ctx, pp.Spec.PrefillTimeout.Duration)
	defer cancel()
	start := time.Now()
	up, err := r.prefillRequest(pctx, hr, c, ep, body)
	if err != nil {
		return nil, &pdFailure{endpoint: name, reason: "connect", err: err}
	}
	resp, f := r.sendPrefill(pctx, up, c, r.decisionCall(c), pp, plan, ep)
	if f != nil {
		return nil, f
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBufferedResponse))
	if err != nil {
		return nil, prefillError(pctx, name, err)
	}
	kv, found, err := openai.TopLevel(b, "kv_transfer_params")
	switch {
	case err != nil:
		return nil, &pdFailure{endpoint: name, reason: pdReasonBadResponse, err: fmt.Errorf("the prefill answer is not a JSON object: %w", err)}
	case !found || string(kv) == "null":
		return nil, &pdFailure{endpoint: name, reason: pdReasonBadResponse,
			err: errors.New("the prefill answer has no kv_transfer_params (is the engine running with a KV connector as a producer?)")}
	}
	var check struct {
		DoRemotePrefill *bool `json:"do_remote_prefill"`
	}
	if err := json.Unmarshal(kv, &check); err != nil || check.DoRemotePrefill == nil || !*check.DoRemotePrefill {
		return nil, &pdFailure{endpoint: name, reason: pdReasonBadResponse,
			err: fmt.Errorf("the prefill answer's kv_transfer_params do not ask the decode side for a remote prefill: %.200s", kv)}
	}
	r.pdm.prefill.WithLabelValues(c.route.Model).Observe(time.Since(start).Seconds())
	return append(json.RawMessage(nil), kv...), nil
}

// prefillRequest builds a prefill request with the client's headers.
func (r *Router) prefillRequest(pctx context.Context, hr *http.Request, c *call, ep *datastore.Endpoint, body []byte) (*http.Request, error) {
	up, err := r.upstream.newRequest(pctx, ep.Metadata().Address, hr.URL.Path, body, len(hr.Header)+1)
	if err != nil {
		return nil, err
	}
	copyHeaders(up.Header, hr.Header)
	up.Header.Set(HeaderRequestID, c.req.ID)
	up.Header.Set("Content-Type", "application/json")
	return up, nil
}

// sendPrefill sends a prefill request and returns a 2xx response, or the
// failure. The caller closes the body.
// dc is taken by the caller before any goroutine starts: SGLang's prefill
// runs beside the decode, and decisionCall writes to the shared call.
func (r *Router) sendPrefill(pctx context.Context, up *http.Request, c *call, dc *decision.Call, pp *decision.PDPool, plan *pd.Plan, ep *datastore.Endpoint) (*http.Response, *pdFailure) {
	md := ep.Metadata()
	sctx, span := r.startSpan(pctx, "halyard.pd.prefill", trace.SpanKindClient, attrEndpoint.String(md.Name), attrModel.String(c.route.Model))
	if span != nil {
		injectTrace(sctx, up.Header)
	}
	r.director.PrefillSent(pctx, dc, pp, plan)
	resp, err := r.upstream.do(up)
	if span != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		endSpan(span, err, attrStatus.Int(status))
	}
	out := framework.Outcome{Err: err}
	if err != nil {
		r.director.PrefillDone(pctx, dc, pp, ep, out)
		if isDialError(err) {
			r.collector.ReportFailure(ep, err)
		}
		return nil, prefillError(pctx, md.Name, err)
	}
	r.observeStatus(ep, resp.StatusCode)
	// End the accounting when the body is closed.
	resp.Body = &endOnClose{ReadCloser: resp.Body, end: func() {
		r.director.PrefillDone(context.WithoutCancel(pctx), dc, pp, ep, out)
	}}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamErrorBody))
	resp.Body.Close()
	f := &pdFailure{endpoint: md.Name, reason: "status", err: fmt.Errorf("prefill engine status %d: %.300s", resp.StatusCode, b), body: b}
	if resp.StatusCode/100 == 4 {
		if _, _, ok := transferRefusal(b); ok {
			f.reason = pdReasonRejected
		} else {
			resp.Body = io.NopCloser(bytes.NewReader(b))
			f.passThrough = resp
		}
	}
	return nil, f
}

type endOnClose struct {
	io.ReadCloser
	end  func()
	done atomic.Bool
}

func (e *endOnClose) Close() error {
	err := e.ReadCloser.Close()
	if e.done.CompareAndSwap(false, true) {
		e.end()
	}
	return err
}

func prefillError(pctx context.Context, endpoint string, err error) *pdFailure {
	f := &pdFailure{endpoint: endpoint, reason: "connect", err: err}
	if errors.Is(pctx.Err(), context.DeadlineExceeded) || isTimeout(err) {
		f.reason = "timeout"
	}
	return f
}

// sglangBody adds SGLang's bootstrap fields for prefill endpoint p to body.
func sglangBody(body []byte, p framework.Endpoint, defaultPort int) ([]byte, error) {
	u, err := url.Parse(p.Metadata().Address)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("prefill endpoint %s: no host in %q", p.Metadata().Name, p.Metadata().Address)
	}
	port := defaultPort
	if v, ok := p.Metadata().Labels[config.LabelBootstrapPort]; ok {
		if port, err = config.ParsePort(v); err != nil {
			return nil, fmt.Errorf("prefill endpoint %s: label %s: %w", p.Metadata().Name, config.LabelBootstrapPort, err)
		}
	}
	host, _ := json.Marshal(u.Hostname())
	room := rand.Uint64() >> 1 // 0 .. 2^63-1
	return openai.Patch{Set: []openai.Member{
		{Key: "bootstrap_host", Value: host},
		{Key: "bootstrap_port", Value: json.RawMessage(strconv.Itoa(port))},
		{Key: "bootstrap_room", Value: json.RawMessage(strconv.FormatUint(room, 10))},
	}}.Apply(body)
}

// sglangPrefill sends the room's prefill request alongside the decode
// request. The result arrives on the channel (nil on success); a failure
// before the decode endpoint answered cancels the decode request. stop
// cancels the prefill.
func (r *Router) sglangPrefill(ctx context.Context, hr *http.Request, c *call, pp *decision.PDPool, plan *pd.Plan, t decision.Target, body []byte,
	a *pdAttempt, cancelDecode context.CancelFunc) (<-chan *pdFailure, context.CancelFunc) {
	ch := make(chan *pdFailure, 1)
	ep, _ := plan.Prefill.(*datastore.Endpoint)
	if ep == nil {
		ch <- &pdFailure{reason: pdReasonRejected, err: errors.New("foreign prefill endpoint")}
		return ch, func() {}
	}
	if m := decision.EngineModel(t, ep); m != c.body.Model {
		// Both ends get the same body, but each its own model name.
		var err error
		if body, err = (openai.Patch{Set: []openai.Member{{Key: "model", Value: mustJSON(m)}}}).Apply(body); err != nil {
			ch <- &pdFailure{endpoint: ep.Metadata().Name, reason: pdReasonRejected, err: err}
			return ch, func() {}
		}
	}
	// The prefill outlives the handler when the decode finishes first;
	// it is bounded by the prefill timeout and stopped if the client leaves.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pp.Spec.PrefillTimeout.Duration)
	up, err := r.prefillRequest(pctx, hr, c, ep, body)
	if err != nil {
		cancel()
		ch <- &pdFailure{endpoint: ep.Metadata().Name, reason: "connect", err: err}
		return ch, func() {}
	}
	dc := r.decisionCall(c)
	go func() {
		defer cancel()
		start := time.Now()
		resp, f := r.sendPrefill(pctx, up, c, dc, pp, plan, ep)
		if f == nil {
			_, err := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBufferedResponse))
			resp.Body.Close()
			if err != nil {
				f = prefillError(pctx, ep.Metadata().Name, err)
			} else {
				r.pdm.prefill.WithLabelValues(c.route.Model).Observe(time.Since(start).Seconds())
			}
		}
		if f != nil && !a.started.Load() {
			cancelDecode()
		}
		ch <- f
	}()
	return ch, cancel
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

func isCanceled(err error) bool { return errors.Is(err, context.Canceled) }

// transferRefusal reports whether an engine's 400 body refuses KV transfer
// parameters (vLLM-shaped error naming kv_transfer_params or
// bootstrap_room), and returns the param and message.
func transferRefusal(b []byte) (param, msg string, ok bool) {
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Param   *string `json:"param"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Param == nil {
		return "", "", false
	}
	switch *e.Error.Param {
	case "kv_transfer_params", "bootstrap_room", "bootstrap_host", "bootstrap_port":
		return *e.Error.Param, e.Error.Message, true
	}
	return "", "", false
}

// passPrefillError hands a prefill engine's own 4xx (a request the decode
// engine would refuse too) to the client.
func (r *Router) passPrefillError(w http.ResponseWriter, c *call, f *pdFailure) {
	resp := f.passThrough
	copyHeaders(w.Header(), resp.Header)
	w.Header().Set("Content-Length", strconv.Itoa(len(f.body)))
	w.WriteHeader(resp.StatusCode)
	w.Write(f.body)
	r.metrics.Requests.WithLabelValues(c.route.Model, f.endpoint, strconv.Itoa(resp.StatusCode)).Inc()
}

// failPD answers a request whose prefill attempts all failed.
func (r *Router) failPD(w http.ResponseWriter, c *call, failures []*pdFailure) {
	var parts []string
	timeout, transfer := true, false
	for i, f := range failures {
		// The client learns what went wrong, not where: endpoint names
		// (pod names on Kubernetes) and dial errors (addresses) are in the
		// router's log line for each failure.
		detail := f.reason
		if f.err != nil && f.reason != "connect" && f.reason != "timeout" {
			detail += " (" + f.err.Error() + ")"
		}
		parts = append(parts, fmt.Sprintf("attempt %d: %s", i+1, detail))
		timeout = timeout && f.reason == "timeout"
		transfer = transfer || f.reason == pdReasonTransfer
	}
	e := &openai.Error{Status: http.StatusBadGateway, Type: openai.TypeServer, Code: codePrefillFailed,
		Message: fmt.Sprintf("the prefill failed on every prefill endpoint tried: %s", strings.Join(parts, "; "))}
	cause := pdCausePrefill
	switch {
	case len(failures) > 0 && timeout:
		e.Status, e.Code = http.StatusGatewayTimeout, openai.CodeUpstreamTimeout
		e.Message = "the prefill endpoints did not answer in time: " + strings.Join(parts, "; ")
	case transfer:
		e.Code, cause = codeTransferFailed, pdCauseTransfer
		e.Message = "the KV transfer from prefill to decode failed: " + strings.Join(parts, "; ")
	}
	r.fail(w, c.route.Model, e, cause)
}

// failDecode answers a request whose decode attempts all failed, as the
// single-engine path does.
func (r *Router) failDecode(w http.ResponseWriter, c *call, ue *upstreamError) {
	r.failUpstream(w, c, ue)
}
