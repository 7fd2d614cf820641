package router

import (
	"context"
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

// BenchmarkTracing compares the handler (a streamed chat through a real
// socket to a fake engine) with tracing off, on at 1% sampling and on at
// 100%, side by side in one run (docs/benchmarks.md, "Tracing").
func BenchmarkTracing(b *testing.B) {
	const body = `{"model":"llama","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello."}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`
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
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				h.r.Handler().ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
	h.r.tracer = nil
}
