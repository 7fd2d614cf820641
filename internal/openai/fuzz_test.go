package openai

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

// FuzzParse checks that no body makes Parse panic, that Parse refuses as
// not JSON exactly what json.Valid refuses (it validates as it walks the
// top-level object, walkObject and validate.go), that an accepted body is
// valid JSON, and that
// WithModel changes the model and nothing else.
func FuzzParse(f *testing.F) {
	seeds := []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}],"max_completion_tokens":3}`,
		`{"model":"m","prompt":[[1,2],[3]],"max_tokens":1e2,"user":"u"}`,
		`{"model":"m","prompt":["a","b"]}`,
		`{"mod\u0065l":"a","model":"b","prompt":"x"}`,
		`{"model":"m","prompt":"x"`,
		`[]`,
		`{"model":"m","prompt":"\ud800 \udc00x \ud800\u0041"}`,
		"{\"model\":\"m\",\"prompt\":\"caf\xc3 \xff\xfe\"}",
		`{"model":"m","prompt":"x"} {}`,
		`{"model":"m","prompt":"x"}x`,
		`{"model":"m","prompt":"x"} `,
		`{"model":"m","prompt":"x","stream_options":{"a":1,"a":2}}`,
		`{"model":"m","prompt":"0123456789 \u00e9\ud83d\ude00\\\\\\\"abc def ghi jkl mno"}`,
		`{"model":"m","messages":[{"role":"user","content":"0123456789abcdef0123 x"},{"role":"assistant","content":[{"type":"text","text":"y"}]},{"role":"user","content":5}]}`,
		`{1:2}`, `{"a" 1}`, `{"a":1,}`, `{,}`, ` `, ``, `"str"`, `1`, `null`,
		"{\"model\":\"m\",\"prompt\":\"tab\there\"}",
		// A head of 16 raw bytes that decodes to 15 with one raw byte
		// left: the rest's length once rounded to nothing, so a cut
		// prompt reported itself whole.
		`{"model":"m","prompt":"\naaaaaaaaaaaaaab"}`,
		`{"model":"m","prompt":"x","n":1E700}`,
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
		notJSON := perr != nil && (perr.Message == msgInvalidJSON || perr.Message == msgTooDeep)
		if valid := json.Valid(body); notJSON == valid {
			t.Fatalf("json.Valid(%q) = %v, but Parse says %+v", body, valid, perr)
		}
		if trimmed := bytes.TrimLeft(body, " \t\r\n"); json.Valid(body) && trimmed[0] != '{' && (perr == nil || perr.Message != msgNotObject) {
			t.Fatalf("Parse(%q) = %+v, want %q", body, perr, msgNotObject)
		}
		// ParseHead accepts and refuses the same bodies, and keeps a
		// prefix of the text (where the text decodes cleanly).
		h, herr := ParseHead(k, body, 16)
		if (herr == nil) != (perr == nil) || (herr != nil && herr.Message != perr.Message) {
			t.Fatalf("Parse: %+v; ParseHead: %+v", perr, herr)
		}
		if h != nil && utf8.Valid(r.PromptText) && !bytes.ContainsRune(r.PromptText, utf8.RuneError) {
			if !bytes.HasPrefix(r.PromptText, h.PromptText) {
				t.Fatalf("ParseHead's text %q is not a prefix of %q", h.PromptText, r.PromptText)
			}
			if whole := max(h.PromptTextBytes, len(h.PromptText)); whole < len(h.PromptText) || (h.PromptTextBytes == 0 && len(h.PromptText) != len(r.PromptText)) {
				t.Fatalf("ParseHead: %d bytes of text, whole %d; Parse: %d", len(h.PromptText), h.PromptTextBytes, len(r.PromptText))
			}
		}
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
		// Numbers decode as json.Number: a valid literal such as 1E700
		// does not fit a float64.
		var before, after map[string]any
		if err := decodeNumbers(body, &before); err != nil {
			t.Fatalf("accepted body does not decode: %v", err)
		}
		if err := decodeNumbers(out, &after); err != nil {
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

func decodeNumbers(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// FuzzUnquote checks that appendUnquoted (jsontext, with encoding/json for
// what jsontext refuses) decodes every JSON string literal with an escape
// to what encoding/json decodes it to, surrogates and invalid UTF-8
// included, and refuses none that encoding/json accepts; a literal without
// one is copied as it is (invalid UTF-8 kept, as before); and that
// decodedLen counts the value's bytes exactly for valid UTF-8.
func FuzzUnquote(f *testing.F) {
	for _, s := range []string{
		`plain`, `a\"b\\c\/d\n\t\r\b\f`, `\u00e9\u4e2d\ud83d\ude00`, `\ud800`, `\udc00x`, `\ud800\u0041`,
		"\xff\xfe", "caf\xc3", `\u0000`, `\`, `\x`, "ctl\x01", `\uZZZZ`, "é \\\"quoted\\\"\\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, inner []byte) {
		lit := append(append([]byte{'"'}, inner...), '"')
		var want string
		wantErr := json.Unmarshal(lit, &want)
		got, err := appendUnquoted([]byte("prefix:"), lit)
		if wantErr != nil {
			return // not a JSON string; the scanner never hands one over
		}
		if !bytes.Contains(inner, []byte{'\\'}) {
			want = string(inner)
		}
		if err != nil {
			t.Fatalf("appendUnquoted(%q): %v; encoding/json gives %q", lit, err, want)
		}
		if string(got) != "prefix:"+want {
			t.Fatalf("appendUnquoted(%q) = %q, encoding/json gives %q", lit, got[len("prefix:"):], want)
		}
		if s, err := unquote(lit); err != nil || s != want {
			t.Fatalf("unquote(%q) = %q, %v; encoding/json gives %q", lit, s, err, want)
		}
		if n := decodedLen(inner); utf8.Valid(inner) && n != len(want) {
			t.Fatalf("decodedLen(%q) = %d, the value has %d bytes", inner, n, len(want))
		}
	})
}

// FuzzUnquoteHead checks appendUnquotedHead against the whole literal's
// value: the same value when the literal fits the limit; else a head no
// longer than the limit that is a prefix of the value (for literals that
// decode strictly: valid UTF-8, surrogates paired), with the whole length
// estimated at least as long as the head.
func FuzzUnquoteHead(f *testing.F) {
	for _, s := range []string{
		`plain words and more words`, `a\"b\\c\/d\n\t\r\b\f`, `\u00e9\u4e2d\ud83d\ude00\u4e2d\u6587\u4e2d\u6587`, `\ud800x`,
		`\\\\\\\\\\\\\\\\"`, "caf\xc3 \xff", `\u0041\u0042\u0043\u0044\u0045\u0046\u0047`, "é \\\"quoted\\\"\\n and more",
	} {
		for _, limit := range []uint16{0, 1, 5, 7, 12} {
			f.Add([]byte(s), limit)
		}
	}
	f.Fuzz(func(t *testing.T, inner []byte, limit uint16) {
		lit := append(append([]byte{'"'}, inner...), '"')
		var v string
		if json.Unmarshal(lit, &v) != nil {
			return // not a JSON string; Parse never hands one over
		}
		whole, err := appendUnquoted(nil, lit)
		if err != nil {
			t.Fatal(err)
		}
		head, n, err := appendUnquotedHead([]byte("x:"), lit, int(limit))
		if err != nil {
			t.Fatalf("appendUnquotedHead(%q, %d): %v", lit, limit, err)
		}
		head = head[2:]
		if limit == 0 || len(inner) <= int(limit) {
			if string(head) != string(whole) || n != len(whole) {
				t.Fatalf("appendUnquotedHead(%q, %d) = %q, %d; want the whole %q", lit, limit, head, n, whole)
			}
			return
		}
		if n < len(head) {
			t.Fatalf("appendUnquotedHead(%q, %d): whole length %d under the head's %d", lit, limit, n, len(head))
		}
		if _, err := jsontext.AppendUnquote(nil, lit); err != nil {
			return // replaced characters: the head may differ
		}
		if len(head) < len(whole) && len(head) > int(limit) {
			t.Fatalf("appendUnquotedHead(%q, %d): a head of %d bytes", lit, limit, len(head))
		}
		if !bytes.HasPrefix(whole, head) {
			t.Fatalf("appendUnquotedHead(%q, %d) = %q, not a prefix of %q", lit, limit, head, whole)
		}
		if utf8.Valid(inner) && n != len(whole) {
			t.Fatalf("appendUnquotedHead(%q, %d): whole length %d, want %d", lit, limit, n, len(whole))
		}
	})
}
