package vllmapi

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// complete sends a completion with the SDK.
func complete(t *testing.T, c openai.Client, p openai.CompletionNewParams, opts ...option.RequestOption) *openai.Completion {
	t.Helper()
	p.Model = openai.CompletionNewParamsModel("llama-3-8b")
	resp, err := c.Completions.New(context.Background(), p, opts...)
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	return resp
}

// TestStopStrings: generation ends when the output contains a stop string,
// with finish_reason "stop", stop_reason the string, the text cut before it
// (or after it with include_stop_str_in_output), streamed or not.
func TestStopStrings(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero"})
	c := client(inst)
	prompt := openai.CompletionNewParamsPromptUnion{OfString: openai.String(promptText(20, 3))}
	full := complete(t, c, openai.CompletionNewParams{Prompt: prompt, MaxTokens: openai.Int(12)}).Choices[0].Text
	words := strings.Split(full, " ")
	if len(words) != 12 {
		t.Fatalf("base output %q has %d words, want 12", full, len(words))
	}
	// A stop string within one token, and one across a token boundary.
	within := " " + words[4]
	across := words[6][1:] + " " + words[7][:1]
	tests := []struct {
		name    string
		stop    []string
		include bool
		text    string
		tokens  int64
		reason  string
	}{
		{"within a token", []string{within}, false, strings.Join(words[:4], " "), 5, within},
		{"across tokens", []string{"zzzz", across}, false, strings.Join(words[:6], " ") + " " + words[6][:1], 8, across},
		{"included", []string{within}, true, strings.Join(words[:5], " "), 5, within},
		{"never matches", []string{"@@"}, false, full, 12, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []option.RequestOption{}
			if tt.include {
				opts = append(opts, option.WithJSONSet("include_stop_str_in_output", true))
			}
			p := openai.CompletionNewParams{Model: "llama-3-8b", Prompt: prompt, MaxTokens: openai.Int(12),
				Stop: openai.CompletionNewParamsStopUnion{OfStringArray: tt.stop}}
			resp := complete(t, c, p, opts...)
			ch := resp.Choices[0]
			if ch.Text != tt.text {
				t.Errorf("text %q, want %q", ch.Text, tt.text)
			}
			if resp.Usage.CompletionTokens != tt.tokens {
				t.Errorf("completion tokens %d, want %d", resp.Usage.CompletionTokens, tt.tokens)
			}
			wantFinish := openai.CompletionChoiceFinishReasonStop
			if tt.reason == "" {
				wantFinish = openai.CompletionChoiceFinishReasonLength
			}
			if ch.FinishReason != wantFinish {
				t.Errorf("finish_reason %q, want %q", ch.FinishReason, wantFinish)
			}
			if got := ch.JSON.ExtraFields["stop_reason"].Raw(); tt.reason != "" && got != `"`+tt.reason+`"` || tt.reason == "" && got != "null" {
				t.Errorf("stop_reason %s, want %q", got, tt.reason)
			}

			stream := c.Completions.NewStreaming(context.Background(), p, opts...)
			var text strings.Builder
			var finish string
			for stream.Next() {
				for _, sc := range stream.Current().Choices {
					if !tt.include && len(tt.stop) > 0 && strings.Contains(text.String()+sc.Text, tt.reason) && tt.reason != "" {
						t.Errorf("the stream sent the stop string %q", tt.reason)
					}
					text.WriteString(sc.Text)
					if sc.FinishReason != "" {
						finish = string(sc.FinishReason)
					}
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("%v: %s", err, errorBody(err))
			}
			if text.String() != tt.text || finish != string(wantFinish) {
				t.Errorf("streamed %q finish %q, want %q %q", text.String(), finish, tt.text, wantFinish)
			}
		})
	}
}

// TestCompletionLogprobs: logprobs=k gives every token's log probability
// and its k most likely alternatives, the chosen token first, in vLLM's
// shape, the same on every run.
func TestCompletionLogprobs(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero"})
	c := client(inst)
	p := openai.CompletionNewParams{Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(promptText(10, 4))},
		MaxTokens: openai.Int(6), Logprobs: openai.Int(3)}
	resp := complete(t, c, p)
	lp := resp.Choices[0].Logprobs
	if len(lp.Tokens) != 6 || len(lp.TokenLogprobs) != 6 || len(lp.TopLogprobs) != 6 || len(lp.TextOffset) != 6 {
		t.Fatalf("logprobs lengths %d %d %d %d, want 6", len(lp.Tokens), len(lp.TokenLogprobs), len(lp.TopLogprobs), len(lp.TextOffset))
	}
	if got := strings.Join(lp.Tokens, ""); got != resp.Choices[0].Text {
		t.Errorf("tokens join to %q, text is %q", got, resp.Choices[0].Text)
	}
	off := 0
	for i, tok := range lp.Tokens {
		if int(lp.TextOffset[i]) != off {
			t.Errorf("text_offset[%d] = %d, want %d", i, lp.TextOffset[i], off)
		}
		off += len(tok)
		top := lp.TopLogprobs[i]
		if len(top) != 3 {
			t.Errorf("top_logprobs[%d] has %d entries, want 3", i, len(top))
		}
		mass := 0.0
		for _, v := range top {
			if v > lp.TokenLogprobs[i]+1e-9 {
				t.Errorf("token %d: alternative %v more likely than the chosen %v", i, v, lp.TokenLogprobs[i])
			}
			mass += math.Exp(v)
		}
		if lp.TokenLogprobs[i] >= 0 || mass > 1+1e-6 {
			t.Errorf("token %d: logprob %v, top mass %v", i, lp.TokenLogprobs[i], mass)
		}
		if _, ok := top[tok]; !ok {
			t.Errorf("token %d %q not among its top_logprobs", i, tok)
		}
	}
	again := complete(t, c, p).Choices[0].Logprobs
	for i := range lp.TokenLogprobs {
		if again.TokenLogprobs[i] != lp.TokenLogprobs[i] {
			t.Errorf("token %d: logprob %v then %v; want deterministic", i, lp.TokenLogprobs[i], again.TokenLogprobs[i])
		}
	}
}

// TestChatLogprobs: chat logprobs in vLLM's shape, whole and streamed.
func TestChatLogprobs(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero"})
	c := client(inst)
	p := openai.ChatCompletionNewParams{Model: "llama-3-8b", MaxCompletionTokens: openai.Int(5),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there")},
		Logprobs: openai.Bool(true), TopLogprobs: openai.Int(2)}
	resp, err := c.Chat.Completions.New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	content := resp.Choices[0].Logprobs.Content
	if len(content) != 5 {
		t.Fatalf("%d logprob entries, want 5", len(content))
	}
	var text strings.Builder
	for i, e := range content {
		text.WriteString(e.Token)
		if len(e.TopLogprobs) != 2 || e.TopLogprobs[0].Token != e.Token || e.TopLogprobs[0].Logprob != e.Logprob {
			t.Errorf("entry %d: top_logprobs %+v, want 2 with the chosen token first", i, e.TopLogprobs)
		}
		if string(bytesOf(e.Bytes)) != e.Token || e.Logprob >= 0 {
			t.Errorf("entry %d: bytes %v logprob %v for %q", i, e.Bytes, e.Logprob, e.Token)
		}
	}
	if text.String() != resp.Choices[0].Message.Content {
		t.Errorf("tokens join to %q, content is %q", text.String(), resp.Choices[0].Message.Content)
	}
	stream := c.Chat.Completions.NewStreaming(context.Background(), p)
	var streamed []openai.ChatCompletionTokenLogprob
	for stream.Next() {
		for _, ch := range stream.Current().Choices {
			streamed = append(streamed, ch.Logprobs.Content...)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if len(streamed) != 5 {
		t.Fatalf("stream carried %d logprob entries, want 5", len(streamed))
	}
	for i := range streamed {
		if streamed[i].Token != content[i].Token || streamed[i].Logprob != content[i].Logprob {
			t.Errorf("streamed entry %d %+v differs from %+v", i, streamed[i], content[i])
		}
	}
}

func bytesOf(v []int64) []byte {
	b := make([]byte, len(v))
	for i, x := range v {
		b[i] = byte(x)
	}
	return b
}

// errorBody is an SDK error's response body, for failure messages.
func errorBody(err error) string {
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		return apiErr.RawJSON()
	}
	return ""
}

// TestChatStopString: a chat answer stops at a stop string too, streamed
// and whole, with stop_reason naming it.
func TestChatStopString(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero"})
	c := client(inst)
	p := openai.ChatCompletionNewParams{Model: "llama-3-8b", MaxCompletionTokens: openai.Int(10),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("stop me")}}
	full, err := c.Chat.Completions.New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	words := strings.Split(full.Choices[0].Message.Content, " ")
	stop := " " + words[3]
	p.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String(stop)}
	resp, err := c.Chat.Completions.New(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Join(words[:3], " ")
	ch := resp.Choices[0]
	if ch.Message.Content != want || ch.FinishReason != "stop" || ch.JSON.ExtraFields["stop_reason"].Raw() != `"`+stop+`"` {
		t.Errorf("content %q finish %q stop_reason %s, want %q stop %q", ch.Message.Content, ch.FinishReason, ch.JSON.ExtraFields["stop_reason"].Raw(), want, stop)
	}
	stream := c.Chat.Completions.NewStreaming(context.Background(), p)
	var text strings.Builder
	var finish string
	for stream.Next() {
		for _, sc := range stream.Current().Choices {
			text.WriteString(sc.Delta.Content)
			if sc.FinishReason != "" {
				finish = sc.FinishReason
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != want || finish != "stop" {
		t.Errorf("streamed %q finish %q, want %q stop", text.String(), finish, want)
	}
}
