package openai

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
)

// Error types and codes the router uses, following OpenAI's.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
	TypeUnavailable    = "service_unavailable_error"

	CodeModelNotFound = "model_not_found"
	CodeTooLarge      = "request_too_large"
	CodeInvalidJSON   = "invalid_json"
	CodeInvalidType   = "invalid_type"
	CodeMissing       = "missing_required_parameter"
	CodeInvalidValue  = "invalid_value"
	CodeNoEndpoint    = "no_endpoint_available"
	CodeUpstream      = "upstream_error"
	// CodeUpstreamUnavailable: no engine could be reached or none answered
	// usably; the details are in the router's log, not in the answer.
	CodeUpstreamUnavailable = "upstream_unavailable"
	CodeDuplicateKey        = "duplicate_key"
	CodeOverloaded          = "overloaded"
	CodeMethodNotFound      = "method_not_allowed"
	CodeUpstreamTimeout     = "upstream_timeout"
	CodeRequestTimeout      = "request_timeout"
	CodeShuttingDown        = "shutting_down"
)

// Error is an OpenAI-shaped API error with its HTTP status.
type Error struct {
	Status  int
	Message string
	Type    string
	Param   string
	Code    string
}

func (e *Error) Error() string { return e.Message }

type errorBody struct {
	Error errorFields `json:"error"`
}

type errorFields struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Body returns {"error":{"message","type","param","code"}}; an empty param or
// code is null, as OpenAI sends it.
func (e *Error) Body() []byte {
	f := errorFields{Message: e.Message, Type: e.Type}
	if e.Param != "" {
		f.Param = &e.Param
	}
	if e.Code != "" {
		f.Code = &e.Code
	}
	b, err := json.Marshal(errorBody{Error: f})
	if err != nil { // cannot happen: strings only
		return []byte(`{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}`)
	}
	return b
}

// Write sends the error as a JSON response.
func (e *Error) Write(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Del("Content-Length")
	w.WriteHeader(e.Status)
	w.Write(e.Body())
}

// SSE returns the error as one server-sent event, "data: {...}\n\n", the
// form in which OpenAI's clients expect an error in the middle of a stream.
func (e *Error) SSE() []byte {
	b := e.Body()
	out := make([]byte, 0, len(b)+8)
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}

// BadRequest returns a 400 invalid_request_error.
func BadRequest(param, code, msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Type: TypeInvalidRequest, Param: param, Code: code, Message: msg}
}

// ModelNotFound returns OpenAI's 404 for an unknown model.
func ModelNotFound(model string) *Error {
	return &Error{
		Status:  http.StatusNotFound,
		Type:    TypeInvalidRequest,
		Param:   "model",
		Code:    CodeModelNotFound,
		Message: "The model `" + model + "` does not exist or you do not have access to it.",
	}
}

// TooLarge returns a 413 for a body over limit bytes.
func TooLarge(limit int64) *Error {
	return &Error{
		Status:  http.StatusRequestEntityTooLarge,
		Type:    TypeInvalidRequest,
		Code:    CodeTooLarge,
		Message: "request body is larger than the limit of " + itoa(limit) + " bytes",
	}
}

// Unavailable returns a 503 for when no endpoint can serve.
func Unavailable(msg string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeNoEndpoint, Message: msg}
}

// Overloaded returns a 503 for a router that cannot take the request now
// (the caller sets Retry-After).
func Overloaded(msg string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeOverloaded, Message: msg}
}

// UpstreamUnavailable returns a 502 for engines that could not be reached
// or gave no usable answer. msg must not carry addresses or Go error text.
func UpstreamUnavailable(msg string) *Error {
	return &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: CodeUpstreamUnavailable, Message: msg}
}

// BadGateway returns a 502 for an engine failure the router could not hide.
func BadGateway(msg string) *Error {
	return &Error{Status: http.StatusBadGateway, Type: TypeServer, Code: CodeUpstream, Message: msg}
}

// GatewayTimeout returns a 504 for an engine that did not answer in time.
func GatewayTimeout(msg string) *Error {
	return &Error{Status: http.StatusGatewayTimeout, Type: TypeServer, Code: CodeUpstreamTimeout, Message: msg}
}

// RequestTimeout returns a 408 for a request body that did not arrive in
// time.
func RequestTimeout(msg string) *Error {
	return &Error{Status: http.StatusRequestTimeout, Type: TypeInvalidRequest, Code: CodeRequestTimeout, Message: msg}
}

// ShuttingDown returns a 503 for a request the router cut because it is
// stopping.
func ShuttingDown() *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: TypeUnavailable, Code: CodeShuttingDown,
		Message: "The router is shutting down; retry the request."}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// maxUpstreamMessage caps the engine text kept in a wrapped error.
const maxUpstreamMessage = 4 << 10

// FromUpstream returns an engine's error answer (status, body) as an
// OpenAI-shaped error, or nil when body already is one (a JSON object whose
// "error" member is an object with a string "message"), so that it can be
// passed through. The engine's message is kept: the "message" member of a
// JSON body (vLLM's older {"object":"error","message":...} shape) or else
// the body's text.
func FromUpstream(status int, body []byte) *Error {
	var shaped struct {
		Error *struct {
			Message *string `json:"message"`
		} `json:"error"`
		Message *string `json:"message"`
		Param   *string `json:"param"`
	}
	msg := ""
	param := ""
	if json.Unmarshal(body, &shaped) == nil {
		if shaped.Error != nil && shaped.Error.Message != nil {
			return nil
		}
		if shaped.Message != nil {
			msg = *shaped.Message
		}
		if shaped.Param != nil {
			param = *shaped.Param
		}
	}
	if msg == "" {
		msg = string(bytes.TrimSpace(body))
	}
	if len(msg) > maxUpstreamMessage {
		msg = msg[:maxUpstreamMessage] + "..."
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	e := &Error{Status: status, Message: "the model's endpoint answered " + strconv.Itoa(status) + ": " + msg, Param: param}
	switch {
	case status >= 500:
		e.Type, e.Code = TypeServer, CodeUpstream
	default:
		e.Type = TypeInvalidRequest
	}
	return e
}
