package openai

import "errors"

// Message is one chat message as a chat template needs it: the role and
// the text content (the "text" parts of a multi-part content joined with
// newlines, as vLLM joins them for string-content templates).
type Message struct {
	Role    string
	Content string
}

// Messages returns the messages of a parsed chat request, read from its raw
// body with the request scanner (the body was validated by Parse). It
// returns nil for other kinds.
func (r *Request) Messages() ([]Message, error) {
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
				switch v[0] {
				case '"':
					msg.Content, verr = unquote(v)
				case '[':
					msg.Content, verr = joinTextParts(v)
				}
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
