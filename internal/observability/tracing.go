package observability

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing configures OpenTelemetry tracing. The zero value is off unless
// the standard environment variables turn it on (TracingFromEnv).
type Tracing struct {
	// Enabled turns tracing on.
	Enabled bool
	// Endpoint is the OTLP/HTTP collector, e.g. http://127.0.0.1:4318;
	// empty: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT
	// or the exporter's default (http://localhost:4318).
	Endpoint string
	// SampleRatio is the share of new traces sampled (parent-based: a
	// request carrying a sampled traceparent is always traced). Negative:
	// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG decide (default 1).
	SampleRatio float64
	// ServiceName names the process in traces; OTEL_SERVICE_NAME wins.
	ServiceName string
}

// TracingFromEnv reports whether the standard variables ask for traces:
// OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint set, unless
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
func TracingFromEnv() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER")) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// SetupTracing installs the global tracer provider and the W3C trace
// context propagator, and returns a function that flushes and stops the
// exporter. Off, it installs the no-op provider (spans cost a nil check)
// and returns a no-op shutdown.
func SetupTracing(ctx context.Context, t Tracing) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if !t.Enabled && !TracingFromEnv() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		return func(context.Context) error { return nil }, nil
	}
	if p := os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL %q: only http/protobuf is supported", p)
	}
	var opts []otlptracehttp.Option
	if t.Endpoint != "" {
		u, err := url.Parse(t.Endpoint)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("tracing: endpoint %q: want a URL such as http://127.0.0.1:4318", t.Endpoint)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces" // a collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: exporter: %w", err)
	}
	name := t.ServiceName
	if name == "" {
		name = "halyard"
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(name)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		res, _ = resource.Merge(res, env) // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES win
	}
	popts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if t.SampleRatio >= 0 && os.Getenv("OTEL_TRACES_SAMPLER") == "" {
		popts = append(popts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(t.SampleRatio))))
	}
	tp := sdktrace.NewTracerProvider(popts...)
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// Tracer returns the named tracer of the global provider.
func Tracer(name string) trace.Tracer { return otel.Tracer(name) }
