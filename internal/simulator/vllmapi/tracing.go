package vllmapi

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/halyard-dev/halyard/internal/simulator"
)

// TracerName is the instrumentation scope of the engine's spans.
const TracerName = "github.com/halyard-dev/halyard/internal/simulator/vllmapi"

// traceResult emits the spans of one finished request, as an engine that
// joins the caller's trace (the W3C traceparent header) would: the
// request, and within it the wait in the queue, the prefill up to the
// first token and the decode. The times are the engine's.
func (s *Server) traceResult(r *http.Request, res *simulator.Result) {
	if s.tracer == nil {
		return
	}
	ctx := propagation.TraceContext{}.Extract(context.WithoutCancel(r.Context()), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(ctx, "engine.request", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(res.Arrival),
		trace.WithAttributes(
			attribute.String("halyard.engine.request_id", res.ID),
			attribute.String("halyard.engine.role", s.opts.Role),
			attribute.String("halyard.engine.finish_reason", string(res.Reason)),
			attribute.Int("gen_ai.usage.input_tokens", res.PromptTokens),
			attribute.Int("gen_ai.usage.output_tokens", res.OutputTokens),
			attribute.Int("halyard.engine.cached_tokens", res.CachedTokens),
			attribute.Int("halyard.engine.preemptions", res.Preemptions),
		))
	if !span.IsRecording() {
		span.End()
		return
	}
	if !res.Scheduled.IsZero() {
		_, q := s.tracer.Start(ctx, "engine.queue", trace.WithTimestamp(res.Arrival))
		q.End(trace.WithTimestamp(res.Scheduled))
		if !res.FirstToken.IsZero() {
			_, p := s.tracer.Start(ctx, "engine.prefill", trace.WithTimestamp(res.Scheduled),
				trace.WithAttributes(attribute.Int("halyard.engine.cached_tokens", res.CachedTokens)))
			p.End(trace.WithTimestamp(res.FirstToken))
			_, d := s.tracer.Start(ctx, "engine.decode", trace.WithTimestamp(res.FirstToken),
				trace.WithAttributes(attribute.Int("gen_ai.usage.output_tokens", res.OutputTokens)))
			d.End(trace.WithTimestamp(res.Finished))
		}
	}
	span.End(trace.WithTimestamp(res.Finished))
}
