package e2e

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf).
type otlpReceiver struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	url   string
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rc := &otlpReceiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				rc.spans = append(rc.spans, ss.Spans...)
			}
		}
		rc.mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	rc.url = "http://" + ln.Addr().String()
	return rc
}

// trace returns the spans of one trace by name (the last of each name).
func (rc *otlpReceiver) trace(traceID string) map[string][]*tracepb.Span {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string][]*tracepb.Span{}
	for _, s := range rc.spans {
		if hex.EncodeToString(s.TraceId) == traceID {
			out[s.Name] = append(out[s.Name], s)
		}
	}
	return out
}

func attr(s *tracepb.Span, key string) (string, bool) {
	for _, a := range s.Attributes {
		if a.Key == key {
			switch v := a.Value.GetValue().(type) {
			case *commonpb.AnyValue_IntValue:
				return strconv.FormatInt(v.IntValue, 10), true
			case *commonpb.AnyValue_DoubleValue:
				return strconv.FormatFloat(v.DoubleValue, 'g', -1, 64), true
			default:
				return a.Value.GetStringValue(), true
			}
		}
	}
	return "", false
}

// TestTraceFollowsARequestThroughRouterAndEngines runs `halyard up` with
// tracing to an in-test OTLP receiver, sends streamed chats carrying a
// traceparent, one to a co-located pool and one to a PD pool, and checks
// that each trace holds the router's spans and the engines' spans, joined
// by parent ids.
func TestTraceFollowsARequestThroughRouterAndEngines(t *testing.T) {
	needUp(t)
	rc := startOTLPReceiver(t)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100") // export every 100 ms
	doc := fmt.Sprintf(`apiVersion: config.halyard.dev/v1alpha1
kind: Config
tracing: {enabled: true, endpoint: %q, sampleRatio: 0}
routes:
  - {model: llama, targets: [{pool: llama}]}
  - {model: pd, targets: [{pool: pd}]}
pools:
  - {name: pd, pd: {mode: nixl}}
engines:
  - {model: llama, replicas: 2, profile: zero}
  - {model: pd, role: prefill, replicas: 1, profile: zero}
  - {model: pd, role: decode, replicas: 1, profile: zero}
`, rc.url)
	path := filepath.Join(t.TempDir(), "traced.yaml")
	if err := writeFile(path, doc); err != nil {
		t.Fatal(err)
	}
	p := start(t, "up traced", "router serving", "up", "--config", path, "--listen", "127.0.0.1:0", "--log-level", "info")
	waitUntil(t, func() bool { return len(p.Stdout()) > 0 && strings.Contains(p.Stdout(), "Halyard is up") })

	// sampleRatio 0: only requests whose traceparent is sampled are traced.
	send := func(model, traceID, parent string) {
		t.Helper()
		c := openai.NewClient(option.WithBaseURL(p.URL()+"/v1"), option.WithAPIKey("unused"), option.WithMaxRetries(0),
			option.WithHeader("traceparent", "00-"+traceID+"-"+parent+"-01"))
		s := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model:         model,
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("trace me")},
			MaxTokens:     openai.Int(5),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		n := 0
		for s.Next() {
			n++
		}
		if err := s.Err(); err != nil || n == 0 {
			t.Fatalf("stream of %s: %v after %d chunks", model, err, n)
		}
	}
	const (
		colocated = "4bf92f3577b34da6a3ce929d0e0e4736"
		pdTrace   = "5cf92f3577b34da6a3ce929d0e0e4737"
		parent    = "00f067aa0ba902b7"
	)
	send("llama", colocated, parent)
	send("pd", pdTrace, parent)
	// An untraced request (no traceparent, ratio 0) leaves no trace.
	cl := client(p)
	if _, err := cl.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "llama", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("no trace")}, MaxTokens: openai.Int(2),
	}); err != nil {
		t.Fatal(err)
	}

	want := []string{"halyard.request /v1/chat/completions", "halyard.schedule", "halyard.upstream", "engine.request", "engine.queue", "engine.prefill", "engine.decode"}
	var spans map[string][]*tracepb.Span
	deadline := time.Now().Add(20 * time.Second)
	for {
		spans = rc.trace(colocated)
		missing := 0
		for _, n := range want {
			if len(spans[n]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trace %s lacks spans after 20s; has %v\n%s", colocated, names(spans), p.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	req := spans["halyard.request /v1/chat/completions"][0]
	if hex.EncodeToString(req.ParentSpanId) != parent {
		t.Errorf("request span's parent %x, want the client's %s", req.ParentSpanId, parent)
	}
	if _, ok := attr(req, "halyard.ttft_ms"); !ok {
		t.Errorf("request span lacks halyard.ttft_ms: %v", req.Attributes)
	}
	if v, _ := attr(req, "gen_ai.usage.output_tokens"); v != "5" {
		t.Errorf("request span's output tokens %q, want 5", v)
	}
	sched := spans["halyard.schedule"][0]
	if ep, _ := attr(sched, "halyard.endpoint"); ep == "" {
		t.Errorf("schedule span names no endpoint: %v", sched.Attributes)
	}
	if _, ok := attr(sched, "halyard.score"); !ok {
		t.Errorf("schedule span has no score: %v", sched.Attributes)
	}
	up := spans["halyard.upstream"][0]
	eng := spans["engine.request"][0]
	if string(eng.ParentSpanId) != string(up.SpanId) {
		t.Errorf("engine span's parent %x is not the upstream attempt's span %x", eng.ParentSpanId, up.SpanId)
	}
	for _, n := range []string{"engine.queue", "engine.prefill", "engine.decode"} {
		if string(spans[n][0].ParentSpanId) != string(eng.SpanId) {
			t.Errorf("%s is not a child of engine.request", n)
		}
	}

	// PD: the context reaches both hops.
	deadline = time.Now().Add(20 * time.Second)
	for {
		spans = rc.trace(pdTrace)
		if len(spans["halyard.pd.prefill"]) > 0 && len(spans["halyard.pd.decode"]) > 0 && len(spans["engine.request"]) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("PD trace lacks the prefill and decode hops after 20s; has %v", names(spans))
		}
		time.Sleep(50 * time.Millisecond)
	}
	hops := map[string]bool{string(spans["halyard.pd.prefill"][0].SpanId): false, string(spans["halyard.pd.decode"][0].SpanId): false}
	for _, e := range spans["engine.request"] {
		if _, ok := hops[string(e.ParentSpanId)]; ok {
			hops[string(e.ParentSpanId)] = true
		}
	}
	for id, joined := range hops {
		if !joined {
			t.Errorf("no engine span under hop %x", id)
		}
	}
	rc.mu.Lock()
	requests := 0
	for _, s := range rc.spans {
		if s.Name == "halyard.request /v1/chat/completions" {
			requests++
		}
	}
	rc.mu.Unlock()
	if requests != 2 {
		t.Errorf("%d request spans, want 2 (the request without a traceparent is not sampled at ratio 0)", requests)
	}
	if !strings.Contains(p.Logs(), "trace_id="+colocated) {
		t.Errorf("the access log lacks the trace id:\n%s", p.Logs())
	}
}

func names(m map[string][]*tracepb.Span) []string {
	var out []string
	for n, ss := range m {
		out = append(out, fmt.Sprintf("%s×%d", n, len(ss)))
	}
	return out
}
