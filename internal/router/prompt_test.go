package router

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

const cl100k = "../tokenizer/testdata/cl100k_base.tiktoken"

func parse(t testing.TB, kind openai.Kind, body string) *openai.Request {
	t.Helper()
	o, err := openai.Parse(kind, []byte(body))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return o
}

// TestChatTemplatesGolden renders one conversation (string and multi-part
// contents) with every template and compares with testdata.
func TestChatTemplatesGolden(t *testing.T) {
	body := `{"model":"m","messages":[
		{"role":"system","content":"You are terse."},
		{"role":"user","content":[{"type":"text","text":"Part one."},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"Part two."}]},
		{"role":"assistant","content":"Yes."},
		{"role":"user","content":null}]}`
	msgs, err := parse(t, openai.KindChat, body).Messages()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, tpl := range []string{config.ChatTemplateSim, config.ChatTemplateLlama3, config.ChatTemplateChatML} {
		text, err := renderChat(tpl, msgs)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&out, "== %s\n%s\n", tpl, text)
	}
	golden := "testdata/chat-templates.golden"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (UPDATE_GOLDEN=1 writes it)", err)
	}
	if diff := cmp.Diff(string(want), out.String()); diff != "" {
		t.Errorf("%s (-want +got):\n%s", golden, diff)
	}
	if _, err := renderChat("jinja", msgs); err == nil {
		t.Error("an unknown template rendered")
	}
}

func TestPromptTokenizer(t *testing.T) {
	bpe, err := tokenizer.Load(cl100k)
	if err != nil {
		t.Fatal(err)
	}
	pseudo := tokenizer.Pseudo{}
	tests := []struct {
		name string
		pt   promptTokenizer
		kind openai.Kind
		body string
		want []uint32
	}{
		{"completion, pseudo", promptTokenizer{tok: pseudo, template: config.ChatTemplateSim}, openai.KindCompletion,
			`{"model":"m","prompt":"abc def"}`, pseudo.Encode("abc def")},
		{"completion with BOS", promptTokenizer{tok: bpe, template: config.ChatTemplateSim, bos: "<|endoftext|>"}, openai.KindCompletion,
			`{"model":"m","prompt":"hello world"}`, []uint32{100257, 15339, 1917}},
		{"client token ids as they are", promptTokenizer{tok: bpe, template: config.ChatTemplateSim, bos: "<|endoftext|>"}, openai.KindCompletion,
			`{"model":"m","prompt":[5,6,7]}`, []uint32{5, 6, 7}},
		{"chat, the simulator's template", promptTokenizer{tok: pseudo, template: config.ChatTemplateSim}, openai.KindChat,
			`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}`,
			pseudo.Encode("<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n")},
		{"chat, cl100k", promptTokenizer{tok: bpe, template: config.ChatTemplateChatML}, openai.KindChat,
			`{"model":"m","messages":[{"role":"user","content":"hello world"}]}`,
			bpe.Encode("<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, n, err := tt.pt.tokenize(parse(t, tt.kind, tt.body), 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if n != len(tt.want) {
				t.Errorf("length %d, want %d", n, len(tt.want))
			}
		})
	}
}

// TestPromptTokenizerLongPrompt: a prompt longer than tokenizeHeadBytes is
// tokenised on its head, whose ids are the full encoding's first ids (the
// cut falls between words), with its length estimated within 2 % of the
// exact count; a prompt of exactly tokenizeHeadBytes is tokenised whole.
func TestPromptTokenizerLongPrompt(t *testing.T) {
	bpe, err := tokenizer.Load(cl100k)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for i := 0; sb.Len() < 3*tokenizeHeadBytes; i++ {
		fmt.Fprintf(&sb, "Rule %d: when the wind backs more than %d degrees, ease the main halyard and report to the watch.\n", i, 10+i%80)
	}
	long := sb.String()
	for _, tc := range []struct {
		name string
		tok  tokenizer.Tokenizer
	}{{"pseudo", tokenizer.Pseudo{}}, {"cl100k", bpe}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, kc := range []struct {
				kind openai.Kind
				body string
				full string // the text the engine tokenises
			}{
				{openai.KindCompletion, `{"model":"m","prompt":` + jsonString(long) + `}`, "<s>" + long},
				{openai.KindChat, `{"model":"m","messages":[{"role":"user","content":` + jsonString(long) + `}]}`, "<|user|>\n" + long + "\n<|assistant|>\n"},
			} {
				pt := promptTokenizer{tok: tc.tok, template: config.ChatTemplateSim, bos: "<s>"}
				if kc.kind == openai.KindChat {
					pt.bos = ""
				}
				want := tc.tok.Encode(kc.full)
				ids, n, err := pt.tokenize(parse(t, kc.kind, kc.body), 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(ids) == 0 || len(ids) >= len(want)/2 {
					t.Fatalf("%s: %d ids of %d, want the head's", kc.kind, len(ids), len(want))
				}
				if diff := cmp.Diff(want[:len(ids)], ids); diff != "" {
					t.Errorf("%s: head ids differ from the full encoding's (-want +got):\n%s", kc.kind, diff)
				}
				if d := float64(n-len(want)) / float64(len(want)); d > 0.02 || d < -0.02 {
					t.Errorf("%s: estimated %d tokens, exact %d (%.1f %%)", kc.kind, n, len(want), 100*d)
				}
				if kc.kind == openai.KindCompletion {
					// The router keeps only the text's head
					// (framework.Prompt.TextBytes): the same answer.
					o := parse(t, kc.kind, kc.body)
					whole := len(o.PromptText)
					o.PromptText = o.PromptText[:tokenizeHeadBytes]
					hids, hn, err := pt.tokenize(o, whole)
					if err != nil {
						t.Fatal(err)
					}
					if hn != n || !cmp.Equal(hids, ids) {
						t.Errorf("from the head: %d ids, length %d; from the whole text: %d ids, length %d", len(hids), hn, len(ids), n)
					}
				}
			}
			if tc.name == "pseudo" {
				// The count without a tokenizer, the same way.
				want := tokenizer.Pseudo{}.Count(long)
				if n := countText([]byte(long), len(long)); float64(n) < 0.98*float64(want) || float64(n) > 1.02*float64(want) {
					t.Errorf("countText: %d, exact %d", n, want)
				}
				head := long[:tokenizeHeadBytes]
				if n, want := countText([]byte(head), len(head)), (tokenizer.Pseudo{}).Count(head); n != want {
					t.Errorf("countText at tokenizeHeadBytes: %d, want the exact %d", n, want)
				}
			}
			exact := long[:tokenizeHeadBytes]
			pt := promptTokenizer{tok: tc.tok, template: config.ChatTemplateSim}
			ids, n, err := pt.tokenize(parse(t, openai.KindCompletion, `{"model":"m","prompt":`+jsonString(exact)+`}`), 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := tc.tok.Encode(exact); n != len(want) || !cmp.Equal(want, ids) {
				t.Errorf("at tokenizeHeadBytes: %d ids (length %d), want all %d", len(ids), n, len(want))
			}
		})
	}
}

// longChatBody returns a chat request with a system prompt of n
// sentences of English (about 13 cl100k tokens each) and a question.
func longChatBody(n int) string {
	var sys strings.Builder
	for i := range n {
		fmt.Fprintf(&sys, "Rule %d: when the wind backs more than %d degrees, ease the main halyard and report to the watch. ", i, 10+i%80)
	}
	b, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]string{
		{"role": "system", "content": sys.String()},
		{"role": "user", "content": "What is a halyard, and where on a sailing ship would one find it?"},
	}})
	return string(b)
}

// BenchmarkPromptTokenize is the router's per-request cost of precise
// prefix routing before scoring: read the messages, render the template,
// tokenise (a chat request of about 9,000 cl100k tokens).
func BenchmarkPromptTokenize(b *testing.B) {
	bpe, err := tokenizer.Load(cl100k)
	if err != nil {
		b.Fatal(err)
	}
	body := longChatBody(400)
	o := parse(b, openai.KindChat, body)
	for _, tc := range []struct {
		name string
		tok  tokenizer.Tokenizer
	}{{"pseudo", tokenizer.Pseudo{}}, {"cl100k", bpe}} {
		b.Run(tc.name, func(b *testing.B) {
			pt := promptTokenizer{tok: tc.tok, template: config.ChatTemplateSim}
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			var n int
			for b.Loop() {
				ids, _, err := pt.tokenize(o, 0)
				if err != nil {
					b.Fatal(err)
				}
				n = len(ids)
			}
			b.ReportMetric(float64(n), "tokens")
		})
	}
}

// TestLongPromptKeepsItsHead: the router keeps the first tokenizeHeadBytes
// of a longer text prompt for routing (the call and the scheduling request
// share that head; the rest of the decoded text is not held), with the
// whole length and a count within 2 % of the exact one.
func TestLongPromptKeepsItsHead(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	text := strings.Repeat("the main halyard ", 3*tokenizeHeadBytes/17)
	body := `{"model":"llama","prompt":` + jsonString(text) + `}`
	c, aerr, _ := h.r.prepareBody(httptest.NewRequest(http.MethodPost, "/v1/completions", nil), openai.KindCompletion, []byte(body))
	if aerr != nil {
		t.Fatal(aerr)
	}
	p := c.req.Prompt
	if len(p.Text) != tokenizeHeadBytes || p.TextLen() != len(text) || string(p.Text) != text[:tokenizeHeadBytes] {
		t.Fatalf("kept %d bytes of %d (whole length %d), want the first %d", len(p.Text), len(text), p.TextLen(), tokenizeHeadBytes)
	}
	if len(c.body.PromptText) != len(p.Text) || &c.body.PromptText[0] != &p.Text[0] {
		t.Error("the call holds another copy of the prompt's text")
	}
	want := tokenizer.Pseudo{}.Count(text)
	if d := float64(c.req.PromptTokens-want) / float64(want); d > 0.02 || d < -0.02 {
		t.Errorf("PromptTokens %d, exact %d", c.req.PromptTokens, want)
	}
	chat := `{"model":"llama","messages":[{"role":"system","content":` + jsonString(text) + `},{"role":"user","content":"hi"}]}`
	c, aerr, _ = h.r.prepareBody(httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil), openai.KindChat, []byte(chat))
	if aerr != nil {
		t.Fatal(aerr)
	}
	rendered := "system: " + text + "\nuser: hi\n"
	if p := c.req.Prompt; len(p.Text) > tokenizeHeadBytes || p.TextLen() != len(rendered) || !strings.HasPrefix(rendered, string(p.Text)) {
		t.Errorf("chat: kept %d bytes (whole %d), want a head of at most %d of the %d rendered", len(p.Text), p.TextLen(), tokenizeHeadBytes, len(rendered))
	}
	short := `{"model":"llama","prompt":"a short prompt"}`
	c, aerr, _ = h.r.prepareBody(httptest.NewRequest(http.MethodPost, "/v1/completions", nil), openai.KindCompletion, []byte(short))
	if aerr != nil {
		t.Fatal(aerr)
	}
	if string(c.req.Prompt.Text) != "a short prompt" || c.req.Prompt.TextBytes != 0 || c.req.PromptTokens != (tokenizer.Pseudo{}).Count("a short prompt") {
		t.Errorf("short prompt: %q, %d bytes, %d tokens", c.req.Prompt.Text, c.req.Prompt.TextBytes, c.req.PromptTokens)
	}
}

// TestChatHeadCutBeforeRendering: a long chat prompt is rendered from the
// messages' heads (openai.MessagesHead), not whole, and tokenises to the
// same head ids as rendering every message whole and cutting at
// tokenizeHeadBytes, for each template, with the cut landing in the first,
// second or third message, contents with escapes, and a length estimate
// within 1 % of the whole rendering's (exact without escapes).
func TestChatHeadCutBeforeRendering(t *testing.T) {
	bpe, err := tokenizer.Load(cl100k)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for i := 0; sb.Len() < 2*tokenizeHeadBytes; i++ {
		fmt.Fprintf(&sb, "Rule %d: when the \"wind\" backs more than %d° degrees,\tease the main halyard.\n", i, 10+i%80)
	}
	escaped := sb.String()
	plain := strings.Repeat("the main halyard runs aloft ", 2*tokenizeHeadBytes/28)
	cases := map[string][]map[string]any{
		"cut in the first message": {{"role": "user", "content": escaped}, {"role": "assistant", "content": plain}, {"role": "user", "content": "and then?"}},
		"cut in the second":        {{"role": "system", "content": "Be terse."}, {"role": "user", "content": plain}, {"role": "user", "content": escaped}},
		"cut in the third":         {{"role": "system", "content": escaped[:tokenizeHeadBytes/2]}, {"role": "user", "content": []map[string]string{{"type": "text", "text": plain[:tokenizeHeadBytes/3]}}}, {"role": "user", "content": escaped}},
		"cut near a boundary":      {{"role": "user", "content": plain[:tokenizeHeadBytes-3]}, {"role": "user", "content": plain}},
		"no escapes":               {{"role": "user", "content": plain}, {"role": "user", "content": plain}},
	}
	for name, msgs := range cases {
		raw, err := json.Marshal(map[string]any{"model": "m", "messages": msgs})
		if err != nil {
			t.Fatal(err)
		}
		o := parse(t, openai.KindChat, string(raw))
		heads, err := o.MessagesHead(tokenizeHeadBytes + 2)
		if err != nil {
			t.Fatal(err)
		}
		decoded := 0
		for _, m := range heads {
			decoded += len(m.Content)
		}
		if decoded > tokenizeHeadBytes+tokenizeHeadBytes/2 {
			t.Errorf("%s: %d bytes of content decoded, want about %d", name, decoded, tokenizeHeadBytes)
		}
		whole, err := o.Messages()
		if err != nil {
			t.Fatal(err)
		}
		for _, tpl := range []string{config.ChatTemplateSim, config.ChatTemplateLlama3, config.ChatTemplateChatML} {
			full, err := renderChat(tpl, whole)
			if err != nil {
				t.Fatal(err)
			}
			for _, tk := range []struct {
				name string
				tok  tokenizer.Tokenizer
			}{{"pseudo", tokenizer.Pseudo{}}, {"cl100k", bpe}} {
				if tk.name == "cl100k" && tpl != config.ChatTemplateLlama3 {
					continue // one template is enough for the slow tokenizer
				}
				pt := promptTokenizer{tok: tk.tok, template: tpl}
				ids, n, err := pt.tokenize(o, 0)
				if err != nil {
					t.Fatal(err)
				}
				cut := headCut(full, tokenizeHeadBytes)
				want := tk.tok.Encode(full[:cut])
				if diff := cmp.Diff(want, ids); diff != "" {
					t.Errorf("%s, %s, %s: head ids differ from the whole rendering's (-want +got):\n%s", name, tpl, tk.name, diff)
				}
				exact := estimateTokens(len(want), cut, len(full))
				if name == "no escapes" && n != exact {
					t.Errorf("%s, %s, %s: length %d, want %d", name, tpl, tk.name, n, exact)
				}
				if d := float64(n-exact) / float64(exact); d > 0.01 || d < -0.01 {
					t.Errorf("%s, %s, %s: length %d, whole rendering's estimate %d", name, tpl, tk.name, n, exact)
				}
			}
		}
	}
}
