package router

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
)

// fakeEngine is an HTTP server that speaks the parts of vLLM's API the
// router uses: /metrics, and chat and completion requests answered as JSON
// or SSE (with a usage chunk when asked). Behaviour switches let tests make
// it fail.
type fakeEngine struct {
	name  string
	model string
	srv   *httptest.Server

	mu       sync.Mutex
	bodies   [][]byte
	headers  []http.Header
	requests atomic.Int64

	// status, if non-zero, is returned instead of an answer.
	status atomic.Int32
	// dieAfterChunks, if positive, makes a stream end abruptly (connection
	// closed) after that many chunks; -1 sends the headers and dies.
	dieAfterChunks atomic.Int32
	// chunks is the number of content chunks in a stream; default 3.
	chunks int
	// gate, if set, is received from before each content chunk after the
	// first, so a test can prove the first arrived before the rest existed.
	gate chan struct{}
	// canceled is closed when a request's context ends before it finished.
	canceled   chan struct{}
	cancelOnce sync.Once
	// stall, if set, holds generation requests until it is closed or the
	// request ends, before any header is sent.
	stall chan struct{}
	// metricsFail makes /metrics answer 500.
	metricsFail atomic.Bool
	// healthStatus, if non-zero, is /health's status (else 200).
	healthStatus atomic.Int32
	// partialBody makes a non-streamed answer declare 1000 bytes, send 10
	// and stall until the request ends.
	partialBody atomic.Bool
	// holdAfterDone makes a stream stay open after "data: [DONE]" until the
	// request ends.
	holdAfterDone atomic.Bool
	waiting       atomic.Int32
}

func (e *fakeEngine) received() ([][]byte, []http.Header) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]byte(nil), e.bodies...), append([]http.Header(nil), e.headers...)
}

func (e *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" {
		if e.metricsFail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=%q} %d\nvllm:num_requests_running{model_name=%q} 0\nvllm:kv_cache_usage_perc{model_name=%q} 0.1\n",
			e.model, e.waiting.Load(), e.model, e.model)
		return
	}
	if r.URL.Path == "/health" {
		if s := e.healthStatus.Load(); s != 0 {
			w.WriteHeader(int(s))
		}
		return
	}
	body, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	e.bodies = append(e.bodies, body)
	e.headers = append(e.headers, r.Header.Clone())
	e.mu.Unlock()
	e.requests.Add(1)
	if e.stall != nil {
		select {
		case <-e.stall:
		case <-r.Context().Done():
			return
		}
	}
	if s := e.status.Load(); s != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(s))
		fmt.Fprintf(w, `{"object":"error","message":"engine %s failed","type":"InternalServerError","code":%d}`, e.name, s)
		return
	}
	var req struct {
		Model         string `json:"model"`
		Stream        bool   `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	_ = json.Unmarshal(body, &req)
	chat := strings.HasSuffix(r.URL.Path, "/chat/completions")
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		if e.partialBody.Load() {
			w.Header().Set("Content-Length", "1000")
			w.Write(e.answer(chat, req.Model)[:10])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		w.Write(e.answer(chat, req.Model))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl := w.(http.Flusher)
	for i := range e.chunks {
		if i > 0 && e.gate != nil {
			select {
			case <-e.gate:
			case <-r.Context().Done():
				e.cancelOnce.Do(func() { close(e.canceled) })
				return
			}
		}
		if d := e.dieAfterChunks.Load(); d != 0 && int32(i) >= d {
			if d < 0 { // headers, then death before the first chunk
				fl.Flush()
			}
			hj, ok := w.(http.Hijacker)
			if !ok {
				panic("no hijacker")
			}
			conn, _, err := hj.Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		fmt.Fprintf(w, "data: %s\n\n", e.chunk(chat, req.Model, i))
		fl.Flush()
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		obj := "text_completion"
		if chat {
			obj = "chat.completion.chunk"
		}
		fmt.Fprintf(w, `data: {"id":"x","object":%q,"created":0,"model":%q,"choices":[],"usage":{"prompt_tokens":5,"total_tokens":%d,"completion_tokens":%d}}`+"\n\n", obj, req.Model, 5+e.chunks, e.chunks)
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
	if e.holdAfterDone.Load() {
		<-r.Context().Done()
	}
}

func (e *fakeEngine) chunk(chat bool, model string, i int) string {
	if chat {
		return fmt.Sprintf(`{"id":"chatcmpl-%s","object":"chat.completion.chunk","created":1,"model":%q,"choices":[{"index":0,"delta":{"content":"w%d "},"logprobs":null,"finish_reason":null}]}`, e.name, model, i)
	}
	return fmt.Sprintf(`{"id":"cmpl-%s","object":"text_completion","created":1,"model":%q,"choices":[{"index":0,"text":"w%d ","logprobs":null,"finish_reason":null}]}`, e.name, model, i)
}

func (e *fakeEngine) answer(chat bool, model string) []byte {
	if chat {
		return []byte(fmt.Sprintf(`{"id":"chatcmpl-%s","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hello from %s"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}`, e.name, model, e.name))
	}
	return []byte(fmt.Sprintf(`{"id":"cmpl-%s","object":"text_completion","created":1,"model":%q,"choices":[{"index":0,"text":"hello from %s","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"total_tokens":8,"completion_tokens":3}}`, e.name, model, e.name))
}
