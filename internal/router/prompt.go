package router

import (
	"fmt"
	"strings"

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

// tokenize returns the prompt's token ids. Client-sent token ids are taken
// as they are.
func (p *promptTokenizer) tokenize(o *openai.Request) ([]uint32, error) {
	if o.PromptTokenIDs != nil {
		return o.PromptTokenIDs, nil
	}
	if o.Kind != openai.KindChat {
		if p.bos == "" {
			return p.tok.Encode(string(o.PromptText)), nil
		}
		return p.tok.Encode(p.bos + string(o.PromptText)), nil
	}
	msgs, err := o.Messages()
	if err != nil {
		return nil, fmt.Errorf("messages: %w", err)
	}
	text, err := renderChat(p.template, msgs)
	if err != nil {
		return nil, err
	}
	return p.tok.Encode(text), nil
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
