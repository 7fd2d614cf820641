package router

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// promptTokenizer turns a request's prompt into the token ids its engine
// will see: the chat template rendered, the BOS text put before completion
// prompts, both tokenised with the engine's tokenizer (models[] of the
// config).
type promptTokenizer struct {
	tok      tokenizer.Tokenizer
	template string
	bos      string
}

// tokenizeHeadBytes bounds the prompt text the router tokenises: a longer
// prompt is tokenised on its first tokenizeHeadBytes (cut between two
// words) and the rest of its length is estimated at the head's tokens per
// byte. 256 KiB is about 64k tokens of English, twice the 32k tokens the
// prefix-cache scorer hashes by default (maxPromptBlocks), so routing sees
// the same blocks; a 1M-token prompt costs a tokenizer 4 % of its full
// encoding (BenchmarkLongPrompt, docs/benchmarks.md).
const tokenizeHeadBytes = 256 << 10

// tokenize returns the prompt's token ids and its length in tokens: the
// ids of all of it when it is at most tokenizeHeadBytes of text, else of
// its head, with the length estimated. textBytes is the length of the
// whole prompt text, of which o.PromptText may be the head
// (framework.Prompt.TextBytes). Client-sent token ids are taken as they
// are.
func (p *promptTokenizer) tokenize(o *openai.Request, textBytes int) ([]uint32, int, error) {
	if o.PromptTokenIDs != nil {
		return o.PromptTokenIDs, len(o.PromptTokenIDs), nil
	}
	var text string
	var total int
	if o.Kind != openai.KindChat {
		text, total = p.bos+string(o.PromptText), len(p.bos)+max(textBytes, len(o.PromptText))
	} else {
		// The messages are rendered with their contents cut once
		// tokenizeHeadBytes+2 bytes of content are decoded (headCut
		// reads up to limit+1), so the rendered text agrees with the
		// whole rendering past the cut: the same cut, the same ids; the
		// whole length adds back what was cut.
		msgs, err := o.MessagesHead(tokenizeHeadBytes + 2)
		if err != nil {
			return nil, 0, fmt.Errorf("messages: %w", err)
		}
		if text, err = renderChat(p.template, msgs); err != nil {
			return nil, 0, err
		}
		total = len(text)
		for _, m := range msgs {
			if m.ContentBytes > len(m.Content) {
				total += m.ContentBytes - len(m.Content)
			}
		}
	}
	if total <= tokenizeHeadBytes {
		ids := p.tok.Encode(text)
		return ids, len(ids), nil
	}
	cut := headCut(text, tokenizeHeadBytes)
	ids := p.tok.Encode(text[:cut])
	return ids, estimateTokens(len(ids), cut, total), nil
}

// countText is the pseudo tokenizer's count of a prompt's text (no
// tokenizer configured), of which text may be the head and total is the
// length: exact up to tokenizeHeadBytes, past it the head's count
// extrapolated, as tokenize does, so that a long prompt's count costs a
// bounded time.
func countText(text []byte, total int) int {
	if total <= tokenizeHeadBytes {
		return tokenizer.Pseudo{}.CountBytes(text)
	}
	cut := headCut(text, tokenizeHeadBytes)
	return estimateTokens(tokenizer.Pseudo{}.CountBytes(text[:cut]), cut, total)
}

// headCut returns where to cut text to at most limit bytes: before a space
// that follows a non-space and precedes one (" word" starts a piece for the
// BPE tokenizers' pre-splitting, and for the pseudo tokenizer), so the
// head's ids are the full text's first ids; failing that within 256 bytes,
// at the start of a UTF-8 character.
func headCut[T string | []byte](text T, limit int) int {
	if limit >= len(text) {
		return len(text)
	}
	for i := limit; i > 0 && i > limit-256; i-- {
		if text[i] == ' ' && !isSpaceByte(text[i-1]) && i+1 < len(text) && !isSpaceByte(text[i+1]) {
			return i
		}
	}
	i := limit
	for i > 0 && !utf8.RuneStart(text[i]) {
		i--
	}
	return i
}

func isSpaceByte(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// estimateTokens extrapolates a text of total bytes from a head of
// headBytes that has headTokens tokens.
func estimateTokens(headTokens, headBytes, total int) int {
	if headBytes <= 0 {
		return headTokens
	}
	return headTokens + int(math.Round(float64(total-headBytes)*float64(headTokens)/float64(headBytes)))
}

// renderChat renders messages with a chat template of the config
// (config.ChatTemplate*), ending with the assistant's turn, as the engine
// does before tokenising. Text parts of a multi-part content are joined
// with newlines, as vLLM and halyard sim join them.
func renderChat(template string, msgs []openai.Message) (string, error) {
	var b strings.Builder
	switch template {
	case config.ChatTemplateLlama3:
		b.WriteString("<|begin_of_text|>")
	case config.ChatTemplateSim, config.ChatTemplateChatML:
	default:
		return "", fmt.Errorf("unknown chat template %q", template)
	}
	for _, m := range msgs {
		text := m.Content
		switch template {
		case config.ChatTemplateSim:
			b.WriteString("<|" + m.Role + "|>\n" + text + "\n")
		case config.ChatTemplateLlama3:
			b.WriteString("<|start_header_id|>" + m.Role + "<|end_header_id|>\n\n" + text + "<|eot_id|>")
		case config.ChatTemplateChatML:
			b.WriteString("<|im_start|>" + m.Role + "\n" + text + "<|im_end|>\n")
		}
	}
	switch template {
	case config.ChatTemplateSim:
		b.WriteString("<|assistant|>\n")
	case config.ChatTemplateLlama3:
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	case config.ChatTemplateChatML:
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String(), nil
}
