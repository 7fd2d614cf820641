package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

const twoModels = `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  scrapeInterval: 50ms
  timeouts: {scrape: 3s}
  maxBodyBytes: 65536
  health: {failureThreshold: 2, successThreshold: 1}
endpoints:
  - {name: l0, url: "{{l0}}", model: llama, adapters: [sql-lora]}
  - {name: l1, url: "{{l1}}", model: llama}
  - {name: q0, url: "{{q0}}", model: qwen}
  - {name: dead, url: "http://127.0.0.1:1", model: ghost}
routes:
  - {model: llama, targets: [{pool: llama}]}
  - {model: qwen, targets: [{pool: qwen}]}
  - {model: sql, adapter: sql-lora, targets: [{pool: llama}]}
  - {model: ghost, targets: [{pool: ghost}]}
`

func TestRouterServesTwoModelsLoRAAndErrors(t *testing.T) {
	sims := map[string]*process{
		"l0": startSim(t, "l0", "llama", "zero", "--lora", "sql-lora"),
		"l1": startSim(t, "l1", "llama", "zero"),
		"q0": startSim(t, "q0", "qwen", "zero"),
	}
	doc := strings.Replace(twoModels, "  - {model: ghost, targets: [{pool: ghost}]}\n", "", 1)
	doc = strings.Replace(doc, `  - {name: dead, url: "http://127.0.0.1:1", model: ghost}`+"\n", "", 1)
	r := startRouter(t, doc, sims)
	c := client(r)
	ctx := context.Background()

	t.Run("models", func(t *testing.T) {
		page, err := c.Models.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if strings.Join(ids, ",") != "llama,qwen,sql" {
			t.Errorf("models %v", ids)
		}
	})
	t.Run("chat and completions on two models", func(t *testing.T) {
		for _, model := range []string{"llama", "qwen"} {
			chat, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model:     model,
				Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
				MaxTokens: openai.Int(5),
			})
			if err != nil {
				t.Fatal(err)
			}
			if chat.Model != model || chat.Usage.CompletionTokens != 5 || chat.Choices[0].Message.Content == "" {
				t.Errorf("chat %s: %+v", model, chat)
			}
			comp, err := c.Completions.New(ctx, openai.CompletionNewParams{
				Model:     openai.CompletionNewParamsModel(model),
				Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon a time")},
				MaxTokens: openai.Int(4),
			})
			if err != nil {
				t.Fatal(err)
			}
			if comp.Usage.CompletionTokens != 4 || comp.Choices[0].Text == "" {
				t.Errorf("completion %s: %+v", model, comp)
			}
		}
	})
	t.Run("streaming with usage", func(t *testing.T) {
		stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model:         "llama",
			Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("count")},
			MaxTokens:     openai.Int(8),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		chunks, usage := 0, int64(0)
		for stream.Next() {
			cur := stream.Current()
			if len(cur.Choices) > 0 && cur.Choices[0].Delta.Content != "" {
				chunks++
			}
			if cur.Usage.CompletionTokens > 0 {
				usage = cur.Usage.CompletionTokens
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if chunks == 0 || usage != 8 {
			t.Errorf("stream: %d content chunks, usage %d (want 8)", chunks, usage)
		}
		comp := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
			Model:         "qwen",
			Prompt:        openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: []int64{1, 2, 3, 4}},
			MaxTokens:     openai.Int(3),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		n := 0
		for comp.Next() {
			n++
		}
		if err := comp.Err(); err != nil || n == 0 {
			t.Errorf("completion stream: %d chunks, %v", n, err)
		}
	})
	t.Run("LoRA route", func(t *testing.T) {
		var resp *http.Response
		chat, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model:     "sql",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("SELECT")},
			MaxTokens: openai.Int(3),
		}, option.WithHeader("x-halyard-explain", "1"), option.WithResponseInto(&resp))
		if err != nil {
			t.Fatal(err)
		}
		if chat.Model != "sql-lora" || pickedEndpoint(resp) != "l0" {
			t.Errorf("LoRA request answered by model %q on %q, want sql-lora on l0", chat.Model, pickedEndpoint(resp))
		}
	})
	t.Run("errors", func(t *testing.T) {
		_, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-9", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || apiErr.Code != "model_not_found" {
			t.Errorf("unknown model: %v", err)
		}
		for _, tc := range []struct {
			body   string
			status int
			code   string
		}{
			{`{"model":"llama","messages":[`, 400, "invalid_json"},
			{`{"model":"llama","messages":"hi"}`, 400, "invalid_type"},
			{`{"model":"llama","prompt":"` + strings.Repeat("x", 70000) + `"}`, 413, "request_too_large"},
		} {
			resp, err := http.Post(r.URL()+"/v1/chat/completions", "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), `"code":"`+tc.code+`"`) {
				t.Errorf("%.40s: %d %s", tc.body, resp.StatusCode, b)
			}
		}
	})
}

func TestNoEndpointIs503(t *testing.T) {
	sims := map[string]*process{
		"l0": startSim(t, "l0", "llama", "zero"), "l1": startSim(t, "l1", "llama", "zero"), "q0": startSim(t, "q0", "qwen", "zero"),
	}
	doc := twoModels
	for name, s := range sims {
		doc = strings.ReplaceAll(doc, "{{"+name+"}}", s.URL())
	}
	// The ghost route's only endpoint never answers, so /ready stays 503;
	// start the router without waiting for readiness.
	path := t.TempDir() + "/c.yaml"
	if err := writeFile(path, doc); err != nil {
		t.Fatal(err)
	}
	r := start(t, "router", "router serving", "router", "--config", path, "--listen", "127.0.0.1:0")
	waitHTTP(t, r.URL()+"/health")
	c := client(r)
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{Model: "ghost", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Code != "no_endpoint_available" {
		t.Errorf("ghost model: %v", err)
	}
	resp, err := http.Get(r.URL() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(b), "ghost") {
		t.Errorf("/ready = %d %s, want 503 naming ghost", resp.StatusCode, b)
	}
}
