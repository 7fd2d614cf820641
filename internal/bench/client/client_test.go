package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/bench/workload"
	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

// stepClock is a clock the test server moves: the client stamps every data
// chunk with Now, and the server waits for that stamp before moving on, so
// the measured times are exactly the ones the server chose.
type stepClock struct {
	mu    sync.Mutex
	t     time.Time
	calls chan struct{}
}

func newStepClock() *stepClock {
	return &stepClock{t: time.Unix(1000, 0), calls: make(chan struct{}, 64)}
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls <- struct{}{}
	return c.t
}

func (c *stepClock) set(d time.Duration) {
	c.mu.Lock()
	c.t = time.Unix(1000, 0).Add(d)
	c.mu.Unlock()
}

// waitStamp waits until the client has read the clock once more.
func (c *stepClock) waitStamp(t *testing.T) {
	select {
	case <-c.calls:
	case <-time.After(10 * time.Second):
		t.Error("client never read the clock")
	}
}

type event struct {
	at   time.Duration // clock time when the event is sent
	data string        // the data: payload
}

// sseServer serves events, setting the clock before each one and waiting for
// the client to stamp it. It records the request body it got.
func sseServer(t *testing.T, clock *stepClock, events []event, end func(w http.ResponseWriter)) (*httptest.Server, *[]byte) {
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		clock.waitStamp(t) // the client's start stamp
		b := make([]byte, r.ContentLength)
		_, _ = r.Body.Read(b)
		got = b
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set(DefaultEndpointHeader, "engine-3")
		fl := w.(http.Flusher)
		for _, e := range events {
			clock.set(e.at)
			fmt.Fprintf(w, "data: %s\n\n", e.data)
			fl.Flush()
			if e.data != "[DONE]" {
				clock.waitStamp(t)
			}
		}
		if end != nil {
			end(w)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

func chatReq() *workload.Request {
	return &workload.Request{
		ID:    "r1",
		Shape: workload.Shape{PromptTokens: 10, OutputTokens: 3},
		Messages: []workload.Message{
			{Role: "system", Content: "a b c"},
			{Role: "user", Content: "d e"},
		},
	}
}

func TestChatStreamTimingAndUsage(t *testing.T) {
	clock := newStepClock()
	ms := time.Millisecond
	events := []event{
		{0, `{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`},
		{120 * ms, `{"choices":[{"index":0,"delta":{"content":"x"}}]}`},
		{150 * ms, `{"choices":[{"index":0,"delta":{"content":"y"}}]}`},
		{190 * ms, `{"choices":[{"index":0,"delta":{"content":"z"},"finish_reason":"length"}]}`},
		{200 * ms, `{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":8}}}`},
		{210 * ms, `[DONE]`},
	}
	srv, body := sseServer(t, clock, events, nil)
	c := &Client{BaseURL: srv.URL, Model: "m", IgnoreEOS: true, Now: clock.Now}
	got := c.Do(context.Background(), chatReq())
	want := stats.Record{
		ID: "r1", Endpoint: "engine-3",
		TTFT: 120 * ms, E2E: 210 * ms, ITL: []time.Duration{30 * ms, 40 * ms},
		PromptTokens: 12, OutputTokens: 3, CachedTokens: 8,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record mismatch (-want +got):\n%s", diff)
	}
	var sent map[string]any
	if err := json.Unmarshal(*body, &sent); err != nil {
		t.Fatalf("request body %q: %v", *body, err)
	}
	wantBody := map[string]any{
		"model": "m", "max_tokens": 3.0, "stream": true, "ignore_eos": true, "temperature": 0.0,
		"stream_options": map[string]any{"include_usage": true},
		"messages": []any{
			map[string]any{"role": "system", "content": "a b c"},
			map[string]any{"role": "user", "content": "d e"},
		},
	}
	if diff := cmp.Diff(wantBody, sent); diff != "" {
		t.Errorf("request body mismatch (-want +got):\n%s", diff)
	}
}

func TestCompletionsStreamWithoutUsageCountsChunks(t *testing.T) {
	clock := newStepClock()
	ms := time.Millisecond
	events := []event{
		{50 * ms, `{"choices":[{"index":0,"text":"a"}]}`},
		{60 * ms, `{"choices":[{"index":0,"text":"b"}]}`},
		{75 * ms, `{"choices":[{"index":0,"text":"c","finish_reason":"length"}]}`},
		{80 * ms, `[DONE]`},
	}
	srv, body := sseServer(t, clock, events, nil)
	c := &Client{BaseURL: srv.URL + "/", Model: "m", API: Completions, Now: clock.Now}
	got := c.Do(context.Background(), chatReq())
	want := stats.Record{
		ID: "r1", Endpoint: "engine-3", TTFT: 50 * ms, E2E: 80 * ms,
		ITL: []time.Duration{10 * ms, 15 * ms}, PromptTokens: 10, OutputTokens: 3,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record mismatch (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(*body), `"prompt":"a b c\nd e"`) || strings.Contains(string(*body), "messages") {
		t.Errorf("completions body %s", *body)
	}
}

func TestFailures(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		events  []event
		end     func(w http.ResponseWriter)
		status  int // non-zero: reply with this status and body instead
		body    string
		wantErr string
	}{
		{
			name:    "openai error body",
			status:  http.StatusTooManyRequests,
			body:    `{"error":{"message":"rate limited","type":"rate_limit_error","param":null,"code":"rate_limited"}}`,
			wantErr: "HTTP 429: rate limited",
		},
		{
			name:    "plain error body",
			status:  http.StatusBadGateway,
			body:    "upstream gone",
			wantErr: "HTTP 502: upstream gone",
		},
		{
			name:    "empty error body",
			status:  http.StatusServiceUnavailable,
			wantErr: "HTTP 503: Service Unavailable",
		},
		{
			name: "error object mid-stream",
			events: []event{
				{10 * ms, `{"choices":[{"index":0,"delta":{"content":"x"}}]}`},
				{20 * ms, `{"error":{"message":"engine died","type":"internal_error"}}`},
			},
			wantErr: "error in stream: engine died",
		},
		{
			name:    "stream ends before done",
			events:  []event{{10 * ms, `{"choices":[{"index":0,"delta":{"content":"x"}}]}`}},
			wantErr: "stream ended before [DONE]",
		},
		{
			name:   "connection cut mid-stream",
			events: []event{{10 * ms, `{"choices":[{"index":0,"delta":{"content":"x"}}]}`}},
			end: func(w http.ResponseWriter) {
				conn, buf, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				_ = buf.Flush()
				_ = conn.Close()
			},
			wantErr: "connection closed mid-stream",
		},
		{
			name:    "bad chunk",
			events:  []event{{10 * ms, `{"choices":[`}},
			wantErr: "bad stream chunk",
		},
		{
			name:    "done without content",
			events:  []event{{10 * ms, `[DONE]`}},
			wantErr: "no content in stream",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newStepClock()
			var srv *httptest.Server
			if tt.status != 0 {
				srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					w.WriteHeader(tt.status)
					_, _ = w.Write([]byte(tt.body))
				}))
				t.Cleanup(srv.Close)
			} else {
				srv, _ = sseServer(t, clock, tt.events, tt.end)
			}
			c := &Client{BaseURL: srv.URL, Model: "m", Now: clock.Now}
			got := c.Do(context.Background(), chatReq())
			if !strings.HasPrefix(got.Err, tt.wantErr) {
				t.Errorf("Err = %q, want prefix %q", got.Err, tt.wantErr)
			}
			if got.OK() {
				t.Error("failed request counted as OK")
			}
		})
	}
}

func TestConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := &Client{BaseURL: url, Model: "m"}
	got := c.Do(context.Background(), chatReq())
	if !strings.HasPrefix(got.Err, "transport: ") {
		t.Errorf("Err = %q, want a transport error", got.Err)
	}
}

func TestCanceled(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{BaseURL: srv.URL, Model: "m"}
	done := make(chan stats.Record)
	go func() { done <- c.Do(ctx, chatReq()) }()
	cancel()
	select {
	case got := <-done:
		if got.Err != "canceled" {
			t.Errorf("Err = %q, want canceled", got.Err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Do did not return after cancel")
	}
}

// TestTimeoutMidLine: a server that sends one whole chunk and half of the
// next, then stalls, is cut by the client's own timeout (--request-timeout
// is http.Client.Timeout; a context deadline does the same); the record
// says "timeout", not "bad stream chunk" for the half line. The server
// stalls until the request ends, so the timeout always fires.
func TestTimeoutMidLine(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n")
		_, _ = fmt.Fprint(w, `data: {"choices":[{"index":0,"delta":{"cont`)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	for _, tt := range []struct {
		name string
		hc   *http.Client
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"http.Client.Timeout", &http.Client{Timeout: 200 * time.Millisecond}, func() (context.Context, context.CancelFunc) {
			return context.WithCancel(context.Background())
		}},
		{"context deadline", &http.Client{}, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			c := &Client{BaseURL: srv.URL, Model: "m", HTTP: tt.hc}
			got := c.Do(ctx, chatReq())
			if got.Err != "timeout" {
				t.Errorf("Err = %q, want timeout", got.Err)
			}
			if got.OK() {
				t.Error("a timed-out request counted as OK")
			}
		})
	}
}

func FuzzReadStream(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("data: {\"usage\":{\"prompt_tokens\":1}}\n"))
	f.Add([]byte("event: x\ndata: {\"error\":{\"message\":\"m\"}}\n"))
	for _, d := range fuzzseed.JSONDocuments(`{"choices":[{"index":0,"delta":{"content":"x"}}],"usage":`) {
		f.Add(append(append([]byte("data: "), d...), "\n\n"...))
		f.Add(append(append([]byte("data:"), d...), "\r\ndata: [DONE]"...))
	}
	f.Add([]byte("data: " + strings.Repeat("x", 1<<20) + "\n")) // one line beyond the 32 KiB buffer
	f.Add([]byte("data: {\"usage\":{\"completion_tokens\":-5}}\n\ndata: [DONE]\n\n"))
	f.Add([]byte("\x00data: [DONE]\r\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &Client{}
		var rec stats.Record
		c.readStream(bufio.NewReader(strings.NewReader(string(data))), time.Now(), &rec)
		if rec.OK() && rec.OutputTokens < 0 {
			t.Fatalf("negative output tokens: %+v", rec)
		}
	})
}

func BenchmarkReadStream(b *testing.B) {
	var sb strings.Builder
	for i := range 256 {
		fmt.Fprintf(&sb, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%d \"}}]}\n\n", i)
	}
	sb.WriteString("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":256}}\n\ndata: [DONE]\n\n")
	body := sb.String()
	c := &Client{}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var rec stats.Record
		c.readStream(strings.NewReader(body), time.Now(), &rec)
		if rec.OutputTokens != 256 {
			b.Fatal(rec.Err)
		}
	}
}
