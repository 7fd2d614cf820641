package vllmapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// post sends body to url and returns the response with its body read.
func post(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp, b
}

type errorFields struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}

func decodeError(t *testing.T, body []byte) errorFields {
	t.Helper()
	var eb struct {
		Error *errorFields `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == nil {
		t.Fatalf("body %s is not an error body: %v", body, err)
	}
	return *eb.Error
}

// goInternals are words that only a Go decoder's error text would contain.
var goInternals = []string{"Go struct", "Go value", "int64", "json: ", "generationRequest", "unmarshal"}

func assertNoGoInternals(t *testing.T, msg string) {
	t.Helper()
	for _, w := range goInternals {
		if strings.Contains(msg, w) {
			t.Errorf("message %q leaks Go internals (%q)", msg, w)
		}
	}
}

// TestJSONKeysAreCaseSensitive: vLLM (pydantic) and the router read JSON
// keys exactly; a key in another case is an unknown field, ignored.
func TestJSONKeysAreCaseSensitive(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero", LoRAs: []string{"sql-lora"}})
	t.Run("MODEL does not pick the adapter", func(t *testing.T) {
		resp, body := post(t, inst.URL+"/v1/completions", `{"model":"llama-3-8b","MODEL":"sql-lora","prompt":"hi","max_tokens":2}`)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var out completionResponse
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatal(err)
		}
		if out.Model != "llama-3-8b" {
			t.Errorf("served by %q, want the base model", out.Model)
		}
	})
	t.Run("Stream does not stream", func(t *testing.T) {
		resp, body := post(t, inst.URL+"/v1/completions", `{"model":"llama-3-8b","prompt":"hi","max_tokens":2,"Stream":true}`)
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/json" {
			t.Errorf("status %d, content type %q, want a JSON answer: %s", resp.StatusCode, ct, body)
		}
	})
	t.Run("Model is not model", func(t *testing.T) {
		resp, body := post(t, inst.URL+"/v1/completions", `{"Model":"llama-3-8b","prompt":"hi"}`)
		if resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
		}
		if e := decodeError(t, body); e.Param == nil || *e.Param != "model" {
			t.Errorf("error %+v, want one about model", e)
		}
	})
	t.Run("MAX_TOKENS is ignored", func(t *testing.T) {
		resp, body := post(t, inst.URL+"/v1/completions", `{"model":"llama-3-8b","prompt":"hi","MAX_TOKENS":3}`)
		var out completionResponse
		if err := json.Unmarshal(body, &out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		if out.Usage.CompletionTokens != DefaultMaxTokens {
			t.Errorf("%d tokens, want the default %d", out.Usage.CompletionTokens, DefaultMaxTokens)
		}
	})
	t.Run("chat message keys", func(t *testing.T) {
		resp, body := post(t, inst.URL+"/v1/chat/completions", `{"model":"llama-3-8b","messages":[{"Role":"user","content":"hi"}]}`)
		if resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400 for a message without role: %s", resp.StatusCode, body)
		}
		resp, body = post(t, inst.URL+"/v1/chat/completions", `{"model":"llama-3-8b","max_tokens":2,"stream":true,"Stream_Options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 200 || bytes.Contains(body, []byte(`"usage":{`)) {
			t.Errorf("Stream_Options was read as stream_options: %d %s", resp.StatusCode, body)
		}
	})
}

// TestNumericFieldsLikePydantic: integer fields take what pydantic's lax
// mode takes (integers, integral floats such as 1e1 or 10.0, numeric
// strings) and refuse the rest with pydantic's words, never Go's.
func TestNumericFieldsLikePydantic(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero"})
	accepted := []struct {
		name, value string
		want        int
	}{
		{"integer", `10`, 10},
		{"exponent", `1e1`, 10},
		{"integral float", `10.0`, 10},
		{"numeric string", `"10"`, 10},
		{"null is the default", `null`, DefaultMaxTokens},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(t, inst.URL+"/v1/completions", `{"model":"llama-3-8b","prompt":"hi","max_tokens":`+tt.value+`}`)
			if resp.StatusCode != 200 {
				t.Fatalf("max_tokens %s: status %d: %s", tt.value, resp.StatusCode, body)
			}
			var out completionResponse
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatal(err)
			}
			if out.Usage.CompletionTokens != tt.want {
				t.Errorf("max_tokens %s gave %d tokens, want %d", tt.value, out.Usage.CompletionTokens, tt.want)
			}
		})
	}
	refused := []struct {
		name, body, param, msg string
	}{
		{"fraction", `{"model":"llama-3-8b","prompt":"hi","max_tokens":10.5}`, "body.max_tokens", "Input should be a valid integer, got a number with a fractional part"},
		{"word", `{"model":"llama-3-8b","prompt":"hi","max_tokens":"ten"}`, "body.max_tokens", "Input should be a valid integer, unable to parse string as an integer"},
		{"array", `{"model":"llama-3-8b","prompt":"hi","max_tokens":[10]}`, "body.max_tokens", "Input should be a valid integer"},
		{"infinite", `{"model":"llama-3-8b","prompt":"hi","max_tokens":1e400}`, "body.max_tokens", "Input should be a finite number"},
		{"min_tokens null", `{"model":"llama-3-8b","prompt":"hi","min_tokens":null}`, "body.min_tokens", "Input should be a valid integer"},
		{"stream word", `{"model":"llama-3-8b","prompt":"hi","stream":"maybe"}`, "body.stream", "Input should be a valid boolean, unable to interpret input"},
		{"model number", `{"model":7,"prompt":"hi"}`, "body.model", "Input should be a valid string"},
		{"seed too large", `{"model":"llama-3-8b","prompt":"hi","seed":9223372036854775808}`, "body.seed", "Input should be less than or equal to 9223372036854775807"},
		{"not an object", `[1,2,3]`, "body", "Input should be a valid dictionary or object to extract fields from"},
		{"malformed", `{"model":"llama-3-8b","prompt":`, "body", "JSON decode error"},
		{"trailing data", `{"model":"llama-3-8b","prompt":"a"} {}`, "body", "JSON decode error"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(t, inst.URL+"/v1/completions", tt.body)
			if resp.StatusCode != 400 {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			e := decodeError(t, body)
			if !strings.Contains(e.Message, tt.msg) || !strings.HasPrefix(e.Message, "1 validation error:") {
				t.Errorf("message %q, want pydantic's %q", e.Message, tt.msg)
			}
			if e.Param == nil || !strings.HasPrefix(*e.Param, tt.param) {
				t.Errorf("param %v, want %q", e.Param, tt.param)
			}
			if e.Type != "Bad Request" || e.Code != 400 {
				t.Errorf("type %q code %d, want vLLM's Bad Request 400", e.Type, e.Code)
			}
			assertNoGoInternals(t, e.Message)
		})
	}
	t.Run("stream as a string", func(t *testing.T) {
		resp, body := post(t, inst.URL+"/v1/completions", `{"model":"llama-3-8b","prompt":"hi","max_tokens":2,"stream":"true"}`)
		if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
			t.Errorf("status %d, content type %q, want a stream (pydantic reads \"true\" as true): %s", resp.StatusCode, ct, body)
		}
	})
}

// TestContextLengthMessage: the prompt alone over the context is said in
// vLLM's words, naming the prompt's length, not "0 in the completion".
func TestContextLengthMessage(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero", MaxModelLen: 100})
	tests := []struct {
		name, body, want string
	}{
		{
			"prompt alone", `{"model":"llama-3-8b","prompt":"` + promptText(120, 1) + `"}`,
			"You passed 120 input tokens and requested 1 output tokens. However, the model's context length is only 100 tokens, resulting in a maximum input length of 99 tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=120)",
		},
		{
			"prompt plus max_tokens", `{"model":"llama-3-8b","prompt":"` + promptText(60, 1) + `","max_tokens":50}`,
			"You passed 60 input tokens and requested 50 output tokens. However, the model's context length is only 100 tokens, resulting in a maximum input length of 50 tokens. Please reduce the length of the input prompt. (parameter=input_tokens, value=60)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := post(t, inst.URL+"/v1/completions", tt.body)
			if resp.StatusCode != 400 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			e := decodeError(t, body)
			if e.Message != tt.want {
				t.Errorf("message\n got %q\nwant %q", e.Message, tt.want)
			}
			if e.Type != "BadRequestError" || e.Param == nil || *e.Param != "input_tokens" {
				t.Errorf("type %q param %v, want BadRequestError on input_tokens", e.Type, e.Param)
			}
		})
	}
}

// TestWrongMethod: a known path with another method is FastAPI's 405 with
// an Allow header, as vLLM answers; an unknown path its 404.
func TestWrongMethod(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero"})
	tests := []struct {
		method, path string
		status       int
		allow, body  string
	}{
		{http.MethodGet, "/v1/completions", 405, "POST", `{"detail":"Method Not Allowed"}`},
		{http.MethodPut, "/v1/chat/completions", 405, "POST", `{"detail":"Method Not Allowed"}`},
		{http.MethodPost, "/health", 405, "GET, HEAD", `{"detail":"Method Not Allowed"}`},
		{http.MethodDelete, "/metrics", 405, "GET, HEAD", `{"detail":"Method Not Allowed"}`},
		{http.MethodPut, "/admin/faults", 405, "GET, HEAD, POST", `{"detail":"Method Not Allowed"}`},
		{http.MethodGet, "/v1/nothing", 404, "", `{"detail":"Not Found"}`},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, inst.URL+tt.path, strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow %q, want %q", got, tt.allow)
			}
			if got := strings.TrimSpace(string(b)); got != tt.body {
				t.Errorf("body %s, want %s", got, tt.body)
			}
		})
	}
}

// TestLoRAInfoOnlyWithLoRA: vllm:lora_requests_info carries vLLM's three
// labels and is exposed only when LoRA is enabled.
func TestLoRAInfoOnlyWithLoRA(t *testing.T) {
	t.Run("without LoRA", func(t *testing.T) {
		inst := startSim(t, Spec{Profile: "zero"})
		if _, ok := scrape(t, inst)["vllm:lora_requests_info"]; ok {
			t.Error("vllm:lora_requests_info exposed without LoRA")
		}
	})
	check := func(t *testing.T, inst *Instance) {
		t.Helper()
		fams := scrape(t, inst)
		fam, ok := fams["vllm:lora_requests_info"]
		if !ok {
			t.Fatal("vllm:lora_requests_info missing with LoRA enabled")
		}
		var names []string
		for _, l := range fam.GetMetric()[0].GetLabel() {
			names = append(names, l.GetName())
		}
		if diff := cmp.Diff([]string{"max_lora", "running_lora_adapters", "waiting_lora_adapters"}, names); diff != "" {
			t.Errorf("labels (-want +got):\n%s", diff)
		}
	}
	t.Run("with --lora", func(t *testing.T) {
		check(t, startSim(t, Spec{Profile: "zero", LoRAs: []string{"sql"}}))
	})
	t.Run("with --enable-lora", func(t *testing.T) {
		check(t, startSim(t, Spec{Profile: "zero", EnableLoRA: true}))
	})
	t.Run("after a runtime load", func(t *testing.T) {
		inst := startSim(t, Spec{Profile: "zero"})
		if status, body := postJSON(t, inst.URL+"/v1/load_lora_adapter", `{"lora_name":"a","lora_path":"/a"}`); status != 200 {
			t.Fatalf("load: %d %s", status, body)
		}
		check(t, inst)
	})
}

// TestEmptySamplingFeaturesAccepted: the empty forms of logprobs,
// top_logprobs and stop, which SDKs send by default, are not refused.
func TestEmptySamplingFeaturesAccepted(t *testing.T) {
	inst := startSim(t, Spec{Profile: "zero"})
	for _, body := range []string{
		`{"model":"llama-3-8b","prompt":"hi","max_tokens":2,"logprobs":null,"stop":null}`,
		`{"model":"llama-3-8b","prompt":"hi","max_tokens":2,"stop":[]}`,
		`{"model":"llama-3-8b","prompt":"hi","max_tokens":2,"stop":""}`,
	} {
		if resp, b := post(t, inst.URL+"/v1/completions", body); resp.StatusCode != 200 {
			t.Errorf("%s: status %d: %s", body, resp.StatusCode, b)
		}
	}
	body := `{"model":"llama-3-8b","max_tokens":2,"logprobs":false,"top_logprobs":0,"messages":[{"role":"user","content":"hi"}]}`
	if resp, b := post(t, inst.URL+"/v1/chat/completions", body); resp.StatusCode != 200 {
		t.Errorf("%s: status %d: %s", body, resp.StatusCode, b)
	}
}
