package wire

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
	Model               *string         `json:"model"`
	Prompt              json.RawMessage `json:"prompt"`
	Messages            []ChatMessage   `json:"messages"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	MinTokens           *int64          `json:"min_tokens"`
	N                   *int64          `json:"n"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	IgnoreEOS           bool            `json:"ignore_eos"`
	Seed                *int64          `json:"seed"`
	KVTransferParams    json.RawMessage `json:"kv_transfer_params"`
	BootstrapHost       json.RawMessage `json:"bootstrap_host"`
	BootstrapPort       json.RawMessage `json:"bootstrap_port"`
	BootstrapRoom       json.RawMessage `json:"bootstrap_room"`
}

type streamOptions struct {
	IncludeUsage         bool `json:"include_usage"`
	ContinuousUsageStats bool `json:"continuous_usage_stats"`
}

// ChatMessage is one message of a chat request: a role and string or
// text-part content.
type ChatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Generation is a validated generation request.
type Generation struct {
	Chat            bool
	Model           string
	Prompt          []uint32
	MaxTokens       int
	MinTokens       int
	Stream          bool
	IncludeUsage    bool
	ContinuousUsage bool
	IgnoreEOS       bool
	Seed            uint64
	// KVTransfer is vLLM's kv_transfer_params, nil when absent or null.
	KVTransfer *KVTransferParams
	// Bootstrap holds SGLang's bootstrap_host, bootstrap_port and
	// bootstrap_room, nil when none is given.
	Bootstrap *Bootstrap
}

// Limits are the engine facts that validation needs.
type Limits struct {
	// MaxModelLen bounds prompt plus max tokens.
	MaxModelLen int
	// VocabSize bounds token ids in prompts.
	VocabSize int
	// DefaultMaxTokens applies to completions without max_tokens (vLLM's
	// and OpenAI's legacy default is 16); DefaultChatMaxTokens to chat
	// requests without one. Both are clamped to the context left.
	DefaultMaxTokens, DefaultChatMaxTokens int
}

// ParseGeneration decodes and validates a /v1/completions (chat=false) or
// /v1/chat/completions (chat=true) body. Every failure is a 400 with vLLM's
// error shape; it never panics.
func ParseGeneration(body []byte, chat bool, tok tokenizer.Tokenizer, lim Limits) (*Generation, *Error) {
	var req generationRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return nil, BadRequest("", "invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, BadRequest("", "invalid JSON body: data after the top-level value")
	}
	if req.Model == nil || *req.Model == "" {
		return nil, BadRequest("model", "the 'model' field is required")
	}
	p := &Generation{Chat: chat, Model: *req.Model, Stream: req.Stream, IgnoreEOS: req.IgnoreEOS}
	if req.N != nil && *req.N != 1 {
		return nil, BadRequest("n", "n must be 1 in the simulator, got %d", *req.N)
	}
	if req.StreamOptions != nil {
		if !req.Stream {
			return nil, BadRequest("stream_options", "stream_options can only be set when stream is true")
		}
		p.IncludeUsage = req.StreamOptions.IncludeUsage
		p.ContinuousUsage = req.StreamOptions.ContinuousUsageStats
	}
	if req.Seed != nil {
		p.Seed = uint64(*req.Seed)
	}
	var perr *Error
	if p.KVTransfer, perr = parseKVTransferParams(req.KVTransferParams); perr != nil {
		return nil, perr
	}
	if p.Bootstrap, perr = parseBootstrap(req.BootstrapHost, req.BootstrapPort, req.BootstrapRoom); perr != nil {
		return nil, perr
	}

	var err *Error
	if chat {
		if req.Prompt != nil {
			return nil, BadRequest("prompt", "chat requests take 'messages', not 'prompt'")
		}
		p.Prompt, err = RenderMessages(req.Messages, tok)
	} else {
		if req.Messages != nil {
			return nil, BadRequest("messages", "completion requests take 'prompt', not 'messages'")
		}
		p.Prompt, err = parsePrompt(req.Prompt, tok, lim.VocabSize)
	}
	if err != nil {
		return nil, err
	}
	if len(p.Prompt) == 0 {
		return nil, BadRequest("prompt", "the prompt must not be empty")
	}
	if len(p.Prompt) >= lim.MaxModelLen {
		return nil, contextError(lim.MaxModelLen, len(p.Prompt), 0)
	}

	maxTok, param := req.MaxTokens, "max_tokens"
	if chat && req.MaxCompletionTokens != nil {
		maxTok, param = req.MaxCompletionTokens, "max_completion_tokens"
	}
	left := lim.MaxModelLen - len(p.Prompt)
	switch {
	case maxTok != nil:
		if *maxTok < 1 {
			return nil, BadRequest(param, "%s must be at least 1, got %d.", param, *maxTok)
		}
		if *maxTok > int64(left) {
			return nil, contextError(lim.MaxModelLen, len(p.Prompt), *maxTok)
		}
		p.MaxTokens = int(*maxTok)
	case chat:
		p.MaxTokens = min(lim.DefaultChatMaxTokens, left)
	default:
		p.MaxTokens = min(lim.DefaultMaxTokens, left)
	}
	if req.MinTokens != nil {
		if *req.MinTokens < 0 || *req.MinTokens > int64(p.MaxTokens) {
			return nil, BadRequest("min_tokens", "min_tokens must be in [0, max_tokens=%d], got %d", p.MaxTokens, *req.MinTokens)
		}
		p.MinTokens = int(*req.MinTokens)
	}
	return p, nil
}

func contextError(maxLen, prompt int, completion int64) *Error {
	return BadRequest("", "This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.",
		maxLen, int64(prompt)+completion, prompt, completion)
}

// parsePrompt accepts a string, a one-element array of strings, an array of
// token ids, or a one-element array of such arrays.
func parsePrompt(raw json.RawMessage, tok tokenizer.Tokenizer, vocab int) ([]uint32, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, BadRequest("prompt", "the 'prompt' field is required")
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, BadRequest("prompt", "prompt: %v", err)
		}
		return tok.Encode(s), nil
	}
	if raw[0] != '[' {
		return nil, BadRequest("prompt", "prompt must be a string, an array of strings, or an array of token ids")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, BadRequest("prompt", "prompt: %v", err)
	}
	if len(items) == 0 {
		return nil, BadRequest("prompt", "the prompt must not be empty")
	}
	first := bytes.TrimSpace(items[0])
	if len(first) > 0 && (first[0] == '"' || first[0] == '[') {
		if len(items) != 1 {
			return nil, BadRequest("prompt", "batched prompts (%d) are not supported by the simulator; send one prompt per request", len(items))
		}
		return parsePrompt(first, tok, vocab)
	}
	ids := make([]uint32, len(items))
	for i, it := range items {
		var n json.Number
		if err := json.Unmarshal(it, &n); err != nil {
			return nil, BadRequest("prompt", "prompt[%d]: token ids must be integers", i)
		}
		v, err := n.Int64()
		if err != nil || v < 0 || v >= int64(vocab) {
			return nil, BadRequest("prompt", "Token id %s is out of vocabulary", n)
		}
		ids[i] = uint32(v)
	}
	return ids, nil
}

// RenderMessages renders every message into one prompt and tokenises it. The
// template (documented in docs/simulator.md) is
//
//	<|role|>\n{content}\n   for each message, then   <|assistant|>\n
func RenderMessages(msgs []ChatMessage, tok tokenizer.Tokenizer) ([]uint32, *Error) {
	if len(msgs) == 0 {
		return nil, BadRequest("messages", "'messages' must be a non-empty array")
	}
	var b strings.Builder
	for i, m := range msgs {
		if m.Role == "" {
			return nil, BadRequest("messages", "messages[%d].role is required", i)
		}
		text, err := messageText(m.Content)
		if err != nil {
			return nil, BadRequest("messages", "messages[%d].content: %v", i, err)
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
