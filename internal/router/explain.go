package router

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/halyard-dev/halyard/internal/decision"
	"github.com/halyard-dev/halyard/internal/openai"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
)

// setResponseHeaders sets X-Halyard-Endpoint (the endpoint that served,
// when router.debug.endpointHeader is on) and, when the client asked for it
// and router.debug.explain is on, a compact explanation:
//
//	route=llama>stable; profile=default; picked=e1; attempt=1; e0=1.50(prefix-cache:0.50 queue-depth:1.00); e2=filtered(health)
func (r *Router) setResponseHeaders(h http.Header, c *call, d *pick, attempt int) {
	// The router's own id (the engine's X-Request-Id), for the caller to
	// quote; a client-sent id is only in the router's logs.
	h.Set(HeaderRequestID, c.req.ID)
	if r.cfg.Debug.EndpointHeaderEnabled() {
		h.Set(HeaderEndpoint, d.endpoint.Metadata().Name)
	}
	if c.watched {
		r.publishDecision(c, d, attempt)
	}
	if !c.explain {
		return
	}
	x := compactExplanation(c, d, attempt)
	if c.ticket != nil {
		x += "; " + c.ticket.Explain()
	}
	h.Set(HeaderRoute, x)
}

func compactExplanation(c *call, d *pick, attempt int) string {
	var b strings.Builder
	b.WriteString("route=")
	b.WriteString(c.route.Model)
	b.WriteByte('>')
	b.WriteString(d.Target.Pool)
	if d.Fallback {
		b.WriteString("(fallback)")
	}
	if a := d.pd; a != nil {
		writePD(&b, a)
	} else {
		b.WriteString("; profile=")
		b.WriteString(c.profile.Name())
	}
	b.WriteString("; picked=")
	b.WriteString(d.endpoint.Metadata().Name)
	b.WriteString("; attempt=")
	b.WriteString(strconv.Itoa(attempt))
	writeExplanation(&b, d.Explanation)
	if d.pd != nil && d.pd.plan.Prefill != nil && d.pd.prefill != "" {
		writeExplanation(&b, d.pd.plan.PrefillExplanation)
	}
	for _, x := range d.Excluded {
		b.WriteString("; ")
		b.WriteString(x.Name)
		b.WriteString("=excluded(")
		b.WriteString(x.Reason)
		b.WriteByte(')')
	}
	return b.String()
}

// writePD writes the PD decision: mode, profiles, prefill endpoint,
// topology, decode-first or fallback, prefill attempts.
func writePD(b *strings.Builder, a *pdAttempt) {
	b.WriteString("; pd=")
	b.WriteString(a.mode)
	b.WriteString("; profiles=")
	b.WriteString(a.pool.Spec.PrefillProfile)
	b.WriteByte('/')
	b.WriteString(a.pool.Spec.DecodeProfile)
	b.WriteString("; prefill=")
	if a.prefill == "" {
		b.WriteString("none")
	} else {
		b.WriteString(a.prefill)
		b.WriteString("; topology=")
		b.WriteString(a.plan.Topology)
	}
	b.WriteString("; decode-first=")
	switch {
	case a.skip != "":
		b.WriteString(a.skip)
	case !a.pool.Planner().Config().DecodeFirst:
		b.WriteString("off")
	default:
		fmt.Fprintf(b, "no(held=%.2f<%.2f)", a.plan.HeldShare(), a.pool.Planner().Config().MinHeldShare)
	}
	if a.fallback != "" {
		b.WriteString("; local-prefill=fallback(")
		b.WriteString(a.fallback)
		b.WriteByte(')')
	}
	if a.attempts > 1 {
		b.WriteString("; prefill-attempts=")
		b.WriteString(strconv.Itoa(a.attempts))
	}
}

// writeExplanation writes each candidate's total and scores, then the notes.
func writeExplanation(b *strings.Builder, ex *framework.Explanation) {
	if ex != nil {
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
	Excluded    []decision.Exclusion   `json:"excluded,omitempty"`
	Explanation *framework.Explanation `json:"explanation,omitempty"`
	// PrefixIndex gives, when endpoints publish KV events, the prefix
	// index each candidate is scored by: precise, or approximate (reason).
	PrefixIndex map[string]string `json:"prefixIndex,omitempty"`
	// PD explains a disaggregated pool's decision; Explanation is then the
	// decode profile's and Picked the decode endpoint.
	PD     *PDExplanation `json:"pd,omitempty"`
	Picked string         `json:"picked,omitempty"`
	// PromptTokens is the router's estimate of the prompt's length.
	PromptTokens int    `json:"promptTokens"`
	Error        string `json:"error,omitempty"`
}

// serveDebugRoute explains where a request would go without sending it. POST
// takes a chat or completion body (chat if it has "messages"; ?kind= forces
// one); GET takes ?model=&prompt=. It is served on the admin listener only.
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
	held := hold{b: r.budget}
	defer held.release()
	body, aerr := r.readBody(w, hr, &held)
	if aerr != nil {
		aerr.Write(w)
		return
	}
	switch k := hr.URL.Query().Get("kind"); k {
	case "chat":
		kind = openai.KindChat
	case "completion":
	case "":
		if strings.Contains(string(body), `"messages"`) {
			kind = openai.KindChat
		}
	default:
		openai.BadRequest("kind", openai.CodeInvalidValue, fmt.Sprintf("kind must be chat or completion, got %q", k)).Write(w)
		return
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
	targets := targetsOf(c.route.Pick(hr.Header))
	if r.director.PDPools() && r.explainPD(w, hr, c, targets, &out) {
		return
	}
	d, ok := r.decide(hr.Context(), c, targets, nil)
	out.Excluded = d.Excluded
	out.Explanation = d.Explanation
	out.PrefixIndex = r.prefix.modes(d.Explanation)
	out.PromptTokens = c.req.PromptTokens // exact once tokenised for the engine's model (estimated past tokenizeHeadBytes)
	if ok {
		out.Target = &struct {
			Pool     string `json:"pool"`
			Model    string `json:"model"`
			Fallback bool   `json:"fallback"`
		}{d.Target.Pool, decision.EngineModel(d.Target, d.endpoint), d.Fallback}
		out.Picked = d.endpoint.Metadata().Name
	} else {
		out.Error = "no endpoint is available"
	}
	writeRouteExplanation(w, &out)
}

func writeRouteExplanation(w http.ResponseWriter, out *RouteExplanation) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(out)
}

// PDExplanation is the PD part of /debug/route.
type PDExplanation struct {
	Mode           string `json:"mode"`
	PrefillProfile string `json:"prefillProfile"`
	DecodeProfile  string `json:"decodeProfile"`
	Decode         string `json:"decode"`
	// Prefill is the prefill endpoint, "" when the prefill is skipped or no
	// prefill endpoint is available (PrefillError says why).
	Prefill      string `json:"prefill,omitempty"`
	PrefillError string `json:"prefillError,omitempty"`
	Topology     string `json:"topology,omitempty"`
	DecodeFirst  struct {
		Enabled      bool    `json:"enabled"`
		MinHeldShare float64 `json:"minHeldShare"`
		HeldBlocks   int     `json:"heldBlocks"`
		PromptBlocks int     `json:"promptBlocks"`
		// Skip is the reason the remote prefill is skipped, or "".
		Skip string `json:"skip,omitempty"`
	} `json:"decodeFirst"`
	PrefillExplanation *framework.Explanation `json:"prefillExplanation,omitempty"`
}

// explainPD explains the decision of the first target that can serve, if
// it is a disaggregated pool, and reports whether it did.
func (r *Router) explainPD(w http.ResponseWriter, hr *http.Request, c *call, targets []decision.Target, out *RouteExplanation) bool {
	ch, ok := r.director.ChoosePD(hr.Context(), r.decisionCall(c), targets)
	if !ok {
		return false
	}
	pp, t := ch.Pool, ch.Target
	out.Excluded = append(out.Excluded, ch.Excluded...)
	plan, err := r.director.Plan(hr.Context(), r.decisionCall(c), ch)
	out.Explanation = plan.DecodeExplanation
	out.Route.Profile = pp.Spec.DecodeProfile
	if err != nil {
		out.Error = err.Error()
		writeRouteExplanation(w, out)
		return true
	}
	cfg := pp.Planner().Config()
	x := &PDExplanation{Mode: pp.Spec.Mode, PrefillProfile: pp.Spec.PrefillProfile, DecodeProfile: pp.Spec.DecodeProfile,
		Decode: plan.Decode.Metadata().Name, Topology: plan.Topology, PrefillExplanation: plan.PrefillExplanation}
	if plan.Prefill != nil {
		x.Prefill = plan.Prefill.Metadata().Name
	}
	if plan.PrefillErr != nil {
		x.PrefillError = plan.PrefillErr.Error()
	}
	x.DecodeFirst.Enabled, x.DecodeFirst.MinHeldShare = cfg.DecodeFirst, cfg.MinHeldShare
	x.DecodeFirst.HeldBlocks, x.DecodeFirst.PromptBlocks, x.DecodeFirst.Skip = plan.HeldBlocks, plan.PromptBlocks, plan.Skip
	out.PD = x
	out.Target = &struct {
		Pool     string `json:"pool"`
		Model    string `json:"model"`
		Fallback bool   `json:"fallback"`
	}{t.Pool, decision.EngineModel(t, plan.Decode), ch.Fallback}
	out.Picked = plan.Decode.Metadata().Name
	writeRouteExplanation(w, out)
	return true
}
