package vllmapi

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// apiError is an error answered with vLLM's error body.
type apiError struct {
	status  int
	typ     string
	message string
	param   string
}

func (e *apiError) Error() string { return e.message }

type errorBody struct {
	Error errorInfo `json:"error"`
}

type errorInfo struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    int     `json:"code"`
}

func (e *apiError) body() errorBody {
	var param *string
	if e.param != "" {
		param = &e.param
	}
	return errorBody{Error: errorInfo{Message: e.message, Type: e.typ, Param: param, Code: e.status}}
}

func badRequest(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "BadRequestError", message: fmt.Sprintf(format, args...), param: param}
}

func notFound(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusNotFound, typ: "NotFoundError", message: fmt.Sprintf(format, args...), param: param}
}

func internalError(format string, args ...any) *apiError {
	return &apiError{status: http.StatusInternalServerError, typ: "InternalServerError", message: fmt.Sprintf(format, args...)}
}

func unavailable(format string, args ...any) *apiError {
	return &apiError{status: http.StatusServiceUnavailable, typ: "ServiceUnavailableError", message: fmt.Sprintf(format, args...)}
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(e.body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
