package router

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/routing"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// setExplainHeader adds a compact explanation when the client asked for it:
//
//	route=llama>stable; profile=default; picked=e1; attempt=1; e0=1.50(prefix-cache:0.50 queue-depth:1.00); e2=filtered(health)
func (r *Router) setExplainHeader(h http.Header, c *call, d *decision, attempt int) {
	if !c.explain {
		return
	}
	h.Set(HeaderRoute, compactExplanation(c, d, attempt))
}

func compactExplanation(c *call, d *decision, attempt int) string {
	var b strings.Builder
	b.WriteString("route=")
	b.WriteString(c.route.Model)
	b.WriteByte('>')
	b.WriteString(d.target.Pool)
	if d.fallback {
		b.WriteString("(fallback)")
	}
	b.WriteString("; profile=")
	b.WriteString(c.profile.Name())
	b.WriteString("; picked=")
	b.WriteString(d.endpoint.Metadata().Name)
	b.WriteString("; attempt=")
	b.WriteString(strconv.Itoa(attempt))
	if ex := d.explanation; ex != nil {
		for _, e := range ex.Endpoints {
			b.WriteString("; ")
			b.WriteString(e.Name)
			if e.FilteredBy != "" {
				b.WriteString("=filtered(")
				b.WriteString(e.FilteredBy)
				b.WriteByte(')')
				continue
			}
			b.WriteByte('=')
			b.WriteString(strconv.FormatFloat(e.Total, 'f', 2, 64))
			names := make([]string, 0, len(e.Scores))
			for n := range e.Scores {
				names = append(names, n)
			}
			sort.Strings(names)
			b.WriteByte('(')
			for i, n := range names {
				if i > 0 {
					b.WriteByte(' ')
				}
				b.WriteString(n)
				b.WriteByte(':')
				b.WriteString(strconv.FormatFloat(e.Scores[n], 'f', 2, 64))
			}
			b.WriteByte(')')
		}
		for _, n := range ex.Notes {
			b.WriteString("; note=")
			b.WriteString(n)
		}
	}
	for _, x := range d.excluded {
		b.WriteString("; ")
		b.WriteString(x.Name)
		b.WriteString("=excluded(")
		b.WriteString(x.Reason)
		b.WriteByte(')')
	}
	return b.String()
}

// RouteExplanation is the body of /debug/route.
type RouteExplanation struct {
	Model string `json:"model"`
	Kind  string `json:"kind"`
	Route struct {
		Adapter string `json:"adapter,omitempty"`
		Profile string `json:"profile"`
	} `json:"route"`
	// Target is the pool that served, or would serve, and the model name the
	// engine is asked for.
	Target *struct {
		Pool     string `json:"pool"`
		Model    string `json:"model"`
		Fallback bool   `json:"fallback"`
	} `json:"target,omitempty"`
	// Excluded lists endpoints of the targets' pools left out before
	// scheduling, with the reason.
	Excluded    []exclusion            `json:"excluded,omitempty"`
	Explanation *framework.Explanation `json:"explanation,omitempty"`
	Picked      string                 `json:"picked,omitempty"`
	// PromptTokens is the router's estimate of the prompt's length.
	PromptTokens int    `json:"promptTokens"`
	Error        string `json:"error,omitempty"`
}

// serveDebugRoute explains where a request would go without sending it. POST
// takes a chat or completion body (chat if it has "messages"; ?kind= forces
// one); GET takes ?model=&prompt=.
func (r *Router) serveDebugRoute(w http.ResponseWriter, hr *http.Request) {
	kind := openai.KindCompletion
	if hr.Method == http.MethodGet {
		q := hr.URL.Query()
		b, _ := json.Marshal(map[string]any{"model": q.Get("model"), "prompt": q.Get("prompt")})
		hr.Body = http.NoBody
		hr.ContentLength = 0
		c, aerr, _ := r.prepareBody(hr, kind, b)
		r.explainCall(w, hr, c, aerr)
		return
	}
	body, aerr := r.readBody(w, hr)
	if aerr != nil {
		aerr.Write(w)
		return
	}
	switch hr.URL.Query().Get("kind") {
	case "chat":
		kind = openai.KindChat
	case "completion":
	default:
		if strings.Contains(string(body), `"messages"`) {
			kind = openai.KindChat
		}
	}
	c, aerr, _ := r.prepareBody(hr, kind, body)
	r.explainCall(w, hr, c, aerr)
}

func (r *Router) explainCall(w http.ResponseWriter, hr *http.Request, c *call, aerr *openai.Error) {
	if aerr != nil {
		aerr.Write(w)
		return
	}
	c.explain = true
	out := RouteExplanation{Model: c.route.Model, Kind: c.kind.String(), PromptTokens: c.req.PromptTokens}
	out.Route.Adapter = c.route.Adapter
	out.Route.Profile = c.profile.Name()
	primary, fallback := c.route.Pick(hr.Header)
	d, ok := r.decide(hr.Context(), c, append([]routing.Target{primary}, fallback...), nil)
	out.Excluded = d.excluded
	out.Explanation = d.explanation
	if ok {
		out.Target = &struct {
			Pool     string `json:"pool"`
			Model    string `json:"model"`
			Fallback bool   `json:"fallback"`
		}{d.target.Pool, engineModel(d.target, d.endpoint), d.fallback}
		out.Picked = d.endpoint.Metadata().Name
	} else {
		out.Error = "no endpoint is available"
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}
