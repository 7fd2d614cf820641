package openai

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

// FuzzParse checks that no body makes Parse panic, that an accepted body is
// valid JSON, and that WithModel changes the model and nothing else.
func FuzzParse(f *testing.F) {
	seeds := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"max_completion_tokens":3}`,
		`{"model":"m","prompt":[[1,2],[3]],"max_tokens":1e2,"user":"u"}`,
		`{"model":"m","prompt":["a","b"]}`,
		`{"mod\u0065l":"a","model":"b","prompt":"x"}`,
		`{"model":"m","prompt":"x"`,
		`[]`,
	}
	for _, s := range seeds {
		f.Add(uint8(1), []byte(s))
		f.Add(uint8(2), []byte(s))
	}
	// Hostile values in the places the router reads.
	for _, base := range []string{`{"model":"m","prompt":`, `{"model":"m","messages":`, `{"model":`, `{"model":"m","stream":true,"max_tokens":`, `{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":`} {
		for _, d := range fuzzseed.JSONDocuments(base) {
			f.Add(uint8(1), d)
			f.Add(uint8(2), d)
		}
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		k := KindChat
		if kind%2 == 0 {
			k = KindCompletion
		}
		r, perr := Parse(k, body)
		FindUsage(body)
		if perr != nil {
			if perr.Status != 400 || perr.Message == "" {
				t.Fatalf("bad error %+v", perr)
			}
			return
		}
		if !json.Valid(body) || r.Model == "" {
			t.Fatalf("accepted %q", body)
		}
		out := r.WithModel("other-model")
		var before, after map[string]any
		if err := json.Unmarshal(body, &before); err != nil {
			t.Fatalf("accepted body does not decode: %v", err)
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("rewritten body does not decode: %v\n%s", err, out)
		}
		if after["model"] != "other-model" {
			t.Fatalf("model after rewrite = %v", after["model"])
		}
		delete(before, "model")
		delete(after, "model")
		if diff := cmp.Diff(before, after); diff != "" {
			t.Fatalf("rewrite changed other fields:\n%s", diff)
		}
	})
}
