package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/halyard-dev/halyard/internal/bench/stats"
	"github.com/halyard-dev/halyard/internal/bench/workload"
)

// API selects the endpoint a request goes to.
type API string

// The OpenAI APIs the bench drives.
const (
	Chat        API = "chat"
	Completions API = "completions"
)

// DefaultEndpointHeader is the response header from which the client reads
// which engine served a request (Halyard's router sets it).
const DefaultEndpointHeader = "X-Halyard-Endpoint"

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// Client sends requests to one target. Its zero value is not usable: set
// BaseURL and Model.
type Client struct {
	// BaseURL is the target's base URL without /v1, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Model is sent as the request's model.
	Model string
	// API is Chat (default) or Completions.
	API API
	// IgnoreEOS asks the engine to generate exactly max_tokens tokens
	// (vLLM's and SGLang's ignore_eos extension).
	IgnoreEOS bool
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// Headers are sent with every request (e.g. the objectives a client
	// declares, x-halyard-slo-ttft-ms and x-halyard-slo-tpot-ms).
	Headers map[string]string
	// EndpointHeader names the response header that identifies the serving
	// engine; DefaultEndpointHeader when empty.
	EndpointHeader string
	// HTTP is the client to use; http.DefaultClient when nil.
	HTTP *http.Client
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type requestBody struct {
	Model         string        `json:"model"`
	Messages      []message     `json:"messages,omitempty"`
	Prompt        string        `json:"prompt,omitempty"`
	MaxTokens     int           `json:"max_tokens"`
	Stream        bool          `json:"stream"`
	StreamOptions streamOptions `json:"stream_options"`
	IgnoreEOS     bool          `json:"ignore_eos,omitempty"`
	Temperature   float64       `json:"temperature"`
}

// Body returns the JSON body the client sends for r.
func (c *Client) Body(r *workload.Request) ([]byte, error) {
	b := requestBody{
		Model:         c.Model,
		MaxTokens:     r.OutputTokens,
		Stream:        true,
		StreamOptions: streamOptions{IncludeUsage: true},
		IgnoreEOS:     c.IgnoreEOS,
	}
	if c.api() == Completions {
		b.Prompt = r.Prompt()
	} else {
		b.Messages = make([]message, len(r.Messages))
		for i, m := range r.Messages {
			b.Messages[i] = message(m)
		}
	}
	return json.Marshal(b)
}

func (c *Client) api() API {
	if c.API == "" {
		return Chat
	}
	return c.API
}

// URL returns the URL requests are posted to.
func (c *Client) URL() string {
	base := strings.TrimRight(c.BaseURL, "/")
	if c.api() == Completions {
		return base + "/v1/completions"
	}
	return base + "/v1/chat/completions"
}

func (c *Client) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// Do sends r and returns its measurement. Record.Start is left zero for the
// caller to set; the returned record has Err set on any failure.
func (c *Client) Do(ctx context.Context, r *workload.Request) stats.Record {
	rec := stats.Record{ID: r.ID, PromptTokens: r.PromptTokens}
	body, err := c.Body(r)
	if err != nil {
		rec.Err = "encode request: " + err.Error()
		return rec
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL(), bytes.NewReader(body))
	if err != nil {
		rec.Err = "build request: " + err.Error()
		return rec
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("X-Request-Id", r.ID)
	for k, v := range c.Headers {
		req.Header.Set(k, v)
	}
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	start := c.now()
	resp, err := hc.Do(req)
	if err != nil {
		rec.E2E = c.now().Sub(start)
		rec.Err = transportError(err)
		return rec
	}
	defer resp.Body.Close()
	h := c.EndpointHeader
	if h == "" {
		h = DefaultEndpointHeader
	}
	rec.Endpoint = resp.Header.Get(h)
	if resp.StatusCode/100 != 2 {
		rec.Err = statusError(resp)
		rec.E2E = c.now().Sub(start)
		// Overload answers (the router's admission) are refusals.
		rec.Refused = resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable
		return rec
	}
	c.readStream(resp.Body, start, &rec)
	return rec
}

// chunk is the part of a streamed chunk the client reads.
type chunk struct {
	Choices []struct {
		Text  string `json:"text"`
		Delta struct {
			Content          string `json:"content"`
			ReasoningContent string `json:"reasoning_content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
	Error *apiError `json:"error"`
}

type apiError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    any    `json:"code"`
}

// readStream reads an SSE body into rec.
func (c *Client) readStream(body io.Reader, start time.Time, rec *stats.Record) {
	br := bufio.NewReaderSize(body, 32<<10)
	var last time.Time
	chunks := 0
	done, finished := false, false
	for {
		line, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			// The read failed mid-line (a timeout, a reset): what came of
			// the line is a fragment, not a chunk to parse.
			rec.Err = transportError(err)
			break
		}
		if len(line) > 0 {
			line = bytes.TrimRight(line, "\r\n")
			if data, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				data = bytes.TrimSpace(data)
				if bytes.Equal(data, []byte("[DONE]")) {
					done = true
					break
				}
				var ch chunk
				if jerr := json.Unmarshal(data, &ch); jerr != nil {
					rec.Err = "bad stream chunk: " + shorten(jerr.Error())
					break
				}
				if ch.Error != nil {
					rec.Err = "error in stream: " + shorten(ch.Error.Message)
					break
				}
				now := c.now()
				content := false
				for _, choice := range ch.Choices {
					if choice.Text != "" || choice.Delta.Content != "" || choice.Delta.ReasoningContent != "" {
						content = true
					}
					if choice.FinishReason != nil && *choice.FinishReason != "" {
						finished = true
					}
				}
				if content {
					if chunks == 0 {
						rec.TTFT = now.Sub(start)
					} else {
						rec.ITL = append(rec.ITL, now.Sub(last))
					}
					last = now
					chunks++
				}
				if u := ch.Usage; u != nil {
					rec.PromptTokens = u.PromptTokens
					rec.OutputTokens = u.CompletionTokens
					if u.PromptTokensDetails != nil {
						rec.CachedTokens = u.PromptTokensDetails.CachedTokens
					}
				}
			}
		}
		if err != nil { // io.EOF: the last line, if any, was read above
			break
		}
	}
	rec.E2E = c.now().Sub(start)
	if rec.Err != "" {
		return
	}
	if !done && !finished {
		rec.Err = "stream ended before [DONE]"
		return
	}
	if chunks == 0 {
		rec.Err = "no content in stream"
		return
	}
	if rec.OutputTokens == 0 {
		rec.OutputTokens = chunks
	}
}

func statusError(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb struct {
		Error *apiError `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &eb) == nil && eb.Error != nil && eb.Error.Message != "" {
		msg = eb.Error.Message
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return fmt.Sprintf("HTTP %d: %s", resp.StatusCode, shorten(msg))
}

func transportError(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed mid-stream"
	}
	return "transport: " + shorten(err.Error())
}

// isTimeout tells whether err is a timeout: http.Client.Timeout firing
// while the body is read, or a network deadline.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// shorten keeps error texts short enough to group failures by message.
func shorten(s string) string {
	const limit = 160
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "…"
}
