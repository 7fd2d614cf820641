package vllmapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// generationRequest is the union of the completion and chat request fields
// the simulator reads. Unknown fields are ignored, as vLLM does.
type generationRequest struct {
	Model               *string          `json:"model"`
	Prompt              json.RawMessage  `json:"prompt"`
	Messages            []chatMessage    `json:"messages"`
	MaxTokens           *int64           `json:"max_tokens"`
	MaxCompletionTokens *int64           `json:"max_completion_tokens"`
	MinTokens           *int64           `json:"min_tokens"`
	N                   *int64           `json:"n"`
	Stream              bool             `json:"stream"`
	StreamOptions       *streamOptions   `json:"stream_options"`
	IgnoreEOS           bool             `json:"ignore_eos"`
	Seed                *int64           `json:"seed"`
	KVTransferParams    *json.RawMessage `json:"kv_transfer_params"`
}

type streamOptions struct {
	IncludeUsage         bool `json:"include_usage"`
	ContinuousUsageStats bool `json:"continuous_usage_stats"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// parsed is a validated generation request.
type parsed struct {
	chat            bool
	model           string
	prompt          []uint32
	maxTokens       int
	minTokens       int
	stream          bool
	includeUsage    bool
	continuousUsage bool
	ignoreEOS       bool
	seed            uint64
}

// parseLimits are the engine facts that validation needs.
type parseLimits struct {
	maxModelLen      int
	vocabSize        int
	defaultMaxTokens int // completions: vLLM/OpenAI legacy default 16
	defaultChatMax   int // chat default; clamped to the context left
}

// parseGeneration decodes and validates a /v1/completions (chat=false) or
// /v1/chat/completions (chat=true) body. Every failure is a 400 with vLLM's
// error shape; it never panics.
func parseGeneration(body []byte, chat bool, tok tokenizer.Tokenizer, lim parseLimits) (*parsed, *apiError) {
	var req generationRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return nil, badRequest("", "invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest("", "invalid JSON body: data after the top-level value")
	}
	if req.Model == nil || *req.Model == "" {
		return nil, badRequest("model", "the 'model' field is required")
	}
	p := &parsed{chat: chat, model: *req.Model, stream: req.Stream, ignoreEOS: req.IgnoreEOS}
	if req.N != nil && *req.N != 1 {
		return nil, badRequest("n", "n must be 1 in the simulator, got %d", *req.N)
	}
	if req.StreamOptions != nil {
		if !req.Stream {
			return nil, badRequest("stream_options", "stream_options can only be set when stream is true")
		}
		p.includeUsage = req.StreamOptions.IncludeUsage
		p.continuousUsage = req.StreamOptions.ContinuousUsageStats
	}
	if req.Seed != nil {
		p.seed = uint64(*req.Seed)
	}

	var err *apiError
	if chat {
		if req.Prompt != nil {
			return nil, badRequest("prompt", "chat requests take 'messages', not 'prompt'")
		}
		p.prompt, err = renderChat(req.Messages, tok)
	} else {
		if req.Messages != nil {
			return nil, badRequest("messages", "completion requests take 'prompt', not 'messages'")
		}
		p.prompt, err = parsePrompt(req.Prompt, tok, lim.vocabSize)
	}
	if err != nil {
		return nil, err
	}
	if len(p.prompt) == 0 {
		return nil, badRequest("prompt", "the prompt must not be empty")
	}
	if len(p.prompt) >= lim.maxModelLen {
		return nil, contextError(lim.maxModelLen, len(p.prompt), 0)
	}

	maxTok, param := req.MaxTokens, "max_tokens"
	if chat && req.MaxCompletionTokens != nil {
		maxTok, param = req.MaxCompletionTokens, "max_completion_tokens"
	}
	left := lim.maxModelLen - len(p.prompt)
	switch {
	case maxTok != nil:
		if *maxTok < 1 {
			return nil, badRequest(param, "%s must be at least 1, got %d.", param, *maxTok)
		}
		if *maxTok > int64(left) {
			return nil, contextError(lim.maxModelLen, len(p.prompt), *maxTok)
		}
		p.maxTokens = int(*maxTok)
	case chat:
		p.maxTokens = min(lim.defaultChatMax, left)
	default:
		p.maxTokens = min(lim.defaultMaxTokens, left)
	}
	if req.MinTokens != nil {
		if *req.MinTokens < 0 || *req.MinTokens > int64(p.maxTokens) {
			return nil, badRequest("min_tokens", "min_tokens must be in [0, max_tokens=%d], got %d", p.maxTokens, *req.MinTokens)
		}
		p.minTokens = int(*req.MinTokens)
	}
	return p, nil
}

func contextError(maxLen, prompt int, completion int64) *apiError {
	return badRequest("", "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.",
		maxLen, int64(prompt)+completion, prompt, completion)
}

// parsePrompt accepts a string, a one-element array of strings, an array of
// token ids, or a one-element array of such arrays.
func parsePrompt(raw json.RawMessage, tok tokenizer.Tokenizer, vocab int) ([]uint32, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, badRequest("prompt", "the 'prompt' field is required")
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badRequest("prompt", "prompt: %v", err)
		}
		return tok.Encode(s), nil
	}
	if raw[0] != '[' {
		return nil, badRequest("prompt", "prompt must be a string, an array of strings, or an array of token ids")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, badRequest("prompt", "prompt: %v", err)
	}
	if len(items) == 0 {
		return nil, badRequest("prompt", "the prompt must not be empty")
	}
	first := bytes.TrimSpace(items[0])
	if len(first) > 0 && (first[0] == '"' || first[0] == '[') {
		if len(items) != 1 {
			return nil, badRequest("prompt", "batched prompts (%d) are not supported by the simulator; send one prompt per request", len(items))
		}
		return parsePrompt(first, tok, vocab)
	}
	ids := make([]uint32, len(items))
	for i, it := range items {
		var n json.Number
		if err := json.Unmarshal(it, &n); err != nil {
			return nil, badRequest("prompt", "prompt[%d]: token ids must be integers", i)
		}
		v, err := n.Int64()
		if err != nil || v < 0 || v >= int64(vocab) {
			return nil, badRequest("prompt", "Token id %s is out of vocabulary", n)
		}
		ids[i] = uint32(v)
	}
	return ids, nil
}

// renderChat renders every message into one prompt and tokenises it. The
// template (documented in docs/simulator.md) is
//
//	<|role|>\n{content}\n   for each message, then   <|assistant|>\n
func renderChat(msgs []chatMessage, tok tokenizer.Tokenizer) ([]uint32, *apiError) {
	if len(msgs) == 0 {
		return nil, badRequest("messages", "'messages' must be a non-empty array")
	}
	var b strings.Builder
	for i, m := range msgs {
		if m.Role == "" {
			return nil, badRequest("messages", "messages[%d].role is required", i)
		}
		text, err := messageText(m.Content)
		if err != nil {
			return nil, badRequest("messages", "messages[%d].content: %v", i, err)
		}
		b.WriteString("<|")
		b.WriteString(m.Role)
		b.WriteString("|>\n")
		b.WriteString(text)
		b.WriteString("\n")
	}
	b.WriteString("<|assistant|>\n")
	return tok.Encode(b.String()), nil
}

// RenderChat returns the text that a chat conversation becomes before
// tokenisation, so that other code (the bench) can count its tokens exactly.
// Each message is given as role and text content.
func RenderChat(roles, contents []string) string {
	var b strings.Builder
	for i := range roles {
		fmt.Fprintf(&b, "<|%s|>\n%s\n", roles[i], contents[i])
	}
	b.WriteString("<|assistant|>\n")
	return b.String()
}

func messageText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []contentPart
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("must be a string or an array of content parts")
	}
	var b strings.Builder
	for i, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("part %d has type %q; only text parts are supported", i, p.Type)
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}
