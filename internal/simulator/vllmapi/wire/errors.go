package wire

import (
	"fmt"
	"net/http"
)

// Error is an error answered with vLLM's error body and status code.
type Error struct {
	// Status is the HTTP status code, also written as the body's code.
	Status int
	// Type is vLLM's error type, e.g. BadRequestError.
	Type string
	// Message says what is wrong.
	Message string
	// Param names the offending field, or "" (written as null).
	Param string
}

func (e *Error) Error() string { return e.Message }

// ErrorBody is vLLM's error response: {"error":{"message","type","param","code"}}.
type ErrorBody struct {
	Error ErrorInfo `json:"error"`
}

// ErrorInfo is the inner object of ErrorBody.
type ErrorInfo struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}

// Body returns the error's response body.
func (e *Error) Body() ErrorBody {
	var param *string
	if e.Param != "" {
		param = &e.Param
	}
	return ErrorBody{Error: ErrorInfo{Message: e.Message, Type: e.Type, Param: param, Code: e.Status}}
}

// BadRequest is a 400 BadRequestError about param.
func BadRequest(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: "BadRequestError", Message: fmt.Sprintf(format, args...), Param: param}
}

// NotFound is a 404 NotFoundError about param.
func NotFound(param, format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Type: "NotFoundError", Message: fmt.Sprintf(format, args...), Param: param}
}

// Internal is a 500 InternalServerError.
func Internal(format string, args ...any) *Error {
	return &Error{Status: http.StatusInternalServerError, Type: "InternalServerError", Message: fmt.Sprintf(format, args...)}
}

// Unavailable is a 503 ServiceUnavailableError.
func Unavailable(format string, args ...any) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Type: "ServiceUnavailableError", Message: fmt.Sprintf(format, args...)}
}

// TooLarge is a 413 for a body over limit bytes.
func TooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Type: "RequestEntityTooLarge",
		Message: fmt.Sprintf("request body larger than %d bytes", limit)}
}
