package router

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// discardExporter drops spans after the batch processor hands them over,
// so that the benchmark measures the router's side of tracing.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// tracingBenchBody is a small streamed chat, as BenchmarkHandler/sse.
const tracingBenchBody = `{"model":"llama","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello."}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`

// BenchmarkTracing compares the handler (a streamed chat through a real
// socket to a fake engine) with tracing off, on at 1% sampling and on at
// 100%, side by side in one run (docs/benchmarks.md, "Tracing"), with the
// process's CPU time per request (cpu-ns/op, getrusage): wall time on a
// shared machine is noise. The fake engine runs in the process, so
// cpu-ns/op is the router's and the engine's.
func BenchmarkTracing(b *testing.B) {
	h := newHarness(b, oneModel, twoEngines())
	for _, bc := range []struct {
		name  string
		ratio float64 // <0: off
	}{{"off", -1}, {"ratio=0.01", 0.01}, {"ratio=1", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			h.r.tracer = nil
			if bc.ratio >= 0 {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}),
					sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(bc.ratio))))
				defer func() { _ = tp.Shutdown(context.Background()) }()
				h.r.tracer = tp.Tracer(TracerName)
			}
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(tracingBenchBody))
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				h.r.Handler().ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
	h.r.tracer = nil
}

// BenchmarkRequestSpan measures what tracing adds to a request apart from
// the handler: the request span started (traceparent extracted), the
// context injected into the upstream request's headers, the span ended. At
// 1% nearly every request is unsampled, and its child spans are nil checks.
func BenchmarkRequestSpan(b *testing.B) {
	for _, ratio := range []float64{0.01, 1} {
		b.Run(fmt.Sprintf("ratio=%g", ratio), func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}),
				sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
			defer func() { _ = tp.Shutdown(context.Background()) }()
			r := &Router{tracer: tp.Tracer(TracerName)}
			req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
			up := http.Header{}
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				hr, span := r.startRequestSpan(req)
				injectTrace(hr.Context(), up)
				endSpan(span, nil, attrStatus.Int(200))
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
