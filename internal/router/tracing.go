package router

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/halyard-dev/halyard/internal/datastore"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// TracerName is the instrumentation scope of the router's spans.
const TracerName = "github.com/halyard-dev/halyard/internal/router"

// Span attribute keys (docs/observability.md).
const (
	attrModel      = attribute.Key("halyard.model")
	attrRequestID  = attribute.Key("halyard.request_id")
	attrProfile    = attribute.Key("halyard.profile")
	attrPool       = attribute.Key("halyard.pool")
	attrEndpoint   = attribute.Key("halyard.endpoint")
	attrAttempt    = attribute.Key("halyard.attempt")
	attrScore      = attribute.Key("halyard.score")
	attrPredicted  = attribute.Key("halyard.prefix.predicted_hit")
	attrCandidates = attribute.Key("halyard.candidates")
	attrTTFT       = attribute.Key("halyard.ttft_ms")
	attrOutput     = attribute.Key("gen_ai.usage.output_tokens")
	attrInput      = attribute.Key("gen_ai.usage.input_tokens")
	attrStatus     = attribute.Key("http.response.status_code")
	// Admission's span (admission.go).
	attrTenant          = attribute.Key("halyard.tenant")
	attrAdmission       = attribute.Key("halyard.admission.decision")
	attrAdmissionReason = attribute.Key("halyard.admission.reason")
	attrQueueWait       = attribute.Key("halyard.admission.queue_wait_ms")
)

// traceContext is the W3C trace context propagator (traceparent,
// tracestate).
var traceContext = propagation.TraceContext{}

// startRequestSpan continues the request's traceparent, or starts a trace,
// with the span of the whole request. Without a tracer it returns hr and a
// nil span, and costs nothing else.
func (r *Router) startRequestSpan(hr *http.Request) (*http.Request, trace.Span) {
	if r.tracer == nil {
		return hr, nil
	}
	ctx := traceContext.Extract(hr.Context(), propagation.HeaderCarrier(hr.Header))
	ctx, span := r.tracer.Start(ctx, requestSpanName(hr.URL.Path), requestSpanKind)
	if span.IsRecording() { // attributes only for sampled requests
		span.SetAttributes(attribute.String("http.request.method", hr.Method), attribute.String("url.path", hr.URL.Path))
	}
	return hr.WithContext(ctx), span
}

var requestSpanKind = trace.WithSpanKind(trace.SpanKindServer)

// requestSpanName names the request span without allocating for the
// inference paths.
func requestSpanName(path string) string {
	switch path {
	case "/v1/chat/completions":
		return "halyard.request /v1/chat/completions"
	case "/v1/completions":
		return "halyard.request /v1/completions"
	}
	return "halyard.request " + path
}

// startSpan starts a child span of ctx's when tracing is on and ctx's
// span records; otherwise it returns ctx and nil.
func (r *Router) startSpan(ctx context.Context, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if r.tracer == nil || !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil
	}
	return r.tracer.Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// injectTrace writes ctx's traceparent into an upstream request's header,
// so that the engine's spans join the trace.
func injectTrace(ctx context.Context, h http.Header) {
	if trace.SpanFromContext(ctx).SpanContext().IsValid() {
		traceContext.Inject(ctx, propagation.HeaderCarrier(h))
	}
}

// endSpan sets status and ends span; a nil span is ignored.
func endSpan(span trace.Span, err error, attrs ...attribute.KeyValue) {
	if span == nil {
		return
	}
	span.SetAttributes(attrs...)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// endScheduleSpan records a scheduling cycle's outcome: the picked
// endpoint, its total score and scorers' scores (from the explanation),
// and the predicted prefix hit.
func endScheduleSpan(span trace.Span, ep *datastore.Endpoint, x *framework.Explanation, prefix float64, hasPrefix bool) {
	if span == nil {
		return
	}
	if x != nil {
		span.SetAttributes(attrCandidates.Int(len(x.Endpoints)))
	}
	if ep != nil {
		name := ep.Metadata().Name
		span.SetAttributes(attrEndpoint.String(name))
		if x != nil {
			for _, e := range x.Endpoints {
				if e.Name != name {
					continue
				}
				span.SetAttributes(attrScore.Float64(e.Total))
				for scorer, v := range e.Scores {
					span.SetAttributes(attribute.Float64("halyard.score."+scorer, v))
				}
			}
		}
	} else {
		span.SetStatus(codes.Error, "no endpoint picked")
	}
	if hasPrefix {
		span.SetAttributes(attrPredicted.Float64(prefix))
	}
	span.End()
}

// traceFirstToken records the time to first token, and on the request
// span.
func (c *call) traceFirstToken(t time.Time) {
	c.firstToken = t
	if c.span != nil {
		c.span.SetAttributes(attrTTFT.Float64(float64(t.Sub(c.start).Microseconds()) / 1000))
	}
}

// traceID is the request's trace id for logs, "" without one.
func traceID(ctx context.Context) string {
	sc := trace.SpanFromContext(ctx).SpanContext()
	if !sc.HasTraceID() {
		return ""
	}
	return sc.TraceID().String()
}

// statusRecorder remembers the status code written, for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush passes flushes through (SSE).
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
