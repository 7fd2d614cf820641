package observability

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// grpcReceiver is an OTLP/gRPC trace receiver on a real socket.
type grpcReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	names []string
	got   chan struct{}
}

func (g *grpcReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				g.names = append(g.names, sp.GetName())
			}
		}
	}
	select {
	case g.got <- struct{}{}:
	default:
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func startGRPCReceiver(t *testing.T) (*grpcReceiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &grpcReceiver{got: make(chan struct{}, 1)}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, g)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return g, ln.Addr().String()
}

// TestTracingOverGRPC: the config's protocol, or the OTEL_* protocol
// variables, send spans over OTLP/gRPC to an in-test receiver.
func TestTracingOverGRPC(t *testing.T) {
	for _, tt := range []struct {
		name string
		env  map[string]string
		cfg  func(addr string) Tracing
	}{
		{"config", nil, func(addr string) Tracing {
			return Tracing{Enabled: true, Endpoint: "http://" + addr, Protocol: ProtocolGRPC, SampleRatio: 1}
		}},
		{"traces variable", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, func(addr string) Tracing {
			return Tracing{Enabled: true, Endpoint: "http://" + addr, SampleRatio: 1}
		}},
		{"environment only", map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://{addr}"}, func(string) Tracing {
			return Tracing{SampleRatio: -1}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g, addr := startGRPCReceiver(t)
			for k, v := range tt.env {
				if v == "http://{addr}" {
					v = "http://" + addr
				}
				t.Setenv(k, v)
			}
			shutdown, err := SetupTracing(context.Background(), tt.cfg(addr))
			if err != nil {
				t.Fatal(err)
			}
			_, span := otel.Tracer("test").Start(context.Background(), "over-grpc")
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := shutdown(ctx); err != nil { // flushes
				t.Fatal(err)
			}
			select {
			case <-g.got:
			case <-ctx.Done():
				t.Fatal("no export reached the gRPC receiver")
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if len(g.names) != 1 || g.names[0] != "over-grpc" {
				t.Errorf("received spans %v, want [over-grpc]", g.names)
			}
		})
	}
}

func TestTracingProtocol(t *testing.T) {
	for _, tt := range []struct {
		configured, traces, general, want string
		wantErr                           bool
	}{
		{"", "", "", ProtocolHTTP, false},
		{"grpc", "http/protobuf", "", ProtocolGRPC, false},
		{"", "grpc", "http/protobuf", ProtocolGRPC, false},
		{"", "", "grpc", ProtocolGRPC, false},
		{"", "http/json", "", "", true},
		{"carrier-pigeon", "", "", "", true},
	} {
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", tt.traces)
		t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tt.general)
		got, err := tracingProtocol(tt.configured)
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("tracingProtocol(%q) with %q/%q = %q, %v; want %q, error %v", tt.configured, tt.traces, tt.general, got, err, tt.want, tt.wantErr)
		}
	}
}
