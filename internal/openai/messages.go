package openai

import (
	"bytes"
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// Message is one chat message as a chat template needs it: the role and
// the text content (the "text" parts of a multi-part content joined with
// newlines, as vLLM joins them for string-content templates).
type Message struct {
	Role    string
	Content string
	// ContentBytes is the length of the whole content when Content holds
	// only its head (MessagesHead), estimated as ParseHead estimates a
	// prompt's; 0 when Content is whole.
	ContentBytes int
}

// Messages returns the messages of a parsed chat request, read from its raw
// body with the request scanner (the body was validated by Parse). It
// returns nil for other kinds.
func (r *Request) Messages() ([]Message, error) { return r.MessagesHead(0) }

// MessagesHead is Messages keeping the first limit bytes of the messages'
// contents taken in order (0: all): a string content is decoded up to a
// cut that splits no escape or character (appendUnquotedHead) once the
// contents before it and its head hold limit bytes, and the contents after
// that are left empty; ContentBytes says how long each cut one is. A
// template rendering these messages therefore renders the whole messages'
// text up to at least limit bytes into it, identically: a chat prompt of
// 1M tokens is not decoded and rendered whole to tokenise its head. A
// content of parts is kept whole.
func (r *Request) MessagesHead(limit int) ([]Message, error) {
	if r.Kind != KindChat {
		return nil, nil
	}
	var raw []byte
	if err := topFields(r.Raw, func(f field) bool {
		if string(f.key) == "messages" {
			raw = r.Raw[f.start:f.end]
			return false
		}
		return true
	}); err != nil {
		return nil, err
	}
	if len(raw) == 0 || raw[0] != '[' {
		return nil, errors.New("messages: not an array")
	}
	var out []Message
	var ferr error
	left := limit // content bytes still to decode, when limit > 0
	err := arrayElems(raw, func(start, end int) bool {
		m := raw[start:end]
		var msg Message
		var verr error
		ferr = topFields(m, func(f field) bool {
			v := m[f.start:f.end]
			switch string(f.key) {
			case "role":
				if v[0] == '"' {
					msg.Role, verr = unquote(v)
				}
			case "content":
				switch {
				case v[0] == '"' && limit > 0:
					msg.Content, msg.ContentBytes, verr = contentHead(v, left)
				case v[0] == '"':
					msg.Content, verr = unquote(v)
				case v[0] == '[':
					msg.Content, verr = joinTextParts(v)
				}
				left -= len(msg.Content)
			}
			return verr == nil
		})
		if ferr == nil {
			ferr = verr
		}
		out = append(out, msg)
		return ferr == nil
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// joinTextParts joins the "text" parts of a content array with newlines.
func joinTextParts(parts []byte) (string, error) {
	var text []byte
	n := 0
	var ferr error
	err := arrayElems(parts, func(start, end int) bool {
		p := parts[start:end]
		if p[0] != '{' {
			return true
		}
		var typ, txt []byte
		ferr = topFields(p, func(f field) bool {
			switch string(f.key) {
			case "type":
				typ = p[f.start:f.end]
			case "text":
				txt = p[f.start:f.end]
			}
			return true
		})
		if ferr != nil || string(typ) != `"text"` || len(txt) == 0 || txt[0] != '"' {
			return ferr == nil
		}
		if n > 0 {
			text = append(text, '\n')
		}
		n++
		text, ferr = appendUnquoted(text, txt)
		return ferr == nil
	})
	if err == nil {
		err = ferr
	}
	return string(text), err
}

// contentHead decodes the JSON string literal lit: whole when it holds at
// most need bytes, else a head of at least need bytes (none when need <= 0)
// and the whole value's length (decodedLen: exact for valid UTF-8). The raw
// bytes cut start at need; escapes make the decoded head shorter, so the
// raw cut grows at the head's ratio until the head is long enough.
func contentHead(lit []byte, need int) (string, int, error) {
	inner := lit[1 : len(lit)-1]
	if need <= 0 {
		return "", decodedLen(inner), nil
	}
	for raw := need; ; {
		head, cut, err := appendHead(nil, lit, min(raw, len(inner)))
		if err != nil || len(head) >= need || raw >= len(inner) {
			whole := 0
			if err == nil && cut < len(inner) { // the rest measured once, not per try
				whole = len(head) + decodedLen(inner[cut:])
			}
			return string(head), whole, err
		}
		raw = max(raw+64, raw*need/max(len(head), 1)+64)
	}
}

// decodedLen is the length of the value of the valid JSON string literal
// whose inside is inner, counted without decoding it: each escape's
// UTF-8 length (a lone surrogate as the three bytes of U+FFFD, as
// encoding/json decodes it). Exact for valid UTF-8 (FuzzUnquote); other
// bytes count as they are.
func decodedLen(inner []byte) int {
	n := 0
	for {
		i := bytes.IndexByte(inner, '\\')
		if i < 0 || i+1 >= len(inner) {
			return n + len(inner)
		}
		n += i
		inner = inner[i:]
		if inner[1] != 'u' || len(inner) < 6 {
			n++
			inner = inner[2:]
			continue
		}
		r := hexRune(inner[2:6])
		if utf16.IsSurrogate(r) {
			if r < 0xdc00 && len(inner) >= 12 && inner[6] == '\\' && inner[7] == 'u' {
				if r2 := hexRune(inner[8:12]); r2 >= 0xdc00 && r2 <= 0xdfff {
					n += 4 // a pair: one rune past the BMP
					inner = inner[12:]
					continue
				}
			}
			r = utf8.RuneError
		}
		n += utf8.RuneLen(r)
		inner = inner[6:]
	}
}

// hexRune reads four hex digits (valid, the literal being valid JSON).
func hexRune(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
