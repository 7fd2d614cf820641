package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// errSyntax is returned by the scanner for input that is not JSON. Callers
// validate first (walkObject, json.Valid), so from topFields it marks a
// scanner bug or truncated input.
var errSyntax = errors.New("invalid json")

// errNotObject is walkObject's answer for valid JSON that is not an object.
var errNotObject = errors.New("not a JSON object")

// walkObject validates doc as json.Valid does and, when it is an object,
// calls fn with each top-level member's key (unescaped) and the span of its
// value, in order, in the same pass, so a long prompt is read once
// (validate.go: eight bytes at a time, BenchmarkWalkObject). Once fn
// returns false it is not called again, but the rest is still validated,
// so invalid JSON is reported before fn's finding. It returns errNotObject
// for valid JSON of another kind and errSyntax for invalid JSON (nesting
// deeper than MaxNesting included).
func walkObject(doc []byte, fn func(key []byte, start, end int) bool) error {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		if !validate(doc) {
			return errSyntax
		}
		return errNotObject
	}
	i = skipSpace(doc, i+1)
	call := true
	if i < len(doc) && doc[i] == '}' {
		i++
	} else {
		for {
			kend, start := memberName(doc, i)
			if start < 0 {
				return errSyntax
			}
			key := doc[i+1 : kend-1]
			if call && bytes.IndexByte(key, '\\') >= 0 {
				k, err := unquote(doc[i:kend])
				if err != nil {
					return errSyntax
				}
				key = []byte(k)
			}
			end := validValue(doc, start, 1)
			if end < 0 {
				return errSyntax
			}
			if call {
				call = fn(key, start, end)
			}
			i = skipSpace(doc, end)
			if i >= len(doc) {
				return errSyntax
			}
			if doc[i] == '}' {
				i++
				break
			}
			if doc[i] != ',' {
				return errSyntax
			}
			i = skipSpace(doc, i+1)
		}
	}
	if skipSpace(doc, i) != len(doc) {
		return errSyntax // a second value or trailing bytes
	}
	return nil
}

// field is one top-level member of a JSON object: its key (unescaped) and
// the byte span of its value within the document.
type field struct {
	key        []byte
	keyStart   int // index of the key's opening quote
	start, end int
}

// topFields calls fn for each member of the top-level object in doc, in
// order. doc must be valid JSON (json.Valid); it returns errSyntax if the
// document is not an object.
func topFields(doc []byte, fn func(f field) bool) error {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return errSyntax
	}
	i = skipSpace(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return nil
	}
	for i < len(doc) {
		if doc[i] != '"' {
			return errSyntax
		}
		kstart := i
		kend, err := skipString(doc, i)
		if err != nil {
			return err
		}
		key := doc[i+1 : kend-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			k, err := unquote(doc[i:kend])
			if err != nil {
				return err
			}
			key = []byte(k)
		}
		i = skipSpace(doc, kend)
		if i >= len(doc) || doc[i] != ':' {
			return errSyntax
		}
		i = skipSpace(doc, i+1)
		vend, err := skipValue(doc, i)
		if err != nil {
			return err
		}
		if !fn(field{key: key, keyStart: kstart, start: i, end: vend}) {
			return nil
		}
		i = skipSpace(doc, vend)
		if i >= len(doc) {
			return errSyntax
		}
		switch doc[i] {
		case ',':
			i = skipSpace(doc, i+1)
		case '}':
			return nil
		default:
			return errSyntax
		}
	}
	return errSyntax
}

// unquote returns the string value of a JSON string literal, without
// allocating beyond the result when it holds no escapes.
func unquote(lit []byte) (string, error) {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	b, err := appendUnquoted(make([]byte, 0, len(inner)), lit)
	return string(b), err
}

// appendUnquoted appends the value of a JSON string literal to dst. Escapes
// are decoded by jsontext in one pass (encoding/json validates the literal
// again and decodes through reflection: 6× slower on a 4 MiB prompt,
// BenchmarkParse); what jsontext refuses (invalid UTF-8, lone surrogates)
// goes to encoding/json, which replaces it as it always did.
func appendUnquoted(dst, lit []byte) ([]byte, error) {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return append(dst, inner...), nil
	}
	if out, err := jsontext.AppendUnquote(dst, lit); err == nil {
		return out, nil
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return dst, err
	}
	return append(dst, s...), nil
}

// appendUnquotedHead appends the value of the JSON string literal lit to
// dst or, when limit > 0 and the literal holds more than limit bytes, the
// value of its head (appendHead). It returns the whole value's length too:
// the head's decoded length plus the rest's (decodedLen, which counts
// without decoding; exact for valid UTF-8), so a cut value always reports
// more than its head.
func appendUnquotedHead(dst, lit []byte, limit int) ([]byte, int, error) {
	n := len(dst)
	out, cut, err := appendHead(dst, lit, limit)
	if err != nil {
		return out, 0, err
	}
	return out, len(out) - n + decodedLen(lit[1+cut:len(lit)-1]), nil
}

// appendHead appends the value of the JSON string literal lit to dst or,
// when limit > 0 and the literal holds more than limit bytes, the value of
// its head: up to a cut at or before limit bytes that splits no escape and
// no UTF-8 sequence (headCut), decoded as a literal of its own. It returns
// the cut as an index into the literal's inside: its length when the whole
// value was appended (also where no cut is found).
func appendHead(dst, lit []byte, limit int) ([]byte, int, error) {
	inner := lit[1 : len(lit)-1]
	cut := -1
	if limit > 0 && len(inner) > limit {
		cut = headCut(inner, limit)
	}
	if cut < 0 {
		out, err := appendUnquoted(dst, lit)
		return out, len(inner), err
	}
	head := inner[:cut]
	if bytes.IndexByte(head, '\\') < 0 {
		return append(dst, head...), cut, nil
	}
	tmp := make([]byte, 0, cut+2)
	tmp = append(append(append(tmp, '"'), head...), '"')
	out, err := appendUnquoted(dst, tmp)
	return out, cut, err
}

// headCut returns an index i <= limit of the inside of a valid string
// literal such that inner[:i] is whole characters and escapes, searching
// down from limit for at most 64 bytes (0 is always such an index); -1
// when none is found. i is a cut when it starts an escape (a backslash
// after an even run of them), or starts a UTF-8 sequence with no backslash
// in the five bytes before it (an escape is at most six bytes: \uXXXX).
func headCut(inner []byte, limit int) int {
	for i := limit; i >= 0 && i > limit-64; i-- {
		if i == 0 {
			return 0
		}
		c := inner[i]
		if c == '\\' {
			run := 0
			for j := i - 1; j >= 0 && inner[j] == '\\' && run <= 64; j-- {
				run++
			}
			if run%2 == 0 && run <= 64 && !lowSurrogate(inner[i:]) {
				return i
			}
			continue
		}
		if utf8.RuneStart(c) && bytes.IndexByte(inner[max(0, i-5):i], '\\') < 0 {
			return i
		}
	}
	return -1
}

// lowSurrogate reports whether esc starts with the escape of a UTF-16 low
// surrogate (\uDC00-\uDFFF), the second half of a pair a cut must not
// separate.
func lowSurrogate(esc []byte) bool {
	return len(esc) >= 4 && esc[1] == 'u' && esc[2]|0x20 == 'd' && (esc[3]|0x20 >= 'c' && esc[3]|0x20 <= 'f')
}

func skipSpace(doc []byte, i int) int {
	for i < len(doc) {
		switch doc[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string literal starting at i.
func skipString(doc []byte, i int) (int, error) {
	for j := i + 1; j < len(doc); j++ {
		switch doc[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errSyntax
}

// skipValue returns the index after the value starting at i.
func skipValue(doc []byte, i int) (int, error) {
	if i >= len(doc) {
		return 0, errSyntax
	}
	switch doc[i] {
	case '"':
		return skipString(doc, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(doc); j++ {
			switch doc[j] {
			case '"':
				end, err := skipString(doc, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, errSyntax
	default: // number, true, false, null
		j := i
		for j < len(doc) {
			switch doc[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j, nil
			}
			j++
		}
		return j, nil
	}
}

// arrayElems calls fn with the span of each element of the JSON array that
// starts at doc[0] == '['. doc must be valid JSON.
func arrayElems(doc []byte, fn func(start, end int) bool) error {
	if len(doc) == 0 || doc[0] != '[' {
		return errSyntax
	}
	i := skipSpace(doc, 1)
	if i < len(doc) && doc[i] == ']' {
		return nil
	}
	for i < len(doc) {
		end, err := skipValue(doc, i)
		if err != nil {
			return err
		}
		if !fn(i, end) {
			return nil
		}
		i = skipSpace(doc, end)
		if i >= len(doc) {
			return errSyntax
		}
		switch doc[i] {
		case ',':
			i = skipSpace(doc, i+1)
		case ']':
			return nil
		default:
			return errSyntax
		}
	}
	return errSyntax
}

// parseInt reads a JSON integer value; other values give ok == false.
func parseInt(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	n, neg, i := 0, false, 0
	if v[0] == '-' {
		neg, i = true, 1
	}
	if i == len(v) {
		return 0, false
	}
	for ; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}
