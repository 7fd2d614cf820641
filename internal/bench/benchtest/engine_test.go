package benchtest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestEngineSpeaksOpenAI checks the fake engine with the official SDK, so
// that the bench's client tests run against the real wire format.
func TestEngineSpeaksOpenAI(t *testing.T) {
	eng := (&Engine{Name: "e0"}).Start(t)
	c := openai.NewClient(option.WithBaseURL(eng.URL()+"/v1"), option.WithAPIKey("x"), option.WithMaxRetries(0))
	stream := c.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model:         "m",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("ab cd ef gh"), openai.UserMessage("ij kl")},
		MaxTokens:     openai.Int(4),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var text strings.Builder
	var usage openai.CompletionUsage
	for stream.Next() {
		ch := stream.Current()
		for _, choice := range ch.Choices {
			text.WriteString(choice.Delta.Content)
		}
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := text.String(); got != "t0 t1 t2 t3 " {
		t.Errorf("content %q", got)
	}
	if usage.PromptTokens != 6 || usage.CompletionTokens != 4 {
		t.Errorf("usage %+v, want 6 prompt and 4 completion tokens", usage)
	}
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
	})
	var apiErr *openai.Error
	if err == nil || !errors.As(err, &apiErr) || apiErr.StatusCode != 400 {
		t.Errorf("non-streaming request: %v, want a 400 OpenAI error", err)
	}
}
