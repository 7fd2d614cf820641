package openai

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		kind Kind
		body string
		want *Request
	}{
		{
			name: "chat with usage",
			kind: KindChat,
			body: `{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":7,"user":"u1"}`,
			want: &Request{Kind: KindChat, Model: "m", Stream: true, IncludeUsage: true, MaxTokens: 7, User: "u1", PromptText: []byte("system: be brief\nuser: hi\n")},
		},
		{
			name: "empty stream_options means usage, as vLLM",
			kind: KindChat,
			body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{}}`,
			want: &Request{Kind: KindChat, Model: "m", Stream: true, IncludeUsage: true, PromptText: []byte("user: hi\n")},
		},
		{
			name: "null include_usage means none",
			kind: KindChat,
			body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":null}}`,
			want: &Request{Kind: KindChat, Model: "m", Stream: true, PromptText: []byte("user: hi\n")},
		},
		{
			name: "chat content parts and null content",
			kind: KindChat,
			body: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]},{"role":"assistant","content":null,"tool_calls":[]}]}`,
			want: &Request{Kind: KindChat, Model: "m", PromptText: []byte("user: ab\nassistant: \n")},
		},
		{
			name: "max_completion_tokens wins",
			kind: KindChat,
			body: `{"max_tokens":5,"max_completion_tokens":9,"model":"m","messages":[{"role":"user","content":"x"}],"stream":null}`,
			want: &Request{Kind: KindChat, Model: "m", MaxTokens: 9, PromptText: []byte("user: x\n")},
		},
		{
			name: "escaped key and model",
			kind: KindChat,
			body: `{"mod\u0065l":"lla\u006da","messages":[{"role":"user","content":"\u00e9"}]}`,
			want: &Request{Kind: KindChat, Model: "llama", PromptText: []byte("user: é\n")},
		},
		{
			name: "completion string",
			kind: KindCompletion,
			body: `{"model":"m","prompt":"once upon","max_tokens":1e2}`,
			want: &Request{Kind: KindCompletion, Model: "m", MaxTokens: 100, PromptText: []byte("once upon")},
		},
		{
			name: "completion strings",
			kind: KindCompletion,
			body: `{"model":"m","prompt":["a","b"]}`,
			want: &Request{Kind: KindCompletion, Model: "m", PromptText: []byte("a\nb")},
		},
		{
			name: "completion token ids",
			kind: KindCompletion,
			body: `{"model":"m","prompt":[1,2,3]}`,
			want: &Request{Kind: KindCompletion, Model: "m", PromptTokenIDs: []uint32{1, 2, 3}},
		},
		{
			name: "completion batches of token ids",
			kind: KindCompletion,
			body: `{"model":"m","prompt":[[1,2],[3]]}`,
			want: &Request{Kind: KindCompletion, Model: "m", PromptTokenIDs: []uint32{1, 2, 3}},
		},
		{
			name: "messages ignored on completions",
			kind: KindCompletion,
			body: `{"model":"m","prompt":"p","messages":5}`,
			want: &Request{Kind: KindCompletion, Model: "m", PromptText: []byte("p")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.kind, []byte(tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.want.Raw = []byte(tt.body)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(Request{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		kind  Kind
		body  string
		param string
		code  string
	}{
		{"empty", KindChat, ``, "", CodeInvalidJSON},
		{"truncated", KindChat, `{"model":"m",`, "", CodeInvalidJSON},
		{"array body", KindChat, `[1]`, "", CodeInvalidJSON},
		{"string body", KindCompletion, `"x"`, "", CodeInvalidJSON},
		{"no model", KindChat, `{"messages":[{"role":"user","content":"x"}]}`, "model", CodeMissing},
		{"empty model", KindChat, `{"model":"","messages":[{"role":"user","content":"x"}]}`, "model", CodeMissing},
		{"model number", KindChat, `{"model":3,"messages":[]}`, "model", CodeInvalidType},
		{"no messages", KindChat, `{"model":"m"}`, "messages", CodeMissing},
		{"messages object", KindChat, `{"model":"m","messages":{}}`, "messages", CodeInvalidType},
		{"messages empty", KindChat, `{"model":"m","messages":[]}`, "messages", CodeInvalidValue},
		{"message not object", KindChat, `{"model":"m","messages":[1]}`, "messages", CodeInvalidType},
		{"message without role", KindChat, `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role", CodeMissing},
		{"content number", KindChat, `{"model":"m","messages":[{"role":"user","content":1}]}`, "messages[0].content", CodeInvalidType},
		{"stream string", KindChat, `{"model":"m","stream":"yes","messages":[{"role":"user","content":"x"}]}`, "stream", CodeInvalidType},
		{"stream_options array", KindChat, `{"model":"m","stream_options":[],"messages":[{"role":"user","content":"x"}]}`, "stream_options", CodeInvalidType},
		{"include_usage string", KindChat, `{"model":"m","stream_options":{"include_usage":"1"},"messages":[{"role":"user","content":"x"}]}`, "stream_options.include_usage", CodeInvalidType},
		{"negative max_tokens", KindChat, `{"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}`, "max_tokens", CodeInvalidValue},
		{"fractional max_tokens", KindChat, `{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"x"}]}`, "max_tokens", CodeInvalidType},
		{"string max_completion_tokens", KindChat, `{"model":"m","max_completion_tokens":"9","messages":[{"role":"user","content":"x"}]}`, "max_completion_tokens", CodeInvalidType},
		{"user number", KindChat, `{"model":"m","user":1,"messages":[{"role":"user","content":"x"}]}`, "user", CodeInvalidType},
		{"no prompt", KindCompletion, `{"model":"m"}`, "prompt", CodeMissing},
		{"prompt object", KindCompletion, `{"model":"m","prompt":{}}`, "prompt", CodeInvalidType},
		{"prompt empty", KindCompletion, `{"model":"m","prompt":[]}`, "prompt", CodeInvalidValue},
		{"prompt mixed", KindCompletion, `{"model":"m","prompt":["a",1]}`, "prompt", CodeInvalidType},
		{"prompt negative id", KindCompletion, `{"model":"m","prompt":[-1]}`, "prompt", CodeInvalidValue},
		{"prompt huge id", KindCompletion, `{"model":"m","prompt":[[99999999999]]}`, "prompt", CodeInvalidValue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.kind, []byte(tt.body))
			if err == nil {
				t.Fatal("Parse accepted the body")
			}
			if err.Status != http.StatusBadRequest || err.Type != TypeInvalidRequest || err.Param != tt.param || err.Code != tt.code {
				t.Errorf("got status %d type %q param %q code %q (%s); want 400 %q %q %q", err.Status, err.Type, err.Param, err.Code, err.Message, TypeInvalidRequest, tt.param, tt.code)
			}
			var body struct {
				Error struct {
					Message string  `json:"message"`
					Type    string  `json:"type"`
					Param   *string `json:"param"`
					Code    *string `json:"code"`
				} `json:"error"`
			}
			if jerr := json.Unmarshal(err.Body(), &body); jerr != nil || body.Error.Message == "" || body.Error.Code == nil || *body.Error.Code != tt.code {
				t.Errorf("error body %s does not carry the error (%v)", err.Body(), jerr)
			}
		})
	}
}

// TestWithModelPreservesBytes rewrites the model of an oddly formatted body
// and compares the result byte for byte with a golden file.
func TestWithModelPreservesBytes(t *testing.T) {
	in, err := os.ReadFile("testdata/odd-body.json")
	if err != nil {
		t.Fatal(err)
	}
	r, perr := Parse(KindChat, in)
	if perr != nil {
		t.Fatal(perr)
	}
	if got := r.WithModel(r.Model); &got[0] != &in[0] {
		t.Error("WithModel with the same model copied the body")
	}
	got := r.WithModel(`sql-lora "v2"`)
	want, err := os.ReadFile("testdata/odd-body.rewritten.json")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestFindUsage(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want Usage
		ok   bool
	}{
		{"chunk without usage", `{"id":"x","choices":[{"delta":{"content":"usage"}}]}`, Usage{}, false},
		{"null usage", `{"id":"x","usage":null}`, Usage{}, false},
		{"usage", `{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`, Usage{PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7}, true},
		{"not json", `{"usage":`, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FindUsage([]byte(tt.doc))
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	u, _ := FindUsage([]byte(`{"usage":{"prompt_tokens":3,"prompt_tokens_details":{"cached_tokens":2}}}`))
	if u.CachedTokens() != 2 {
		t.Errorf("cached tokens = %d, want 2", u.CachedTokens())
	}
}

func TestErrorShapes(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"not found", ModelNotFound("x"), `{"error":{"message":"The model ` + "`x`" + ` does not exist or you do not have access to it.","type":"invalid_request_error","param":"model","code":"model_not_found"}}`},
		{"too large", TooLarge(10), `{"error":{"message":"request body is larger than the limit of 10 bytes","type":"invalid_request_error","param":null,"code":"request_too_large"}}`},
		{"unavailable", Unavailable("no"), `{"error":{"message":"no","type":"service_unavailable_error","param":null,"code":"no_endpoint_available"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, string(tt.err.Body())); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if sse := string(tt.err.SSE()); sse != "data: "+tt.want+"\n\n" {
				t.Errorf("SSE = %q", sse)
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	chat := []byte(`{"model":"llama","messages":[{"role":"system","content":"You are a helpful assistant. Answer briefly and precisely."},{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris."},{"role":"user","content":[{"type":"text","text":"And of Italy?"}]}],"max_tokens":64,"stream":true,"stream_options":{"include_usage":true},"temperature":0.2}`)
	b.Run("chat", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(chat)))
		for b.Loop() {
			if _, err := Parse(KindChat, chat); err != nil {
				b.Fatal(err)
			}
		}
	})
	// A 1M-token completion prompt as text (about 4 MiB), with the escapes
	// (quotes, newlines) that real text carries.
	long, _ := json.Marshal(map[string]any{"model": "llama", "prompt": strings.Repeat("the \"quick\" brown fox\njumps ", 1<<17), "max_tokens": 4})
	b.Run("completion-4MiB", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(long)))
		for b.Loop() {
			if _, err := Parse(KindCompletion, long); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same, keeping a 256 KiB head of the text, as the router does.
	b.Run("completion-4MiB-head", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(long)))
		for b.Loop() {
			if _, err := ParseHead(KindCompletion, long, 256<<10); err != nil {
				b.Fatal(err)
			}
		}
	})
	resp := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Rome."},"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"total_tokens":42,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":32}}}`)
	b.Run("usage", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := FindUsage(resp); !ok {
				b.Fatal("no usage")
			}
		}
	})
}
