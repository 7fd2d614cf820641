package openai

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

func TestPatchApply(t *testing.T) {
	tests := []struct {
		name, doc, want string
		patch           Patch
	}{
		{
			name: "set in place, append, delete",
			doc:  `{"model":"m", "stream": true,"max_tokens":100,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			patch: Patch{
				Set:    []Member{{"stream", json.RawMessage(`false`)}, {"max_tokens", json.RawMessage(`1`)}, {"kv_transfer_params", json.RawMessage(`{"do_remote_decode":true}`)}},
				Delete: []string{"stream_options"},
			},
			want: `{"model":"m","stream":false,"max_tokens":1,"messages":[{"role":"user","content":"hi"}],"kv_transfer_params":{"do_remote_decode":true}}`,
		},
		{
			name:  "delete the first member",
			doc:   ` { "a" : 1 , "b":2 } ` + "\n",
			patch: Patch{Delete: []string{"a"}},
			want:  ` { "b":2} ` + "\n",
		},
		{
			name:  "empty object",
			doc:   `{}`,
			patch: Patch{Set: []Member{{"x", json.RawMessage(`"y"`)}}},
			want:  `{"x":"y"}`,
		},
		{
			name:  "duplicate keys all set",
			doc:   `{"a":1,"a":2}`,
			patch: Patch{Set: []Member{{"a", json.RawMessage(`3`)}}},
			want:  `{"a":3,"a":3}`,
		},
		{
			name:  "escaped key matches",
			doc:   `{"mod\u0065l":"m","prompt":"p"}`,
			patch: Patch{Set: []Member{{"model", json.RawMessage(`"n"`)}}},
			want:  `{"mod\u0065l":"n","prompt":"p"}`,
		},
		{
			name:  "value bytes kept",
			doc:   `{"prompt":"caf\u00e9  x","n":1e2}`,
			patch: Patch{Set: []Member{{"k", json.RawMessage(`null`)}}},
			want:  `{"prompt":"caf\u00e9  x","n":1e2,"k":null}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.patch.Apply([]byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPatchApplyErrors(t *testing.T) {
	for _, doc := range []string{`[]`, `"x"`, `{"a":`, ``} {
		if _, err := (Patch{}).Apply([]byte(doc)); err == nil {
			t.Errorf("Apply(%q): no error", doc)
		}
	}
	if _, err := (Patch{Set: []Member{{"a", json.RawMessage(`{`)}}}).Apply([]byte(`{}`)); err == nil {
		t.Error("invalid value accepted")
	}
}

func TestTopLevel(t *testing.T) {
	doc := []byte(`{"id":"x","kv_transfer_params":{"remote_block_ids":[1,2]},"choices":[{"kv_transfer_params":1}]}`)
	v, ok, err := TopLevel(doc, "kv_transfer_params")
	if err != nil || !ok || string(v) != `{"remote_block_ids":[1,2]}` {
		t.Fatalf("TopLevel = %s, %v, %v", v, ok, err)
	}
	if _, ok, _ := TopLevel(doc, "usage"); ok {
		t.Error("found a member that is not there")
	}
	if _, _, err := TopLevel([]byte(`[1]`), "a"); err == nil {
		t.Error("array accepted")
	}
}

// FuzzPatch checks that Apply never panics and that its output decodes to
// the input with the patch's changes.
func FuzzPatch(f *testing.F) {
	for _, s := range []string{`{"model":"m","stream":true,"stream_options":{}}`, `{}`, ` {"a" :1 } `, `{"a":[1,{"b":"}"}]}`, `[]`} {
		f.Add([]byte(s), "stream", "stream_options")
	}
	for _, d := range fuzzseed.JSONDocuments(`{"model":"m","stream":`) {
		f.Add(d, "stream", "stream_options")
		f.Add(d, "model", "\xed\xa0\x80")
	}
	f.Fuzz(func(t *testing.T, doc []byte, setKey, delKey string) {
		if !utf8.ValidString(setKey) {
			return // json.Marshal would replace the bad bytes
		}
		p := Patch{Set: []Member{{setKey, json.RawMessage(`{"x":[1,"2"]}`)}}, Delete: []string{delKey}}
		out, err := p.Apply(doc)
		var before map[string]any
		if json.Unmarshal(doc, &before) != nil || before == nil {
			if err == nil && json.Valid(doc) {
				// Valid JSON that is not an object must be refused.
				var v any
				_ = json.Unmarshal(doc, &v)
				if _, isObj := v.(map[string]any); !isObj {
					t.Fatalf("non-object %q accepted", doc)
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("object %q refused: %v", doc, err)
		}
		var after map[string]any
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("output %q does not decode: %v", out, err)
		}
		if setKey != delKey {
			delete(before, delKey)
		}
		before[setKey] = map[string]any{"x": []any{1.0, "2"}}
		if diff := cmp.Diff(before, after); diff != "" {
			t.Fatalf("doc %q -> %q (-want +got):\n%s", doc, out, diff)
		}
	})
}
