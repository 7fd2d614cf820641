package openai

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/halyard-dev/halyard/internal/fuzzseed"
)

// feedInParts feeds doc to p in parts whose lengths cuts gives in turn
// (each byte 1-256; one part when cuts is empty), as a body arrives.
func feedInParts(p *Prescan, doc []byte, cuts []byte) {
	n := 0
	for k := 0; n < len(doc); k++ {
		step := len(doc)
		if len(cuts) > 0 {
			step = int(cuts[k%len(cuts)]) + 1
		}
		n = min(n+step, len(doc))
		p.Feed(doc[:n])
	}
	p.Feed(doc) // once more with nothing new, as the read's last call may
}

// FuzzPrescan checks the prescan against the single pass on any body cut
// into any parts: every string it records has the answer validString
// gives at that index, the walk with the records refuses exactly what
// json.Valid refuses, and ParseHeadPrescanned returns what ParseHead
// returns. Strings of any length are recorded here (min 1), so the
// records meet every kind of string and every cut.
func FuzzPrescan(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"abc"}`,
		`{"model":"m","prompt":"a\nb\"c\\d\/e\u00e9\uD83D\uDE00f"}`,
		`{"model":"m","messages":[{"role":"user","content":"hi \"x\""}]}`,
		`{"model":"m","prompt":"\u12"}`, `{"model":"m","prompt":"\u12G4"}`, `{"model":"m","prompt":"\x"}`,
		"{\"model\":\"m\",\"prompt\":\"tab\there\"}", "{\"model\":\"m\",\"prompt\":\"ctl\x01\"}",
		`{"model":"m","prompt":"cut`, `{"model":"m","prompt":"cut\`, `{"model":"m","prompt":"cut\u00`,
		// Quotes where the lexer's view and the parse's differ.
		`{"a":1"b":"c"}`, `{"a":"b""c":"d"}`, `"a"b"c"`, `{"a\":"b"}`, `{"a":"\\"}"`, `{"a":x"y"}`,
		`["a","\"",",","\\\\"]`, `{"a":["x","y"],"b":{"c":"d\\"}}`, `{"model":"m","prompt":"x"} "y"`,
		`{"model":"m","prompt":["a","b"]}`, `{"model":"m","prompt":"x","model":"n"}`,
	} {
		f.Add([]byte(s), []byte{0})
		f.Add([]byte(s), []byte{1, 2})
		f.Add([]byte(s), []byte{6, 0, 3})
		f.Add([]byte(s), []byte{})
	}
	long := `{"model":"m","prompt":"` + strings.Repeat(`the \"quick\" fox\n`, 20) + `"}`
	f.Add([]byte(long), []byte{7})
	f.Add([]byte(long), []byte{255})
	for _, d := range fuzzseed.JSONDocuments(`{"model":"m","prompt":`) {
		f.Add(d, []byte{2})
	}
	f.Fuzz(func(t *testing.T, doc, cuts []byte) {
		p := &Prescan{min: 1}
		feedInParts(p, doc, cuts)
		for _, k := range p.known {
			if want := validString(doc, k.start); doc[k.start] != '"' || k.end != want {
				t.Fatalf("Prescan recorded %d for the string at %d of %q; validString says %d", k.end, k.start, doc, want)
			}
		}
		for _, kind := range []Kind{KindCompletion, KindChat} {
			q := &Prescan{min: 1}
			feedInParts(q, doc, cuts)
			err := walkPrescanned(doc, q, func([]byte, int, int) bool { return true })
			if want := json.Valid(doc); (err == nil || errors.Is(err, errNotObject)) != want {
				t.Fatalf("walkPrescanned(%q) = %v, json.Valid = %v", doc, err, want)
			}
			q = &Prescan{min: 1}
			feedInParts(q, doc, cuts)
			want, werr := ParseHead(kind, doc, 16)
			got, gerr := ParseHeadPrescanned(kind, doc, 16, q)
			if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gerr, werr) {
				t.Fatalf("ParseHeadPrescanned(%q) = %+v, %+v; ParseHead: %+v, %+v", doc, got, gerr, want, werr)
			}
		}
	})
}

// TestPrescanLongPrompt: a long prompt fed as it arrives is recorded as
// one string, with its end, and the parse takes it from the record.
func TestPrescanLongPrompt(t *testing.T) {
	text := strings.Repeat("abcdefgh", 20<<10) + `\n` + strings.Repeat("xy", 10)
	doc := []byte(`{"model":"m","prompt":"` + text + `","max_tokens":4}`)
	var p Prescan
	feedInParts(&p, doc, []byte{200, 99, 255})
	start := strings.Index(string(doc), `"abcd`)
	if len(p.known) != 1 || p.known[0] != (knownString{start, start + len(text) + 2}) {
		t.Fatalf("known = %v, want one string at %d ending at %d", p.known, start, start+len(text)+2)
	}
	r, perr := ParseHeadPrescanned(KindCompletion, doc, 1024, &p)
	if perr != nil || r.Model != "m" || r.MaxTokens != 4 || len(p.known) != 0 {
		t.Fatalf("parse: model %q, %v; records left %v (want used)", r.Model, perr, p.known)
	}
	// A record that lies is believed: the parse trusts it, which is why
	// a Prescan must be fed the very body it is parsed with.
	liar := &Prescan{known: []knownString{{start, stringInvalid}}}
	if _, perr := ParseHeadPrescanned(KindCompletion, doc, 1024, liar); perr == nil || perr.Message != msgInvalidJSON {
		t.Fatalf("parse with an invalid record: %+v, want the invalid-JSON error (the record used)", perr)
	}
	// Short strings are not recorded; an invalid string ends the records.
	var q Prescan
	q.Feed([]byte(`{"a":"short","b":"ctl` + "\x01" + `","c":"` + strings.Repeat("z", prescanMin) + `"}`))
	if len(q.known) != 1 || q.known[0].end != stringInvalid || !q.full {
		t.Fatalf("known = %v, full %v; want only the invalid string, and no more records", q.known, q.full)
	}
}

// BenchmarkPrescan reads a 4 MiB prompt (the bench's text: one escape near
// the end) into a buffer in 256 KiB parts, as the router reads a body
// from its socket, and parses its head: "after-read" validates the body
// when it has all arrived (ParseHead), "as-read" feeds each part to a
// Prescan right after copying it and parses with its records. The copy
// stands in for the kernel's; both cases do it.
func BenchmarkPrescan(b *testing.B) {
	text := strings.Repeat("the quick brown fox jumps over ", 1<<17)
	long, _ := json.Marshal(map[string]any{"model": "llama", "prompt": text[:len(text)-60] + "\n" + text[len(text)-60:], "max_tokens": 4})
	buf := make([]byte, len(long))
	const part = 256 << 10
	for _, pre := range []bool{false, true} {
		name := "after-read"
		if pre {
			name = "as-read"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(long)))
			b.ReportAllocs()
			for b.Loop() {
				var p *Prescan
				if pre {
					p = new(Prescan)
				}
				for n := 0; n < len(long); n += part {
					m := min(n+part, len(long))
					copy(buf[n:m], long[n:m])
					p.Feed(buf[:m])
				}
				if _, err := ParseHeadPrescanned(KindCompletion, buf, 256<<10, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
