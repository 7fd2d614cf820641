package cli

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/observability"
)

// setupTracing turns tracing on from the config's tracing block (nil: the
// OTEL_* variables alone) and returns the provider to give the router
// and engines (nil when off) and a function that flushes the spans.
func setupTracing(ctx context.Context, tc *config.TracingConfig, service string, log *slog.Logger) (trace.TracerProvider, func(), error) {
	t := observability.Tracing{ServiceName: service, SampleRatio: -1}
	if tc != nil {
		t.Enabled, t.Endpoint, t.Protocol = tc.Enabled, tc.Endpoint, tc.Protocol
		if tc.SampleRatio != nil {
			t.SampleRatio = *tc.SampleRatio
		}
	}
	shutdown, err := observability.SetupTracing(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	if !t.Enabled && !observability.TracingFromEnv() {
		return nil, func() {}, nil
	}
	log.Info("tracing on", "endpoint", t.Endpoint, "protocol", t.Protocol, "sampleRatio", t.SampleRatio)
	return otel.GetTracerProvider(), func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("flushing traces", "error", err)
		}
	}, nil
}
