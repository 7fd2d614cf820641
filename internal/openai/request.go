package openai

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
)

// Kind tells which OpenAI API a request is for.
type Kind uint8

// Request kinds.
const (
	KindChat       Kind = iota + 1 // /v1/chat/completions
	KindCompletion                 // /v1/completions
)

func (k Kind) String() string {
	switch k {
	case KindChat:
		return "chat"
	case KindCompletion:
		return "completion"
	}
	return "unknown"
}

// Request is what the router reads from a chat or completion request. The
// body itself is kept in Raw and forwarded unchanged unless the model name
// must change (see WithModel).
type Request struct {
	Kind Kind
	// Model is the "model" field.
	Model string
	// Stream is the "stream" field.
	Stream bool
	// IncludeUsage is "stream_options.include_usage".
	IncludeUsage bool
	// MaxTokens is "max_completion_tokens", else "max_tokens", else 0.
	MaxTokens int
	// User is the "user" field.
	User string
	// PromptText is the prompt: for chat every message rendered in order
	// ("role: content\n"), for completions the prompt string(s). Nil when the
	// prompt was token ids.
	PromptText []byte
	// PromptTextBytes is the length of the whole prompt text when
	// PromptText holds only its head (ParseHead), counted without decoding
	// the rest (exact for valid UTF-8 in strings; a later message's content
	// parts count at their raw length); 0 when PromptText is whole.
	PromptTextBytes int
	// PromptTokenIDs holds the prompt's token ids when the client sent ids.
	PromptTokenIDs []uint32
	// Raw is the body as received.
	Raw []byte

	modelStart, modelEnd int // span of the model's value in Raw
	maxText              int // ParseHead's limit; 0 none
}

// Parse reads a request of kind k from body. The returned Request refers to
// body (Raw), which the caller must not modify afterwards. Errors are 400
// *Error values naming the offending parameter.
func Parse(k Kind, body []byte) (*Request, *Error) { return ParseHead(k, body, 0) }

// ParseHead is Parse keeping about maxText bytes of the prompt's text (0:
// all of it): a prompt string or message content is decoded up to a cut at
// or before the limit that splits no escape, UTF-8 sequence or surrogate
// pair (headCut), and PromptTextBytes estimates the whole length. The body
// is still validated whole; a prompt sent as an array of strings is
// decoded whole. A router that reads a long prompt's head only (hashing,
// tokenising) then neither decodes nor holds the rest: 4 MiB of a
// 1M-token prompt.
func ParseHead(k Kind, body []byte, maxText int) (*Request, *Error) {
	r := &Request{Kind: k, Raw: body, modelStart: -1, maxText: maxText}
	var (
		perr              *Error
		seenModel         bool
		seenPrompt        bool
		maxTokens, maxCmp = -1, -1
	)
	var keys dupKeys
	serr := walkObject(body, func(key []byte, start, end int) bool {
		if keys.seen(key) {
			// The engine may read the other value than the router
			// routed on (Python's json keeps the last, others the first).
			k := string(key)
			perr = BadRequest(k, CodeDuplicateKey, "The key \""+k+"\" appears more than once at the top level of the request body.")
			return false
		}
		v := body[start:end]
		switch string(key) {
		case "model":
			seenModel = true
			if v[0] != '"' {
				perr = typeError("model", "a string", v)
				return false
			}
			s, err := unquote(v)
			if err != nil {
				perr = typeError("model", "a string", v)
				return false
			}
			r.Model, r.modelStart, r.modelEnd = s, start, end
		case "stream":
			b, ok := parseBool(v)
			if !ok {
				perr = typeError("stream", "a boolean", v)
				return false
			}
			r.Stream = b
		case "stream_options":
			perr = r.parseStreamOptions(v)
		case "max_tokens":
			maxTokens, perr = parseCount("max_tokens", v)
		case "max_completion_tokens":
			maxCmp, perr = parseCount("max_completion_tokens", v)
		case "user":
			if isNull(v) {
				break
			}
			if v[0] != '"' {
				perr = typeError("user", "a string", v)
				return false
			}
			r.User, _ = unquote(v)
		case "messages":
			if k == KindChat {
				seenPrompt = true
				perr = r.parseMessages(v)
			}
		case "prompt":
			if k == KindCompletion {
				seenPrompt = true
				perr = r.parsePrompt(v)
			}
		}
		return perr == nil
	})
	switch {
	case errors.Is(serr, errNotObject):
		return nil, BadRequest("", CodeInvalidJSON, msgNotObject)
	case serr != nil:
		if nestingExceeds(body, MaxNesting) {
			return nil, BadRequest("", CodeInvalidJSON, msgTooDeep)
		}
		return nil, BadRequest("", CodeInvalidJSON, msgInvalidJSON)
	}
	if perr != nil {
		return nil, perr
	}
	if !seenModel || r.Model == "" {
		return nil, BadRequest("model", CodeMissing, "You must provide a model parameter.")
	}
	if !seenPrompt {
		if k == KindChat {
			return nil, BadRequest("messages", CodeMissing, "Missing required parameter: 'messages'.")
		}
		return nil, BadRequest("prompt", CodeMissing, "Missing required parameter: 'prompt'.")
	}
	switch {
	case maxCmp >= 0:
		r.MaxTokens = maxCmp
	case maxTokens >= 0:
		r.MaxTokens = maxTokens
	}
	return r, nil
}

// dupKeys finds a repeated top-level key: by comparison while there are few
// (the usual body has under ten), then with a set.
type dupKeys struct {
	few  [16][]byte
	n    int
	many map[string]struct{}
}

// seen records k and reports whether it was recorded before.
func (d *dupKeys) seen(k []byte) bool {
	if d.many == nil {
		for _, s := range d.few[:d.n] {
			if string(s) == string(k) {
				return true
			}
		}
		if d.n < len(d.few) {
			d.few[d.n] = k
			d.n++
			return false
		}
		d.many = make(map[string]struct{}, 2*len(d.few))
		for _, s := range d.few {
			d.many[string(s)] = struct{}{}
		}
	}
	if _, ok := d.many[string(k)]; ok {
		return true
	}
	d.many[string(k)] = struct{}{}
	return false
}

// MaxNesting is the deepest nesting of objects and arrays a body may have:
// encoding/json's limit, which json.Valid enforces (and validate.go with it).
const MaxNesting = 10000

// The messages of a body that is not a JSON object.
const (
	msgInvalidJSON = "We could not parse the JSON body of your request. The body must be a JSON object."
	msgTooDeep     = "The JSON body of your request is nested more than 10000 levels deep, which is the limit."
	msgNotObject   = "The body of your request must be a JSON object."
)

// nestingExceeds reports whether doc nests objects and arrays deeper than
// limit, ignoring brackets inside strings.
func nestingExceeds(doc []byte, limit int) bool {
	depth := 0
	for i := 0; i < len(doc); i++ {
		switch doc[i] {
		case '"':
			for i++; i < len(doc) && doc[i] != '"'; i++ {
				if doc[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			if depth++; depth > limit {
				return true
			}
		case '}', ']':
			depth--
		}
	}
	return false
}

func (r *Request) parseStreamOptions(v []byte) *Error {
	if isNull(v) {
		return nil
	}
	if v[0] != '{' {
		return typeError("stream_options", "an object", v)
	}
	// vLLM's StreamOptions defaults include_usage to true: an engine sends
	// the usage chunk for "stream_options": {}, so the router reads it.
	r.IncludeUsage = true
	var perr *Error
	_ = topFields(v, func(f field) bool {
		if string(f.key) == "include_usage" {
			if isNull(v[f.start:f.end]) {
				r.IncludeUsage = false
				return true
			}
			b, ok := parseBool(v[f.start:f.end])
			if !ok {
				perr = typeError("stream_options.include_usage", "a boolean", v[f.start:f.end])
				return false
			}
			r.IncludeUsage = b
		}
		return true
	})
	return perr
}

func (r *Request) parseMessages(v []byte) *Error {
	if v[0] != '[' {
		return typeError("messages", "an array", v)
	}
	capacity := len(v)
	if r.maxText > 0 && len(v) > r.maxText {
		capacity = r.maxText + 64 // not the whole messages' length first
	}
	text := make([]byte, 0, capacity)
	// Past ParseHead's limit (full), messages are still checked, but their
	// text is only counted, by its raw length, into rest.
	full, rest := false, 0
	i := 0
	var perr *Error
	_ = arrayElems(v, func(start, end int) bool {
		path := "messages[" + strconv.Itoa(i) + "]"
		i++
		m := v[start:end]
		if m[0] != '{' {
			perr = BadRequest("messages", CodeInvalidType, "Invalid type for '"+path+"': expected an object, but got "+jsonType(m)+".")
			return false
		}
		var role, content []byte
		_ = topFields(m, func(f field) bool {
			switch string(f.key) {
			case "role":
				role = m[f.start:f.end]
			case "content":
				content = m[f.start:f.end]
			}
			return true
		})
		if role == nil || isNull(role) {
			perr = BadRequest(path+".role", CodeMissing, "Missing required parameter: '"+path+".role'.")
			return false
		}
		if role[0] != '"' {
			perr = typeError(path+".role", "a string", role)
			return false
		}
		rs, err := unquote(role)
		if err != nil || rs == "" {
			perr = BadRequest(path+".role", CodeMissing, "Missing required parameter: '"+path+".role'.")
			return false
		}
		if full {
			switch {
			case content == nil || isNull(content):
			case content[0] == '"':
				rest += decodedLen(content[1 : len(content)-1])
			case content[0] == '[':
				if _, ok := appendTextParts(nil, content); !ok {
					perr = typeError(path+".content", "a string or an array of content parts", content)
					return false
				}
				rest += len(content)
			default:
				perr = typeError(path+".content", "a string or an array of content parts", content)
				return false
			}
			rest += len(rs) + 3 // ": " and "\n"
			return true
		}
		text = append(text, rs...)
		text = append(text, ": "...)
		switch {
		case content == nil || isNull(content):
		case content[0] == '"':
			limit := 0
			if r.maxText > 0 {
				limit = max(r.maxText-len(text), 1)
			}
			n := len(text)
			var (
				whole int
				err   error
			)
			if text, whole, err = appendUnquotedHead(text, content, limit); err != nil {
				perr = typeError(path+".content", "a string or an array of content parts", content)
				return false
			}
			if whole > len(text)-n { // cut: the rest is not rendered
				full, rest = true, rest+whole-(len(text)-n)+1
				return true
			}
		case content[0] == '[':
			var ok bool
			if text, ok = appendTextParts(text, content); !ok {
				perr = typeError(path+".content", "a string or an array of content parts", content)
				return false
			}
		default:
			perr = typeError(path+".content", "a string or an array of content parts", content)
			return false
		}
		text = append(text, '\n')
		full = r.maxText > 0 && len(text) >= r.maxText
		return true
	})
	if perr != nil {
		return perr
	}
	if i == 0 {
		return BadRequest("messages", CodeInvalidValue, "Invalid 'messages': empty array. Expected an array with minimum length 1.")
	}
	r.PromptText = text
	if rest > 0 {
		r.PromptTextBytes = len(text) + rest
	}
	return nil
}

// appendTextParts appends the text of the "text" parts of a content array.
func appendTextParts(text, parts []byte) ([]byte, bool) {
	ok := true
	_ = arrayElems(parts, func(start, end int) bool {
		p := parts[start:end]
		if p[0] != '{' {
			ok = false
			return false
		}
		var typ, txt []byte
		_ = topFields(p, func(f field) bool {
			switch string(f.key) {
			case "type":
				typ = p[f.start:f.end]
			case "text":
				txt = p[f.start:f.end]
			}
			return true
		})
		if string(typ) == `"text"` && txt != nil && txt[0] == '"' {
			var err error
			if text, err = appendUnquoted(text, txt); err != nil {
				ok = false
				return false
			}
		}
		return true
	})
	return text, ok
}

func (r *Request) parsePrompt(v []byte) *Error {
	const want = "a string, an array of strings, an array of token ids or an array of arrays of token ids"
	switch v[0] {
	case '"':
		text, whole, err := appendUnquotedHead(nil, v, r.maxText)
		if err != nil {
			return typeError("prompt", want, v)
		}
		r.PromptText = text
		if whole > len(text) {
			r.PromptTextBytes = whole
		}
		return nil
	case '[':
	default:
		return typeError("prompt", want, v)
	}
	inner := skipSpace(v, 1)
	if v[inner] == ']' {
		return BadRequest("prompt", CodeInvalidValue, "Invalid 'prompt': empty array.")
	}
	switch v[inner] {
	case '"':
		var ss []string
		if err := json.Unmarshal(v, &ss); err != nil {
			return typeError("prompt", want, v)
		}
		r.PromptText = []byte(joinLines(ss))
	case '[':
		var ids [][]int64
		if err := json.Unmarshal(v, &ids); err != nil {
			return typeError("prompt", want, v)
		}
		for _, seq := range ids {
			for _, id := range seq {
				if id < 0 || id > math.MaxUint32 {
					return BadRequest("prompt", CodeInvalidValue, "Invalid 'prompt': token id "+strconv.FormatInt(id, 10)+" is out of range.")
				}
				r.PromptTokenIDs = append(r.PromptTokenIDs, uint32(id))
			}
		}
	default:
		var ids []int64
		if err := json.Unmarshal(v, &ids); err != nil {
			return typeError("prompt", want, v)
		}
		r.PromptTokenIDs = make([]uint32, len(ids))
		for i, id := range ids {
			if id < 0 || id > math.MaxUint32 {
				return BadRequest("prompt", CodeInvalidValue, "Invalid 'prompt': token id "+strconv.FormatInt(id, 10)+" is out of range.")
			}
			r.PromptTokenIDs[i] = uint32(id)
		}
	}
	return nil
}

func joinLines(ss []string) string {
	var b bytes.Buffer
	for i, s := range ss {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(s)
	}
	return b.String()
}

// WithModel returns the body with the "model" field's value replaced by
// model, every other byte unchanged. It returns Raw itself when the model is
// already model.
func (r *Request) WithModel(model string) []byte {
	if model == r.Model || r.modelStart < 0 {
		return r.Raw
	}
	q, _ := json.Marshal(model) // a string always marshals
	out := make([]byte, 0, len(r.Raw)-(r.modelEnd-r.modelStart)+len(q))
	out = append(out, r.Raw[:r.modelStart]...)
	out = append(out, q...)
	return append(out, r.Raw[r.modelEnd:]...)
}

func parseBool(v []byte) (bool, bool) {
	switch string(v) {
	case "true":
		return true, true
	case "false", "null":
		return false, true
	}
	return false, false
}

func isNull(v []byte) bool { return string(v) == "null" }

// parseCount reads a non-negative integer; null is -1 (absent).
func parseCount(param string, v []byte) (int, *Error) {
	if isNull(v) {
		return -1, nil
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		// JSON allows 1e3 and 100.0; accept integral floats.
		f, ferr := strconv.ParseFloat(string(v), 64)
		if ferr != nil || v[0] == '"' || f != math.Trunc(f) {
			return 0, typeError(param, "an integer", v)
		}
		n = int64(f)
	}
	if n < 0 || n > math.MaxInt32 {
		return 0, BadRequest(param, CodeInvalidValue, "Invalid '"+param+"': "+string(v)+" must be between 0 and 2147483647.")
	}
	return int(n), nil
}

func typeError(param, want string, v []byte) *Error {
	return BadRequest(param, CodeInvalidType, "Invalid type for '"+param+"': expected "+want+", but got "+jsonType(v)+".")
}

func jsonType(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
