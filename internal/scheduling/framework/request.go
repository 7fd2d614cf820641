package framework

// Request is what a scheduling cycle knows about one inference request. The
// router fills it once after parsing; plugins treat it as read-only.
type Request struct {
	// ID is the request id (also sent to engines as X-Request-Id).
	ID string
	// Model is the model name the client asked for.
	Model string
	// TargetModel is the model name the engine will be asked for: the base
	// model, or the LoRA adapter's name when Adapter is set.
	TargetModel string
	// Adapter is the LoRA adapter the request needs, or "".
	Adapter string
	// Headers are the request headers that routing may use, with lowercase
	// names.
	Headers map[string]string
	// SessionKey ties the requests of one session or user together (from a
	// configured header or the body's "user" field), or "".
	SessionKey string
	// Prompt is the content whose prefix the engines may have cached.
	Prompt Prompt
	// PromptTokens estimates the prompt's length in tokens.
	PromptTokens int
	// MaxTokens is the output limit the client asked for, or 0 if none.
	MaxTokens int
	// Stream reports whether the client asked for a streamed response.
	Stream bool
}

// Prompt is the prefix-bearing content of a request. For chat requests Text is
// the whole conversation rendered in order (roles and contents of all
// messages), so that a later turn shares the earlier turns' prefix.
type Prompt struct {
	// Text is the prompt or rendered conversation, when the client sent text:
	// all of it, or its head when TextBytes is larger.
	Text []byte
	// TextBytes is the whole text's length when Text holds only its head
	// (the router keeps the first 256 KiB of a longer prompt); 0 when Text
	// is whole. TextLen reads it.
	TextBytes int
	// TokenIDs holds the prompt's token ids when the client sent ids or a
	// tokenizer has run; nil otherwise.
	TokenIDs []uint32
}

// TextLen is the length of the whole text, of which Text may be the head.
func (p Prompt) TextLen() int { return max(len(p.Text), p.TextBytes) }
