package router

import (
	"encoding/json"
	"net/http"

	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/routing"
)

type modelList struct {
	Object string      `json:"object"`
	Data   []modelCard `json:"data"`
}

type modelCard struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// serveModels lists the routes' public models (those the caller's tenant
// may use when admission is on).
func (r *Router) serveModels(w http.ResponseWriter, hr *http.Request) {
	tenant, ok := r.authenticate(w, hr)
	if !ok {
		return
	}
	out := modelList{Object: "list", Data: []modelCard{}}
	for _, m := range r.routes().table.Models() {
		if tenant != nil && !tenant.Allows(m) {
			continue
		}
		out.Data = append(out.Data, modelCard{ID: m, Object: "model", OwnedBy: "halyard"})
	}
	writeJSON(w, http.StatusOK, out)
}

// serveHealth answers 200 while the process serves.
func (r *Router) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

type readiness struct {
	Ready bool `json:"ready"`
	// NotReady lists the public models none of whose pools has a healthy
	// endpoint.
	NotReady []string `json:"notReady,omitempty"`
}

// Ready reports whether every route can be served: at least one of its
// pools (targets, rule targets or fallbacks) has an endpoint the request
// path would use for it (canServe). It also returns the models that cannot.
func (r *Router) Ready() (bool, []string) {
	var missing []string
	table := r.routes().table
	for _, m := range table.Models() {
		rt, _ := table.Lookup(m)
		ok := false
		for _, t := range rt.Targets() {
			if ok = r.canServe(rt, t.Pool); ok {
				break
			}
		}
		if !ok {
			missing = append(missing, m)
		}
	}
	return len(missing) == 0 && len(table.Models()) > 0, missing
}

// canServe reports whether pool has endpoints that can serve route now,
// with the candidate filters of the request path: a healthy endpoint of the
// right role listing the route's adapter; for a disaggregated pool a decode
// candidate and a prefill candidate (unless it may prefill locally).
func (r *Router) canServe(route *routing.Route, pool string) bool {
	pp := r.pdPools[pool]
	if pp == nil {
		cands, _ := r.candidates(route, pool, nil, false)
		return len(cands) > 0
	}
	prefill, decode, _ := r.pdCandidates(route, pool, false)
	return len(decode) > 0 && (len(prefill) > 0 || pp.spec.FallbackToLocalPrefill)
}

// serveReady answers 200 when Ready, else 503, with the details as JSON.
func (r *Router) serveReady(w http.ResponseWriter, _ *http.Request) {
	ok, missing := r.Ready()
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, readiness{Ready: ok, NotReady: missing})
}

func (r *Router) serveNotFound(w http.ResponseWriter, hr *http.Request) {
	e := &openai.Error{Status: http.StatusNotFound, Type: openai.TypeInvalidRequest, Code: "unknown_url",
		Message: "Unknown request URL: " + hr.Method + " " + hr.URL.Path + "."}
	e.Write(w)
}

// allowedMethods are the methods of the router's paths, for 405 answers.
var allowedMethods = map[string]string{
	"/v1/chat/completions": http.MethodPost,
	"/v1/completions":      http.MethodPost,
	"/v1/models":           http.MethodGet,
	"/health":              http.MethodGet,
	"/ready":               http.MethodGet,
}

func (r *Router) serveMethodNotAllowed(w http.ResponseWriter, hr *http.Request) {
	allow := allowedMethods[hr.URL.Path]
	w.Header().Set("Allow", allow)
	e := &openai.Error{Status: http.StatusMethodNotAllowed, Type: openai.TypeInvalidRequest, Code: openai.CodeMethodNotFound,
		Message: "Method " + hr.Method + " is not allowed on " + hr.URL.Path + "; use " + allow + "."}
	e.Write(w)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		openai.BadGateway("encode response: " + err.Error()).Write(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
