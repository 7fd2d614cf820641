package vllmapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
)

// TestBadInput sends malformed and invalid requests over HTTP and checks
// vLLM's error shape: {"error":{"message","type","param","code"}} with the
// right status. The engine must keep serving afterwards.
func TestBadInput(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero", MaxModelLen: 1000})
	long := promptText(1000, 1)
	tests := []struct {
		name       string
		path       string
		body       string
		wantStatus int
		wantType   string
		wantParam  string
		wantMsg    string
	}{
		{"malformed JSON", "/v1/completions", `{"model":"llama-3-8b","prompt":`, 400, "Bad Request", "body.31", "'msg': 'JSON decode error'"},
		{"not an object", "/v1/completions", `[1,2,3]`, 400, "Bad Request", "body", "'type': 'model_attributes_type'"},
		{"trailing data", "/v1/completions", `{"model":"llama-3-8b","prompt":"a"} {}`, 400, "Bad Request", "body.37", "'ctx': {'error': 'Extra data'}"},
		{"missing model", "/v1/completions", `{"prompt":"hello"}`, 400, "BadRequestError", "model", "'model' field is required"},
		{"missing prompt", "/v1/completions", `{"model":"llama-3-8b"}`, 400, "BadRequestError", "prompt", "'prompt' field is required"},
		{"empty prompt", "/v1/completions", `{"model":"llama-3-8b","prompt":""}`, 400, "BadRequestError", "prompt", "must not be empty"},
		{"negative max_tokens", "/v1/completions", `{"model":"llama-3-8b","prompt":"hi","max_tokens":-1}`, 400, "BadRequestError", "max_tokens", "max_tokens must be at least 1, got -1."},
		{"zero max_completion_tokens", "/v1/chat/completions", `{"model":"llama-3-8b","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":0}`, 400, "BadRequestError", "max_completion_tokens", "at least 1"},
		{"max_tokens not a number", "/v1/completions", `{"model":"llama-3-8b","prompt":"hi","max_tokens":"ten"}`, 400, "Bad Request", "body.max_tokens", "'loc': ('body', 'max_tokens')"},
		{"prompt over context", "/v1/completions", `{"model":"llama-3-8b","prompt":"` + long + `"}`, 400, "BadRequestError", "input_tokens", "You passed 1000 input tokens and requested 1 output tokens. However, the model's context length is only 1000 tokens"},
		{"prompt plus max_tokens over context", "/v1/completions", `{"model":"llama-3-8b","prompt":"hi","max_tokens":1000}`, 400, "BadRequestError", "input_tokens", "You passed 1 input tokens and requested 1000 output tokens."},
		{"token id out of vocabulary", "/v1/completions", `{"model":"llama-3-8b","prompt":[1,2,999999999]}`, 400, "BadRequestError", "prompt", "out of vocabulary"},
		{"negative token id", "/v1/completions", `{"model":"llama-3-8b","prompt":[-1]}`, 400, "BadRequestError", "prompt", "out of vocabulary"},
		{"batched prompts", "/v1/completions", `{"model":"llama-3-8b","prompt":["a","b"]}`, 400, "BadRequestError", "prompt", "batched prompts"},
		{"n above 1", "/v1/completions", `{"model":"llama-3-8b","prompt":"a","n":2}`, 400, "BadRequestError", "n", "n must be 1"},
		{"stream_options without stream", "/v1/completions", `{"model":"llama-3-8b","prompt":"a","stream_options":{"include_usage":true}}`, 400, "BadRequestError", "stream_options", "only be set when stream"},
		{"no messages", "/v1/chat/completions", `{"model":"llama-3-8b","messages":[]}`, 400, "BadRequestError", "messages", "non-empty"},
		{"message without role", "/v1/chat/completions", `{"model":"llama-3-8b","messages":[{"content":"x"}]}`, 400, "BadRequestError", "messages", "role is required"},
		{"image part", "/v1/chat/completions", `{"model":"llama-3-8b","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "BadRequestError", "messages", "only text parts"},
		{"prompt in chat", "/v1/chat/completions", `{"model":"llama-3-8b","prompt":"x","messages":[{"role":"user","content":"x"}]}`, 400, "BadRequestError", "prompt", "take 'messages'"},
		{"unknown model", "/v1/completions", `{"model":"gpt-9","prompt":"hi"}`, 404, "NotFoundError", "model", "The model `gpt-9` does not exist."},
		{"unknown model in chat", "/v1/chat/completions", `{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}`, 404, "NotFoundError", "model", "does not exist"},
		{"bad lora body", "/v1/load_lora_adapter", `{"lora_name":`, 400, "Bad Request", "body.13", "JSON decode error"},
		{"lora name not a string", "/v1/load_lora_adapter", `{"lora_name":7,"lora_path":"/a"}`, 400, "Bad Request", "body.lora_name", "Input should be a valid string"},
		{"lora keys in another case", "/v1/load_lora_adapter", `{"LORA_NAME":"a","LoRA_Path":"/a"}`, 400, "BadRequestError", "", "Both 'lora_name' and 'lora_path' must be provided."},
		{"tokenize prompt not a string", "/tokenize", `{"prompt":[1]}`, 400, "Bad Request", "body.prompt", "Input should be a valid string"},
		{"logprobs refused", "/v1/completions", `{"model":"llama-3-8b","prompt":"a","logprobs":2}`, 400, "BadRequestError", "logprobs", "does not implement 'logprobs'"},
		{"chat logprobs refused", "/v1/chat/completions", `{"model":"llama-3-8b","messages":[{"role":"user","content":"x"}],"logprobs":true}`, 400, "BadRequestError", "logprobs", "does not implement 'logprobs'"},
		{"top_logprobs refused", "/v1/chat/completions", `{"model":"llama-3-8b","messages":[{"role":"user","content":"x"}],"top_logprobs":3}`, 400, "BadRequestError", "top_logprobs", "does not implement 'top_logprobs'"},
		{"stop refused", "/v1/completions", `{"model":"llama-3-8b","prompt":"a","stop":["\n"]}`, 400, "BadRequestError", "stop", "does not implement 'stop'"},
		{"bad faults", "/admin/faults", `{"errorRate":2}`, 400, "BadRequestError", "", "errorRate: must be in [0, 1]"},
		{"unknown fault field", "/admin/faults", `{"errRate":0.5}`, 400, "BadRequestError", "", "unknown field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := postJSON(t, inst.URL+tt.path, tt.body)
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %s)", status, tt.wantStatus, body)
			}
			var eb struct {
				Error struct {
					Message *string `json:"message"`
					Type    *string `json:"type"`
					Param   *string `json:"param"`
					Code    *int    `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("error body %s is not JSON: %v", body, err)
			}
			e := eb.Error
			if e.Message == nil || e.Type == nil || e.Code == nil {
				t.Fatalf("error body %s lacks message, type or code", body)
			}
			if !strings.Contains(*e.Message, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", *e.Message, tt.wantMsg)
			}
			if *e.Type != tt.wantType || *e.Code != tt.wantStatus {
				t.Errorf("type %q code %d, want %q %d", *e.Type, *e.Code, tt.wantType, tt.wantStatus)
			}
			gotParam := ""
			if e.Param != nil {
				gotParam = *e.Param
			}
			if gotParam != tt.wantParam {
				t.Errorf("param %q, want %q", gotParam, tt.wantParam)
			}
			if !strings.Contains(string(body), `"param":`) {
				t.Errorf("body %s has no param key (vLLM writes null)", body)
			}
		})
	}
	// The SDK sees the same errors as typed errors, and the engine still
	// serves.
	c := client(inst)
	_, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
		Model:     openai.CompletionNewParamsModel("llama-3-8b"),
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")},
		MaxTokens: openai.Int(-5),
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != "max_tokens" {
		t.Errorf("SDK error = %v, want a 400 on max_tokens", err)
	}
	if _, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModel("llama-3-8b"),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("still alive")},
	}); err != nil {
		t.Errorf("engine stopped serving after bad input: %v", err)
	}
}

func TestBodyTooLarge(t *testing.T) {
	eng := newVirtualServer(t, Options{MaxBodyBytes: 1024})
	rec := doRequest(eng, http.MethodPost, "/v1/completions", `{"model":"llama-3-8b","prompt":"`+strings.Repeat("a ", 1000)+`"}`)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", rec.Code)
	}
}
