package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

// FuzzValidate checks that validate accepts exactly what json.Valid
// accepts, and that walkObject's verdict agrees with both.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{
		`{}`, `[]`, `""`, `0`, `-0`, `-`, `01`, `1.`, `1.5e`, `1e+5`, `-1.25E-3`, `1e05`, `.5`, `+1`,
		`true`, `false`, `null`, `tru`, `nul`, `nullx`, `[1,]`, `[,1]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{1:2}`,
		` { "a" : [ 1 , "b" , { } ] } `, `{"a":1}{}`, `[] x`, "\t\r\n[]\n",
		`"a\"b\\c\/d\b\f\n\r\t\u00e9\uD83D\uDE00"`, `"\x"`, `"\u12"`, `"\u12G4"`, `"\`, `"`, `"abc`,
		"\"tab\there\"", "\"\x7f\xff\xfe\xc3\"", "\"0123456789abcdef\x1f\"", "\"0123456789abcdef\\\"0123456789\"",
		`"0123456789abcdef0123456789abcdef"`, "\"\xe2\x80\xa8\"",
		strings.Repeat("[", MaxNesting) + strings.Repeat("]", MaxNesting),
		strings.Repeat("[", MaxNesting+1) + strings.Repeat("]", MaxNesting+1),
		`{"a":` + strings.Repeat("[", MaxNesting-1) + strings.Repeat("]", MaxNesting-1) + `}`,
		`{"a":` + strings.Repeat("[", MaxNesting) + strings.Repeat("]", MaxNesting) + `}`,
	} {
		f.Add([]byte(s))
	}
	for _, d := range fuzzseed.JSONDocuments(`{"model":"m","prompt":`) {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		want := json.Valid(doc)
		if got := validate(doc); got != want {
			t.Fatalf("validate(%q) = %v, json.Valid = %v", doc, got, want)
		}
		err := walkObject(doc, func([]byte, int, int) bool { return true })
		if (err == nil || errors.Is(err, errNotObject)) != want {
			t.Fatalf("walkObject(%q) = %v, json.Valid = %v", doc, err, want)
		}
	})
}

// TestValidStringWords checks the word-at-a-time scan at every position of
// the byte it must stop at, for each kind of byte that stops it.
func TestValidStringWords(t *testing.T) {
	for n := range 40 {
		for _, stop := range []string{"\"", "\\n\"", "\x01\"", "\x1f\"", "\\\"", "\xff\""} {
			lit := []byte(`"` + strings.Repeat("a", n) + stop + `"`)
			if got, want := validate(lit), json.Valid(lit); got != want {
				t.Errorf("validate(%q) = %v, json.Valid = %v", lit, got, want)
			}
		}
	}
}

// walkObjectJSONText is walkObject as it was with jsontext's decoder (its
// validation options accept what json.Valid accepts), kept for
// BenchmarkWalkObject's side-by-side comparison.
func walkObjectJSONText(doc []byte, fn func(key []byte, start, end int) bool) error {
	opts := []jsontext.Options{jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)}
	dec := jsontext.NewDecoder(bytes.NewBuffer(doc), opts...)
	if dec.PeekKind() != '{' {
		if !jsontext.Value(doc).IsValid(opts...) {
			return errSyntax
		}
		return errNotObject
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	call := true
	for dec.PeekKind() != '}' {
		name, err := dec.ReadValue()
		if err != nil {
			return err
		}
		key := name[1 : len(name)-1]
		v, err := dec.ReadValue()
		if err != nil {
			return err
		}
		if call {
			end := int(dec.InputOffset())
			call = fn(key, end-len(v), end)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	if _, err := dec.ReadToken(); !errors.Is(err, io.EOF) {
		return errSyntax
	}
	return nil
}

// BenchmarkWalkObject compares the hand-written walk (validate.go) with
// the jsontext one it replaced, on a 1M-token prompt (about 4 MiB): one
// escape near the end (the live long-prompt run's generated text, which
// jsontext reads twice) and real text's escapes throughout; and on a
// short chat body.
func BenchmarkWalkObject(b *testing.B) {
	words := strings.Repeat("lorem ipsum dolor sit amet ", 1<<20/27*4)
	late, _ := json.Marshal(map[string]any{"model": "llama", "prompt": words + "\n end", "max_tokens": 4})
	early, _ := json.Marshal(map[string]any{"model": "llama", "prompt": strings.Repeat("the \"quick\" brown fox\njumps ", 1<<17), "max_tokens": 4})
	chat := []byte(`{"model":"llama","messages":[{"role":"system","content":"You are a helpful assistant. Answer briefly and precisely."},{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris."},{"role":"user","content":[{"type":"text","text":"And of Italy?"}]}],"max_tokens":64,"stream":true,"stream_options":{"include_usage":true},"temperature":0.2}`)
	for _, doc := range []struct {
		name string
		body []byte
	}{{"4MiB-late-escape", late}, {"4MiB-escapes", early}, {"chat", chat}} {
		for _, w := range []struct {
			name string
			walk func([]byte, func([]byte, int, int) bool) error
		}{{"jsontext", walkObjectJSONText}, {"validate", walkObject}} {
			b.Run(doc.name+"/"+w.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(doc.body)))
				for b.Loop() {
					if err := w.walk(doc.body, func([]byte, int, int) bool { return true }); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
