package console

import (
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Endpoint is one endpoint of the fleet as the console shows it.
type Endpoint struct {
	Name    string `json:"name"`
	Pool    string `json:"pool"`
	Address string `json:"address"`
	Model   string `json:"model"`
	Role    string `json:"role"`
	// Healthy is the health checks' verdict; Ejected is set while outlier
	// ejection keeps the endpoint out; LastError is the last check's error.
	Healthy   bool   `json:"healthy"`
	Ejected   bool   `json:"ejected"`
	LastError string `json:"lastError,omitempty"`
	// InFlight and InFlightTokens are what the router has sent it and not
	// yet seen end.
	InFlight       int64 `json:"inFlight"`
	InFlightTokens int64 `json:"inFlightTokens"`
	// Running, Waiting and KVCacheUsage (0..1) are the engine's, as last
	// scraped (Scraped; zero when never).
	Running      int       `json:"running"`
	Waiting      int       `json:"waiting"`
	KVCacheUsage float64   `json:"kvCacheUsage"`
	Scraped      time.Time `json:"scraped,omitzero"`
	// PredictedHitRatio is the prompt tokens the router predicted cached
	// on this endpoint over the tokens the engine was asked to look up;
	// ActualHitRatio is the engine's own hits over the same. Both since
	// the router first saw the endpoint; nil without lookups.
	PredictedHitRatio *float64 `json:"predictedHitRatio,omitempty"`
	ActualHitRatio    *float64 `json:"actualHitRatio,omitempty"`
	// DriftRatio compares predicted with reported hits over the drift
	// window (docs/kv-events.md); nil when the window holds too few.
	DriftRatio *float64 `json:"driftRatio,omitempty"`
}

// Route is one public model's routing.
type Route struct {
	Model   string   `json:"model"`
	Adapter string   `json:"adapter,omitempty"`
	Profile string   `json:"profile"`
	Targets []Target `json:"targets"`
	// Rules are the header rules' splits, in order.
	Rules    [][]Target `json:"rules,omitempty"`
	Fallback []Target   `json:"fallback,omitempty"`
}

// Target is a route's destination and its weight within its split.
type Target struct {
	Pool   string `json:"pool"`
	Model  string `json:"model,omitempty"`
	Weight int32  `json:"weight"`
}

// Source is what the console reads from the router.
type Source interface {
	// Fleet returns the endpoints, sorted by pool and name.
	Fleet() []Endpoint
	// Routes returns the routes, sorted by model.
	Routes() []Route
}

// Options configure Handler.
type Options struct {
	// Source, Feed and Playground are required.
	Source Source
	Feed   *Feed
	// Playground serves the playground's requests: the router's public
	// handler, called in-process, so that they take the path (admission
	// included) any client's request takes.
	Playground http.Handler
	// AuthRequired tells the page to ask for an API key.
	AuthRequired bool
	Logger       *slog.Logger
	// KeepAlive is the period of the event stream's comment lines; default
	// 15s.
	KeepAlive time.Duration
}

//go:embed static
var static embed.FS

// Prefix is where the console is mounted on the admin listener.
const Prefix = "/ui/"

// Handler serves the console under Prefix (mount it at Prefix):
//
//	GET  /ui/                        the page (and its assets)
//	GET  /ui/api/info                {"authRequired":bool}
//	GET  /ui/api/fleet               {"endpoints":[Endpoint...]}
//	GET  /ui/api/routes              {"routes":[Route...]}
//	GET  /ui/api/decisions           text/event-stream of Events
//	GET  /ui/api/decisions/recent    {"events":[Event...]}
//	POST /ui/api/playground          an OpenAI chat request, answered by the router
func Handler(o Options) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 15 * time.Second
	}
	sub, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	files := http.StripPrefix(Prefix, http.FileServerFS(sub))
	mux.Handle("GET "+Prefix, withStaticHeaders(files))
	mux.HandleFunc("GET "+Prefix+"api/info", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"authRequired": o.AuthRequired})
	})
	mux.HandleFunc("GET "+Prefix+"api/fleet", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"endpoints": nonNil(o.Source.Fleet())})
	})
	mux.HandleFunc("GET "+Prefix+"api/routes", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"routes": nonNil(o.Source.Routes())})
	})
	mux.HandleFunc("GET "+Prefix+"api/decisions/recent", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"events": nonNil(o.Feed.Recent())})
	})
	mux.Handle("GET "+Prefix+"api/decisions", &eventStream{feed: o.Feed, keepAlive: o.KeepAlive, log: o.Logger})
	mux.Handle("POST "+Prefix+"api/playground", playground(o.Playground))
	mux.HandleFunc("GET "+Prefix+"api/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "invalid_request_error", "no such console API")
	})
	return mux
}

// withStaticHeaders keeps the page from being framed or sniffed, and
// allows only its own scripts and styles.
func withStaticHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// playground hands a chat request to the router's public handler, as if it
// came to /v1/chat/completions, asking for the explanation. The caller's
// Authorization header goes along: with authentication on, the page must
// give an API key like any client (no bypass).
//
// Another site's page in the operator's browser must not use it: a
// request a browser marks cross-site (Sec-Fetch-Site) is refused, and only
// application/json is taken, which a cross-origin page cannot send
// without a CORS preflight that the console never answers.
func playground(public http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Sec-Fetch-Site") {
		case "", "same-origin", "none":
		default:
			writeError(w, http.StatusForbidden, "permission_error", "the playground takes requests from the console's own page only")
			return
		}
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			writeError(w, http.StatusUnsupportedMediaType, "invalid_request_error", "the playground takes Content-Type: application/json")
			return
		}
		req := r.Clone(r.Context())
		req.URL.Path, req.URL.RawPath, req.RequestURI = "/v1/chat/completions", "", ""
		req.Header.Set("X-Halyard-Explain", "1")
		public.ServeHTTP(w, req)
	})
}

// writeError writes an OpenAI-shaped error.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": nil}})
}
