package benchtest

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// BlockSize is the toy prefix cache's block size in tokens.
const BlockSize = 16

// Engine is a fake engine. Set its fields before the first request.
type Engine struct {
	// Name is sent in the X-Halyard-Endpoint response header.
	Name string
	// TokenDelay is the wall time between streamed tokens.
	TokenDelay time.Duration
	// Fail, when set, makes the engine answer a request with this status
	// (and an OpenAI error body) when it returns true for the request's
	// sequence number (0-based).
	Fail func(seq int) int

	Server *httptest.Server

	mu          sync.Mutex
	seq         int
	inFlight    int
	maxInFlight int
	success     int
	promptToks  int
	queries     int
	hits        int
	cached      map[uint64]bool
	log         []Served
}

// Served records one request the engine served.
type Served struct {
	ID       string
	Received time.Time
	Finished time.Time
	Prompt   string
	// Headers are the request's headers.
	Headers http.Header
}

// Start starts the engine's HTTP server; t's cleanup stops it.
func (e *Engine) Start(t testing.TB) *Engine {
	e.cached = map[uint64]bool{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { e.serve(w, r, true) })
	mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) { e.serve(w, r, false) })
	mux.HandleFunc("GET /metrics", e.metrics)
	e.Server = httptest.NewServer(mux)
	t.Cleanup(e.Server.Close)
	return e
}

// URL is the engine's base URL.
func (e *Engine) URL() string { return e.Server.URL }

// MaxInFlight returns the most requests the engine held at once.
func (e *Engine) MaxInFlight() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.maxInFlight
}

// Log returns the requests served so far, in order of arrival.
func (e *Engine) Log() []Served {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Served(nil), e.log...)
}

type body struct {
	Model     string `json:"model"`
	Prompt    string `json:"prompt"`
	MaxTokens int    `json:"max_tokens"`
	Stream    bool   `json:"stream"`
	Messages  []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	StreamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": "invalid_request_error", "param": nil, "code": nil,
	}})
}

func (e *Engine) serve(w http.ResponseWriter, r *http.Request, chat bool) {
	var b body
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
		writeError(w, http.StatusBadRequest, "bad body: "+err.Error())
		return
	}
	if !b.Stream || !b.StreamOptions.IncludeUsage || b.MaxTokens <= 0 {
		writeError(w, http.StatusBadRequest, "want stream, include_usage and max_tokens")
		return
	}
	prompt := b.Prompt
	if chat {
		parts := make([]string, len(b.Messages))
		for i, m := range b.Messages {
			parts[i] = m.Content
		}
		prompt = strings.Join(parts, "\n")
	}
	ids := tokenizer.Pseudo{}.Encode(prompt)

	e.mu.Lock()
	seq := e.seq
	e.seq++
	if e.Fail != nil {
		if code := e.Fail(seq); code != 0 {
			e.mu.Unlock()
			writeError(w, code, fmt.Sprintf("injected failure %d", seq))
			return
		}
	}
	e.inFlight++
	e.maxInFlight = max(e.maxInFlight, e.inFlight)
	idx := len(e.log)
	e.log = append(e.log, Served{ID: r.Header.Get("X-Request-Id"), Received: time.Now(), Prompt: prompt, Headers: r.Header.Clone()})
	hit := e.lookupAndInsert(ids)
	e.queries += len(ids)
	e.hits += hit
	e.mu.Unlock()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Halyard-Endpoint", e.Name)
	fl := w.(http.Flusher)
	for i := range b.MaxTokens {
		if i > 0 && e.TokenDelay > 0 {
			time.Sleep(e.TokenDelay) // the fake engine's decode time
		}
		var c string
		if chat {
			c = fmt.Sprintf(`{"id":"x","object":"chat.completion.chunk","model":%q,"choices":[{"index":0,"delta":{"content":"t%d "}}]}`, b.Model, i)
		} else {
			c = fmt.Sprintf(`{"id":"x","object":"text_completion","model":%q,"choices":[{"index":0,"text":"t%d "}]}`, b.Model, i)
		}
		fmt.Fprintf(w, "data: %s\n\n", c)
		fl.Flush()
	}
	fmt.Fprintf(w, "data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,\"prompt_tokens_details\":{\"cached_tokens\":%d}}}\n\n",
		len(ids), b.MaxTokens, len(ids)+b.MaxTokens, hit)
	// Account before [DONE], so that a client that sends its next request
	// on [DONE] never finds this one still counted.
	e.mu.Lock()
	e.inFlight--
	e.success++
	e.promptToks += len(ids)
	e.log[idx].Finished = time.Now()
	e.mu.Unlock()
	fmt.Fprint(w, "data: [DONE]\n\n")
	fl.Flush()
}

// lookupAndInsert returns the tokens of ids' cached full-block prefix and
// caches all its full blocks. Callers hold e.mu.
func (e *Engine) lookupAndInsert(ids []uint32) int {
	var h uint64
	hit, matching := 0, true
	for start := 0; start+BlockSize <= len(ids); start += BlockSize {
		f := fnv.New64a()
		var buf [8]byte
		for k := range 8 {
			buf[k] = byte(h >> (8 * k))
		}
		_, _ = f.Write(buf[:])
		for _, id := range ids[start : start+BlockSize] {
			_, _ = f.Write([]byte{byte(id), byte(id >> 8), byte(id >> 16), byte(id >> 24)})
		}
		h = f.Sum64()
		if matching && e.cached[h] {
			hit += BlockSize
		} else {
			matching = false
		}
		e.cached[h] = true
	}
	return hit
}

func (e *Engine) metrics(w http.ResponseWriter, _ *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# TYPE vllm:request_success_total counter\nvllm:request_success_total{finished_reason=\"length\",model_name=\"m\"} %d\n", e.success)
	fmt.Fprintf(w, "# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{model_name=\"m\"} %d\n", e.promptToks)
	fmt.Fprintf(w, "# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{model_name=\"m\"} %d\n", e.queries)
	fmt.Fprintf(w, "# TYPE vllm:prefix_cache_hits_total counter\nvllm:prefix_cache_hits_total{model_name=\"m\"} %d\n", e.hits)
	fmt.Fprintf(w, "vllm:num_requests_running{model_name=\"m\"} %d\n", e.inFlight)
}
