package fuzzseed

import (
	"bytes"
	"strings"
)

// Depth is how deep Nested goes: beyond encoding/json's own limit (10,000)
// so that a parser that recurses without one is found at once.
const Depth = 10_001

// Nested returns open repeated depth times, then inner, then close
// repeated depth times: Nested("[", "1", "]", 3) is "[[[1]]]".
func Nested(open, inner, close string, depth int) []byte {
	var b bytes.Buffer
	b.Grow(depth*(len(open)+len(close)) + len(inner))
	for range depth {
		b.WriteString(open)
	}
	b.WriteString(inner)
	for range depth {
		b.WriteString(close)
	}
	return b.Bytes()
}

// JSONValues returns hostile JSON values (some of them not valid JSON) to
// put where a parser expects a value: deep nesting, invalid UTF-8 inside
// and outside strings, lone and reversed surrogates, NUL bytes raw and
// escaped, numbers that overflow float64 and int64, and an object with
// duplicate keys.
func JSONValues() []string {
	return []string{
		string(Nested("[", "1", "]", Depth)),
		string(Nested(`{"a":`, "1", "}", Depth)),
		string(Nested("[", "", "", Depth)), // unterminated
		"\"\xff\xfe\xc0\xaf\"",             // invalid UTF-8 in a string
		"\"\xed\xa0\x80\"",                 // a surrogate encoded in UTF-8
		"\xff",                             // invalid UTF-8 as a value
		`"\ud800"`,                         // a lone high surrogate
		`"\udc00\ud800"`,                   // a reversed pair
		`"\ud800x"`,                        // a high surrogate without its low half
		"\"a\x00b\"",                       // a raw NUL in a string
		`"a\u0000b"`,                       // an escaped NUL
		"1e400", "-1e400", "1e-400", "1E+999999999999",
		strings.Repeat("9", 400),
		"-" + strings.Repeat("9", 400),
		"0." + strings.Repeat("0", 400) + "1",
		"18446744073709551616", "-9223372036854775809", "9223372036854775808",
		"-0", "0.0e0", "1.", ".5", "01", "NaN", "Infinity", "-Infinity",
		`{"k":1,"k":2,"K":3}`,
		`{"k":1,"k":{"k":[1,2]},"k":null}`,
		`[1,2,]`, `{"a":1,}`, `{,}`, `tru`, `nul`,
		"\ufeff{}", // a byte-order mark
	}
}

// JSONDocuments returns each of JSONValues at the top level and as the
// value of key inside base, an object written as `{...}` without its
// closing brace (for example `{"model":"m","prompt":`), closed after the
// value.
func JSONDocuments(base string) [][]byte {
	var out [][]byte
	for _, v := range JSONValues() {
		out = append(out, []byte(v), []byte(base+v+"}"))
	}
	return out
}

// YAMLAliasBomb is a "billion laughs" document: nine levels of anchors, each
// a list of nine aliases to the level below, which expands to 9^9 (about 387
// million) strings if aliases are followed without a bound.
func YAMLAliasBomb() []byte {
	var b strings.Builder
	b.WriteString("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	prev := "a"
	for _, name := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		b.WriteString(name + ": &" + name + " [")
		for j := range 9 {
			if j > 0 {
				b.WriteString(",")
			}
			b.WriteString("*" + prev)
		}
		b.WriteString("]\n")
		prev = name
	}
	return []byte(b.String())
}

// YAMLDocuments returns hostile YAML documents: the alias bomb, an alias
// cycle through a merge key, deep flow nesting, a huge integer, invalid
// UTF-8, a NUL byte, and tabs where YAML forbids them.
func YAMLDocuments() [][]byte {
	return [][]byte{
		YAMLAliasBomb(),
		[]byte("a: &a\n  b: *a\n"),
		[]byte("a: &a {<<: *a}\n"),
		[]byte("router: &r\n  <<: *r\n"),
		Nested("[", "", "]", Depth),
		Nested("{a: ", "1", "}", Depth),
		[]byte("router: {maxAttempts: " + strings.Repeat("9", 400) + "}\n"),
		[]byte("router: {maxAttempts: 1e400}\n"),
		[]byte("router: {listen: \"\xff\xfe\"}\n"),
		[]byte("router: {listen: \"a\x00b\"}\n"),
		[]byte("router:\n\tlisten: x\n"),
		[]byte("router: {}\nrouter: {}\n"),
		[]byte("---\nrouter: {}\n---\nrouter: {}\n"),
		[]byte("!!binary AAAA"),
	}
}

// MsgpackValues returns hostile msgpack encodings: nesting Depth deep,
// arrays, maps, strings and binaries that declare 2^32-1 members or bytes
// and hold none, invalid UTF-8 in a string, NaN and infinities, the extreme
// integers, a reserved byte (0xc1) and truncated headers.
func MsgpackValues() [][]byte {
	deep := bytes.Repeat([]byte{0x91}, Depth) // fixarray of 1, nested
	return [][]byte{
		append(deep, 0xc0),
		bytes.Repeat([]byte{0x81, 0xa1, 'k'}, Depth),           // fixmap of 1, nested, unterminated
		{0xdd, 0xff, 0xff, 0xff, 0xff},                         // array32 of 2^32-1
		{0xdf, 0xff, 0xff, 0xff, 0xff},                         // map32 of 2^32-1
		{0xdb, 0xff, 0xff, 0xff, 0xff},                         // str32 of 2^32-1 bytes
		{0xc6, 0xff, 0xff, 0xff, 0xff},                         // bin32 of 2^32-1 bytes
		{0xc9, 0xff, 0xff, 0xff, 0xff, 0x01},                   // ext32
		{0xa3, 0xff, 0xfe, 0xc0},                               // invalid UTF-8 in a fixstr
		{0xa3, 0xed, 0xa0, 0x80},                               // a surrogate in UTF-8
		{0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0},                   // NaN
		{0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0},                   // +Inf
		{0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0},                   // -Inf
		{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // uint64 max
		{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0},                      // int64 min
		{0xc1}, {0xdd}, {0xcb, 0x00}, {},
	}
}

// PrometheusText returns hostile lines of the Prometheus text format for
// metric, a name the parser reads: values beyond float64, NaN and
// infinities, labels with escapes, invalid UTF-8 and NUL bytes, a line of
// 1 MiB, a sample without a value, and duplicate series.
func PrometheusText(metric string) [][]byte {
	lines := []string{
		metric + " 1e400",
		metric + " -1e400",
		metric + " NaN",
		metric + " +Inf",
		metric + " -Inf",
		metric + " " + strings.Repeat("9", 400),
		metric + `{model_name="m\"} 1` + "\n" + metric + ` 2`,
		metric + `{model_name="\xff\xfe"} 1`,
		metric + "{model_name=\"\xff\xfe\"} 1",
		metric + "{model_name=\"a\x00b\"} 1",
		metric + "\x00 1",
		metric + `{model_name="m",model_name="n"} 1`,
		metric + `{model_name="m"}`,
		metric + ` 1 ` + strings.Repeat("9", 400),
		metric + `{` + strings.Repeat(`a="b",`, 10000) + `} 1`,
		metric + ` 0.5` + "\n" + metric + ` 0.7`,
		metric + `{model_name="` + strings.Repeat("x", 1<<20) + `"} 1`,
		"# TYPE " + metric + " histogram\n" + metric + "_bucket{le=\"+Inf\"} NaN",
		"# HELP " + metric + " \xff\n# TYPE " + metric + " gauge\n" + metric + " 1",
	}
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = []byte(l + "\n")
	}
	return out
}
