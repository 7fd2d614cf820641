package observability

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
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
	// Endpoint is the OTLP collector, e.g. http://127.0.0.1:4318 for
	// OTLP/HTTP or http://127.0.0.1:4317 for gRPC (https: TLS); empty:
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT or
	// the exporter's default (localhost:4318, localhost:4317).
	Endpoint string
	// Protocol is ProtocolHTTP or ProtocolGRPC; empty:
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, else
	// ProtocolHTTP.
	Protocol string
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
	protocol, err := tracingProtocol(t.Protocol)
	if err != nil {
		return nil, err
	}
	exp, err := newExporter(ctx, protocol, t.Endpoint)
	if err != nil {
		return nil, err
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

// OTLP protocols (the values of OTEL_EXPORTER_OTLP_PROTOCOL).
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// tracingProtocol resolves the OTLP protocol: configured, else the
// traces variable, else the general one, else OTLP/HTTP.
func tracingProtocol(configured string) (string, error) {
	p, from := configured, "tracing.protocol"
	for _, v := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p == "" {
			p, from = os.Getenv(v), v
		}
	}
	switch p {
	case "", ProtocolHTTP:
		return ProtocolHTTP, nil
	case ProtocolGRPC:
		return ProtocolGRPC, nil
	}
	return "", fmt.Errorf("tracing: %s %q: want %s or %s (http/json is not supported)", from, p, ProtocolGRPC, ProtocolHTTP)
}

// newExporter makes the OTLP span exporter for protocol, sending to
// endpoint (a URL; "" leaves it to the OTEL_* variables).
func newExporter(ctx context.Context, protocol, endpoint string) (sdktrace.SpanExporter, error) {
	var u *url.URL
	if endpoint != "" {
		var err error
		u, err = url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("tracing: endpoint %q: want a URL such as http://127.0.0.1:4318 (OTLP/HTTP) or http://127.0.0.1:4317 (gRPC)", endpoint)
		}
	}
	if protocol == ProtocolGRPC {
		var opts []otlptracegrpc.Option
		if u != nil {
			opts = append(opts, otlptracegrpc.WithEndpointURL(u.String())) // http: plaintext
		}
		exp, err := otlptracegrpc.New(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("tracing: gRPC exporter: %w", err)
		}
		return exp, nil
	}
	var opts []otlptracehttp.Option
	if u != nil {
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces" // a collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: exporter: %w", err)
	}
	return exp, nil
}

// Tracer returns the named tracer of the global provider.
func Tracer(name string) trace.Tracer { return otel.Tracer(name) }
