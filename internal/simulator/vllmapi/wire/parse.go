package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// ChatMessage is one message of a chat request: a role and string or
// text-part content.
type ChatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
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
// /v1/chat/completions (chat=true) body. Keys are matched exactly and
// unknown keys ignored, as vLLM's pydantic models do; values are read in
// pydantic's lax mode (validation.go). Every failure is a 400 with vLLM's
// error shape; it never panics.
func ParseGeneration(body []byte, chat bool, tok tokenizer.Tokenizer, lim Limits) (*Generation, *Error) {
	obj, perr := decodeBody(body)
	if perr != nil {
		return nil, perr
	}
	var errs []fieldError
	at := func(key string) []any { return []any{key} }
	model, hasModel := obj.str("model", at("model"), &errs)
	stream, _ := obj.bool("stream", true, at("stream"), &errs)
	ignoreEOS, _ := obj.bool("ignore_eos", false, at("ignore_eos"), &errs)
	maxKey := "max_tokens"
	maxTok, hasMax := obj.int(maxKey, true, at(maxKey), &errs)
	if chat {
		if v, ok := obj.int("max_completion_tokens", true, at("max_completion_tokens"), &errs); ok {
			maxKey, maxTok, hasMax = "max_completion_tokens", v, true
		}
	}
	minTok, hasMin := obj.int("min_tokens", false, at("min_tokens"), &errs)
	n, hasN := obj.int("n", true, at("n"), &errs)
	seed, hasSeed := obj.int("seed", true, at("seed"), &errs)
	if hasSeed && !int64Range(seed, at("seed"), obj["seed"], &errs) {
		hasSeed = false
	}
	obj.int("top_k", true, at("top_k"), &errs)
	for _, k := range []string{"temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty"} {
		obj.float(k, at(k), &errs)
	}
	so, hasSO := obj.object("stream_options", at("stream_options"), &errs)
	includeUsage, continuous := true, false
	if hasSO {
		if v, ok := so.bool("include_usage", true, []any{"stream_options", "include_usage"}, &errs); ok {
			includeUsage = v
		}
		continuous, _ = so.bool("continuous_usage_stats", true, []any{"stream_options", "continuous_usage_stats"}, &errs)
	}
	var msgs []ChatMessage
	if chat {
		msgs = obj.messages(&errs)
	}
	if len(errs) > 0 {
		return nil, validationError(errs...)
	}
	if aerr := unsupported(obj, chat); aerr != nil {
		return nil, aerr
	}

	if !hasModel || model == "" {
		return nil, BadRequest("model", "the 'model' field is required")
	}
	p := &Generation{Chat: chat, Model: model, Stream: stream, IgnoreEOS: ignoreEOS}
	if hasN && (n.V != 1 || n.Big != 0) {
		return nil, BadRequest("n", "n must be 1 in the simulator, got %s", obj["n"])
	}
	if hasSO {
		if !stream {
			return nil, BadRequest("stream_options", "stream_options can only be set when stream is true")
		}
		p.IncludeUsage, p.ContinuousUsage = includeUsage, continuous
	}
	if hasSeed {
		p.Seed = uint64(seed.V)
	}
	if p.KVTransfer, perr = parseKVTransferParams(obj["kv_transfer_params"]); perr != nil {
		return nil, perr
	}
	if p.Bootstrap, perr = parseBootstrap(obj["bootstrap_host"], obj["bootstrap_port"], obj["bootstrap_room"]); perr != nil {
		return nil, perr
	}

	if chat {
		if obj.has("prompt") {
			return nil, BadRequest("prompt", "chat requests take 'messages', not 'prompt'")
		}
		if _, ok := obj["messages"]; !ok {
			return nil, validationError(fieldError{typ: errMissing, loc: at("messages"), input: body})
		}
		p.Prompt, perr = RenderMessages(msgs, tok)
	} else {
		if obj.has("messages") {
			return nil, BadRequest("messages", "completion requests take 'prompt', not 'messages'")
		}
		p.Prompt, perr = parsePrompt(obj["prompt"], tok, lim.VocabSize)
	}
	if perr != nil {
		return nil, perr
	}
	if len(p.Prompt) == 0 {
		return nil, BadRequest("prompt", "the prompt must not be empty")
	}

	left := lim.MaxModelLen - len(p.Prompt)
	switch {
	case hasMax:
		if maxTok.Big < 0 || maxTok.V < 1 {
			return nil, BadRequest(maxKey, "%s must be at least 1, got %s.", maxKey, obj[maxKey])
		}
		if maxTok.Big > 0 || maxTok.V > int64(left) {
			return nil, contextError(lim.MaxModelLen, len(p.Prompt), maxTok)
		}
		p.MaxTokens = int(maxTok.V)
	case left < 1:
		return nil, contextError(lim.MaxModelLen, len(p.Prompt), integer{V: 1})
	case chat:
		p.MaxTokens = min(lim.DefaultChatMaxTokens, left)
	default:
		p.MaxTokens = min(lim.DefaultMaxTokens, left)
	}
	if hasMin {
		if minTok.Big != 0 || minTok.V < 0 || minTok.V > int64(p.MaxTokens) {
			return nil, BadRequest("min_tokens", "min_tokens must be in [0, max_tokens=%d], got %s", p.MaxTokens, obj["min_tokens"])
		}
		p.MinTokens = int(minTok.V)
	}
	return p, nil
}

// contextError is vLLM's answer to a prompt that, with the output tokens
// requested (at least one), does not fit the context window.
func contextError(maxLen, prompt int, requested integer) *Error {
	req := strconv.FormatInt(requested.V, 10)
	maxInput := strconv.FormatInt(int64(maxLen)-requested.V, 10)
	if requested.Big > 0 {
		req, maxInput = "more than 9223372036854775807", "0"
	}
	return &Error{Status: http.StatusBadRequest, Type: "BadRequestError", Param: "input_tokens",
		Message: fmt.Sprintf("You passed %d input tokens and requested %s output tokens. However, the model's context length is only %d tokens, resulting in a maximum input length of %s tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=%d)",
			prompt, req, maxLen, maxInput, prompt)}
}

// unsupported refuses the sampling features the simulator does not
// implement (log probabilities and stop strings), naming the field, rather
// than ignoring them silently. Their empty forms (null, false, "", [], 0
// top_logprobs) are accepted.
func unsupported(obj object, chat bool) *Error {
	refuse := func(key string) *Error {
		return BadRequest(key, "the simulator does not implement '%s'; send the request without it (docs/simulator.md)", key)
	}
	if chat {
		if v, ok := obj["logprobs"]; ok {
			if b, _ := laxBool(v); b {
				return refuse("logprobs")
			}
		}
		if v, ok := obj["top_logprobs"]; ok && !isNull(v) {
			if n, _ := laxInt(v); n.V != 0 || n.Big != 0 {
				return refuse("top_logprobs")
			}
		}
	} else if obj.has("logprobs") {
		return refuse("logprobs")
	}
	if v, ok := obj["stop"]; ok && !isNull(v) {
		switch t := bytes.TrimSpace(v); {
		case bytes.Equal(t, []byte(`""`)), bytes.Equal(t, []byte("[]")):
		default:
			return refuse("stop")
		}
	}
	return nil
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
			return nil, BadRequest("prompt", "prompt must be a string, an array of strings, or an array of token ids")
		}
		return tok.Encode(s), nil
	}
	if raw[0] != '[' {
		return nil, BadRequest("prompt", "prompt must be a string, an array of strings, or an array of token ids")
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, BadRequest("prompt", "prompt must be a string, an array of strings, or an array of token ids")
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
	var parts []object
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("must be a string or an array of content parts")
	}
	var b strings.Builder
	for i, part := range parts {
		typ, _ := asString(part["type"])
		if typ != "text" {
			return "", fmt.Errorf("part %d has type %q; only text parts are supported", i, typ)
		}
		text, ok := asString(part["text"])
		if !ok {
			return "", fmt.Errorf("part %d has no text string", i)
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(text)
	}
	return b.String(), nil
}
