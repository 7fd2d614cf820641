package openai

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

func TestMessages(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []Message
	}{
		{"strings", `{"model":"m","messages":[{"role":"system","content":"be brief"},{"content":"hi \"there\"","role":"user"}]}`,
			[]Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: `hi "there"`}}},
		{"parts joined with newlines, others skipped", `{"messages":[{"role":"user","content":[{"type":"text","text":"one"},{"type":"image_url","image_url":{"url":"u"}},{"type":"text","text":"two\nthree"}]}],"model":"m"}`,
			[]Message{{Role: "user", Content: "one\ntwo\nthree"}}},
		{"null content", `{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[]}]}`,
			[]Message{{Role: "assistant"}}},
		{"escaped keys and unicode", `{"model":"m","\u006dessages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00"}]}`,
			[]Message{{Role: "user", Content: "café 😀"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, perr := Parse(KindChat, []byte(tt.body))
			if perr != nil {
				t.Fatal(perr)
			}
			got, err := r.Messages()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("messages (-want +got):\n%s", diff)
			}
		})
	}
	r, _ := Parse(KindCompletion, []byte(`{"model":"m","prompt":"x"}`))
	if got, err := r.Messages(); got != nil || err != nil {
		t.Errorf("completion: %v, %v", got, err)
	}
}

// FuzzMessages: any chat body Parse accepts gives messages or an error,
// never a panic, and as many messages as Parse counted roles.
func FuzzMessages(f *testing.F) {
	f.Add(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	f.Add(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}`)
	f.Add(`{"model":"m","messages":[{"role":"user","content":[1,{"type":"text"}]}]}`)
	for _, base := range []string{`{"model":"m","messages":`, `{"model":"m","messages":[{"role":"user","content":`, `{"model":"m","messages":[{"content":"x","role":`} {
		for _, d := range fuzzseed.JSONDocuments(base) {
			f.Add(string(d))
		}
	}
	f.Fuzz(func(t *testing.T, body string) {
		r, perr := Parse(KindChat, []byte(body))
		if perr != nil {
			return
		}
		msgs, err := r.Messages()
		if err != nil {
			return
		}
		for _, m := range msgs {
			if m.Role == "" {
				t.Errorf("a message without a role passed Parse: %q", body)
			}
		}
	})
}
