package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// vLLM validates request bodies with pydantic models in lax mode and
// answers a failure with FastAPI's RequestValidationError rendered by its
// own handler: status 400, type "Bad Request", the message
//
//	1 validation error:
//	  {'type': 'int_parsing', 'loc': ('body', 'max_tokens'), 'msg': 'Input should be a valid integer, unable to parse string as an integer', 'input': 'ten'}
//
// and param the location joined by dots ("body.max_tokens"). This file
// reads the fields the simulator uses the way pydantic does and builds
// those errors. JSON object keys are matched exactly (case-sensitively), as
// pydantic and the router match them; unknown keys are ignored.

// Pydantic error types and messages (pydantic-core's words).
const (
	errInt           = "int_type"
	errIntParsing    = "int_parsing"
	errIntFromFloat  = "int_from_float"
	errFinite        = "finite_number"
	errBool          = "bool_type"
	errBoolParsing   = "bool_parsing"
	errString        = "string_type"
	errFloat         = "float_type"
	errFloatParsing  = "float_parsing"
	errList          = "list_type"
	errDict          = "dict_type"
	errModel         = "model_attributes_type"
	errMissing       = "missing"
	errJSONInvalid   = "json_invalid"
	errLessThanEqual = "less_than_equal"
	errGreaterEqual  = "greater_than_equal"
)

var pydanticMessages = map[string]string{
	errInt:          "Input should be a valid integer",
	errIntParsing:   "Input should be a valid integer, unable to parse string as an integer",
	errIntFromFloat: "Input should be a valid integer, got a number with a fractional part",
	errFinite:       "Input should be a finite number",
	errBool:         "Input should be a valid boolean",
	errBoolParsing:  "Input should be a valid boolean, unable to interpret input",
	errString:       "Input should be a valid string",
	errFloat:        "Input should be a valid number",
	errFloatParsing: "Input should be a valid number, unable to parse string as a number",
	errList:         "Input should be a valid list",
	errDict:         "Input should be a valid dictionary",
	errModel:        "Input should be a valid dictionary or object to extract fields from",
	errMissing:      "Field required",
	errJSONInvalid:  "JSON decode error",
}

// fieldError is one pydantic validation error.
type fieldError struct {
	typ string
	// loc is the location after "body": keys (string) and indexes (int).
	loc []any
	// msg overrides the type's message (constraint errors).
	msg string
	// input is the offending value as JSON; nil renders as {} (FastAPI's
	// input for a body it could not decode).
	input json.RawMessage
	// ctx is rendered as 'ctx': {...} when set, e.g. {'le': 9}.
	ctx string
}

func (e fieldError) message() string {
	if e.msg != "" {
		return e.msg
	}
	return pydanticMessages[e.typ]
}

// validationError renders errs as vLLM's answer to a RequestValidationError.
func validationError(errs ...fieldError) *Error {
	var b strings.Builder
	label := "error"
	if len(errs) != 1 {
		label = "errors"
	}
	fmt.Fprintf(&b, "%d validation %s:", len(errs), label)
	for _, e := range errs {
		b.WriteString("\n  {'type': ")
		b.WriteString(pyString(e.typ))
		b.WriteString(", 'loc': ")
		b.WriteString(pyLoc(e.loc))
		b.WriteString(", 'msg': ")
		b.WriteString(pyString(e.message()))
		b.WriteString(", 'input': ")
		if e.input == nil {
			b.WriteString("{}")
		} else {
			b.WriteString(pyRepr(e.input, maxInputRepr))
		}
		if e.ctx != "" {
			b.WriteString(", 'ctx': ")
			b.WriteString(e.ctx)
		}
		b.WriteString("}")
	}
	param := "body"
	if len(errs) > 0 {
		param = paramOf(errs[0].loc)
	}
	return &Error{Status: http.StatusBadRequest, Type: "Bad Request", Message: b.String(), Param: param}
}

// maxInputRepr bounds the rendering of an offending value; vLLM echoes it
// whole, which for a 10 MB prompt is 10 MB of error.
const maxInputRepr = 200

func paramOf(loc []any) string {
	parts := []string{"body"}
	for _, p := range loc {
		parts = append(parts, fmt.Sprint(p))
	}
	return strings.Join(parts, ".")
}

func pyLoc(loc []any) string {
	var b strings.Builder
	b.WriteString("('body'")
	for _, p := range loc {
		b.WriteString(", ")
		switch v := p.(type) {
		case string:
			b.WriteString(pyString(v))
		default:
			fmt.Fprint(&b, v)
		}
	}
	if len(loc) == 0 {
		b.WriteString(",")
	}
	b.WriteString(")")
	return b.String()
}

// pyString renders s as Python's repr of a str.
func pyString(s string) string {
	quote := byte('\'')
	if strings.Contains(s, "'") && !strings.Contains(s, `"`) {
		quote = '"'
	}
	var b strings.Builder
	b.WriteByte(quote)
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == rune(quote):
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(quote)
	return b.String()
}

// pyRepr renders a JSON value as Python's repr of what json.loads makes of
// it, cut to about limit bytes.
func pyRepr(raw json.RawMessage, limit int) string {
	var b strings.Builder
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "{}"
	}
	writeRepr(&b, v, limit)
	if b.Len() > limit {
		s := b.String()
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return s[:cut] + "..."
	}
	return b.String()
}

func writeRepr(b *strings.Builder, v any, limit int) {
	if b.Len() > limit {
		return
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("None")
	case bool:
		if x {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case string:
		b.WriteString(pyString(x))
	case json.Number:
		b.WriteString(pyNumber(x.String()))
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writeRepr(b, e, limit)
			if b.Len() > limit {
				return
			}
		}
		b.WriteByte(']')
	case map[string]any:
		// Python keeps insertion order; encoding/json loses it. Sorted keys
		// keep the rendering deterministic.
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(pyString(k))
			b.WriteString(": ")
			writeRepr(b, x[k], limit)
			if b.Len() > limit {
				return
			}
		}
		b.WriteByte('}')
	}
}

// pyNumber renders a JSON number as Python does after json.loads: integers
// as written, other numbers as floats (10.0, 1e+20, inf).
func pyNumber(s string) string {
	if !strings.ContainsAny(s, ".eE") {
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return s
	}
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case f == math.Trunc(f) && math.Abs(f) < 1e16:
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// object is a JSON object's members by exact key. Of duplicate keys the
// last one counts, as in Python's json.loads.
type object map[string]json.RawMessage

// decodeBody decodes a request body that must be one JSON object, with
// FastAPI's errors for bodies that are not.
func decodeBody(body []byte) (object, *Error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, validationError(fieldError{typ: errMissing, input: json.RawMessage("null")})
	}
	if !json.Valid(body) {
		var raw json.RawMessage
		return nil, jsonInvalid(json.Unmarshal(body, &raw))
	}
	raw := bytes.TrimSpace(body)
	switch raw[0] {
	case '{':
	case 'n':
		return nil, validationError(fieldError{typ: errMissing, input: raw})
	default:
		return nil, validationError(fieldError{typ: errModel, input: raw})
	}
	obj, ok := scanObject(raw)
	if !ok {
		return nil, validationError(fieldError{typ: errModel, input: raw})
	}
	return obj, nil
}

// jsonInvalid is FastAPI's error for a body that is not JSON: the location
// is the byte offset, the context Python's decoder message where Go's has a
// counterpart.
func jsonInvalid(err error) *Error {
	var se *json.SyntaxError
	pos := int64(0)
	msg := err.Error()
	if errors.As(err, &se) {
		pos = se.Offset
		msg = se.Error()
	}
	switch {
	case strings.Contains(msg, "unexpected end of JSON input"):
		msg = "Expecting value"
	case strings.Contains(msg, "after top-level value"):
		msg = "Extra data"
	case strings.Contains(msg, "looking for beginning of object key string"):
		msg = "Expecting property name enclosed in double quotes"
	case strings.Contains(msg, "looking for beginning of value"):
		msg = "Expecting value"
	case strings.Contains(msg, "exceeded max depth"):
		msg = "nesting exceeds the maximum depth of 10000"
	default:
		msg = strings.TrimPrefix(msg, "json: ")
	}
	return validationError(fieldError{typ: errJSONInvalid, loc: []any{int(pos)}, ctx: "{'error': " + pyString(msg) + "}"})
}

// has reports whether key is present and not null.
func (o object) has(key string) bool {
	v, ok := o[key]
	return ok && !isNull(v)
}

// str reads an optional string member; absent and null give ok=false.
func (o object) str(key string, loc []any, errs *[]fieldError) (string, bool) {
	v, ok := o[key]
	if !ok || isNull(v) {
		return "", false
	}
	s, good := asString(v)
	if !good {
		*errs = append(*errs, fieldError{typ: errString, loc: loc, input: v})
		return "", false
	}
	return s, true
}

func asString(v json.RawMessage) (string, bool) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || v[0] != '"' {
		return "", false
	}
	// v is a valid JSON string (it came out of a decoded body): without
	// escapes, and in valid UTF-8, its content is the bytes between the
	// quotes. json.Valid lets invalid UTF-8 through and encoding/json then
	// reads each bad byte as U+FFFD, so such a string takes the slow path to
	// agree with it.
	if len(v) >= 2 && v[len(v)-1] == '"' && bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v[1:len(v)-1]) {
		return string(v[1 : len(v)-1]), true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// integer is a lax integer: Big is set when the value does not fit an
// int64 (Python's ints are unbounded).
type integer struct {
	V   int64
	Big int // -1 or +1 when the value is below or above the int64 range
}

// int reads an integer member as pydantic's lax mode does: a JSON integer,
// a float without a fractional part (10.0, 1e1), a string of digits, or a
// boolean. nullable says whether null is allowed (an Optional field); a
// null there gives ok=false, as does an absent member.
func (o object) int(key string, nullable bool, loc []any, errs *[]fieldError) (integer, bool) {
	v, ok := o[key]
	if !ok {
		return integer{}, false
	}
	if isNull(v) {
		if !nullable {
			*errs = append(*errs, fieldError{typ: errInt, loc: loc, input: v})
		}
		return integer{}, false
	}
	n, typ := laxInt(v)
	if typ != "" {
		*errs = append(*errs, fieldError{typ: typ, loc: loc, input: v})
		return integer{}, false
	}
	return n, true
}

// laxInt converts v, or names the pydantic error type.
func laxInt(v json.RawMessage) (integer, string) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return integer{}, errInt
	}
	switch v[0] {
	case 't':
		return integer{V: 1}, ""
	case 'f':
		return integer{V: 0}, ""
	case '"':
		s, _ := asString(v)
		s = strings.TrimSpace(s)
		// pydantic also takes "10.0": trailing zero decimals.
		if i := strings.IndexByte(s, '.'); i > 0 && strings.Trim(s[i+1:], "0") == "" {
			s = s[:i]
		}
		if n, ok := parseBigInt(s); ok {
			return n, ""
		}
		return integer{}, errIntParsing
	case '[', '{':
		return integer{}, errInt
	}
	s := string(v)
	if !strings.ContainsAny(s, ".eE") {
		if n, ok := parseBigInt(s); ok {
			return n, ""
		}
		return integer{}, errInt
	}
	f, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return integer{}, errInt
	case math.IsInf(f, 0) || math.IsNaN(f):
		return integer{}, errFinite
	case f != math.Trunc(f):
		return integer{}, errIntFromFloat
	case f >= math.MaxInt64:
		return integer{V: math.MaxInt64, Big: 1}, ""
	case f < math.MinInt64:
		return integer{V: math.MinInt64, Big: -1}, ""
	}
	return integer{V: int64(f)}, ""
}

// parseBigInt reads an optionally signed run of digits of any length.
func parseBigInt(s string) (integer, bool) {
	if s == "" {
		return integer{}, false
	}
	digits := strings.TrimLeft(s, "+-")
	if len(s)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return integer{}, false
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return integer{V: n}, true
	}
	var b big.Int
	if _, ok := b.SetString(s, 10); !ok {
		return integer{}, false
	}
	if b.Sign() > 0 {
		return integer{V: math.MaxInt64, Big: 1}, true
	}
	return integer{V: math.MinInt64, Big: -1}, true
}

// bool reads a boolean member as pydantic's lax mode does: true/false, 0/1,
// 0.0/1.0 and the strings yes/no, on/off, t/f, y/n, true/false, 1/0 in any
// case. Absent and (when nullable) null give ok=false.
func (o object) bool(key string, nullable bool, loc []any, errs *[]fieldError) (bool, bool) {
	v, ok := o[key]
	if !ok {
		return false, false
	}
	if isNull(v) {
		if !nullable {
			*errs = append(*errs, fieldError{typ: errBool, loc: loc, input: v})
		}
		return false, false
	}
	b, typ := laxBool(v)
	if typ != "" {
		*errs = append(*errs, fieldError{typ: typ, loc: loc, input: v})
		return false, false
	}
	return b, true
}

func laxBool(v json.RawMessage) (bool, string) {
	v = bytes.TrimSpace(v)
	switch string(v) {
	case "true":
		return true, ""
	case "false":
		return false, ""
	}
	if len(v) == 0 {
		return false, errBool
	}
	switch v[0] {
	case '"':
		s, _ := asString(v)
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "1", "on", "t", "true", "y", "yes":
			return true, ""
		case "0", "off", "f", "false", "n", "no":
			return false, ""
		}
		return false, errBoolParsing
	case '[', '{':
		return false, errBool
	}
	f, err := strconv.ParseFloat(string(v), 64)
	switch {
	case err != nil:
		return false, errBool
	case f == 1:
		return true, ""
	case f == 0:
		return false, ""
	}
	return false, errBoolParsing
}

// float type-checks an optional number member (a sampling parameter the
// simulator does not use): a JSON number, a boolean or a numeric string.
func (o object) float(key string, loc []any, errs *[]fieldError) {
	v, ok := o[key]
	if !ok || isNull(v) {
		return
	}
	v = bytes.TrimSpace(v)
	switch v[0] {
	case 't', 'f':
		return
	case '[', '{':
		*errs = append(*errs, fieldError{typ: errFloat, loc: loc, input: v})
		return
	case '"':
		s, _ := asString(v)
		if _, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
			*errs = append(*errs, fieldError{typ: errFloatParsing, loc: loc, input: v})
		}
	}
}

// int64Range checks that n fits [math.MinInt64, math.MaxInt64] (vLLM's
// bounds on seed), naming the bound it crosses.
func int64Range(n integer, loc []any, input json.RawMessage, errs *[]fieldError) bool {
	switch {
	case n.Big > 0:
		*errs = append(*errs, fieldError{typ: errLessThanEqual, loc: loc, input: input,
			msg: "Input should be less than or equal to 9223372036854775807", ctx: "{'le': 9223372036854775807}"})
		return false
	case n.Big < 0:
		*errs = append(*errs, fieldError{typ: errGreaterEqual, loc: loc, input: input,
			msg: "Input should be greater than or equal to -9223372036854775808", ctx: "{'ge': -9223372036854775808}"})
		return false
	}
	return true
}

// object reads an optional nested object member (absent and null give
// ok=false), with its keys matched exactly.
func (o object) object(key string, loc []any, errs *[]fieldError) (object, bool) {
	v, ok := o[key]
	if !ok || isNull(v) {
		return nil, false
	}
	obj, ok := scanObject(v)
	if !ok {
		*errs = append(*errs, fieldError{typ: errDict, loc: loc, input: v})
		return nil, false
	}
	return obj, true
}

// messages reads a chat request's messages: a list of objects whose role
// (a string) and content are matched by exact key. An absent role is left
// empty for RenderMessages to refuse.
func (o object) messages(errs *[]fieldError) []ChatMessage {
	v, ok := o["messages"]
	if !ok {
		return nil
	}
	items, ok := scanArray(v)
	if !ok {
		*errs = append(*errs, fieldError{typ: errList, loc: []any{"messages"}, input: v})
		return nil
	}
	msgs := make([]ChatMessage, 0, len(items))
	for i, it := range items {
		m, ok := scanObject(it)
		if !ok {
			*errs = append(*errs, fieldError{typ: errDict, loc: []any{"messages", i}, input: it})
			continue
		}
		role, _ := m.str("role", []any{"messages", i, "role"}, errs)
		msgs = append(msgs, ChatMessage{Role: role, Content: m["content"]})
	}
	return msgs
}

// Decode decodes a body that must be one JSON object into the struct v
// pointed to, as pydantic would: keys are matched exactly against v's json
// tags (others ignored, not matched in another case as encoding/json
// would), and a value of the wrong type is a validation error naming its
// field, never Go's words.
func Decode(body []byte, v any) *Error {
	obj, perr := decodeBody(body)
	if perr != nil {
		return perr
	}
	known := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		known[name] = true
	}
	exact := make(map[string]json.RawMessage, len(obj))
	for k, raw := range obj {
		if known[k] {
			exact[k] = raw
		}
	}
	b, err := json.Marshal(exact)
	if err != nil {
		return Internal("re-encode the body: %v", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			return validationError(fieldError{typ: errJSONInvalid, ctx: "{'error': 'Expecting value'}"})
		}
		var loc []any
		for _, p := range strings.Split(te.Field, ".") {
			if p != "" {
				loc = append(loc, p)
			}
		}
		typ := errModel
		switch te.Type.Kind() {
		case reflect.String:
			typ = errString
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			typ = errInt
		case reflect.Float32, reflect.Float64:
			typ = errFloat
		case reflect.Bool:
			typ = errBool
		case reflect.Slice, reflect.Array:
			typ = errList
		}
		var input json.RawMessage
		if len(loc) > 0 {
			if k, ok := loc[0].(string); ok && len(loc) == 1 {
				input = obj[k]
			}
		}
		if input == nil {
			input = json.RawMessage("null")
		}
		return validationError(fieldError{typ: typ, loc: loc, input: input})
	}
	return nil
}

// strings reads a stop-style member: a string or a list of strings (null
// or absent: none). Empty strings are dropped.
func (o object) strings(key string, errs *[]fieldError) []string {
	v, ok := o[key]
	if !ok || isNull(v) {
		return nil
	}
	v = bytes.TrimSpace(v)
	if s, ok := asString(v); ok {
		if s == "" {
			return nil
		}
		return []string{s}
	}
	items, ok := scanArray(v)
	if !ok {
		*errs = append(*errs, fieldError{typ: errString, loc: []any{key}, input: v})
		return nil
	}
	var out []string
	for i, it := range items {
		s, ok := asString(it)
		if !ok {
			*errs = append(*errs, fieldError{typ: errString, loc: []any{key, i}, input: it})
			continue
		}
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
