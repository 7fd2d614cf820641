package router

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/halyard-dev/halyard/internal/console"
)

// TestConsoleOnlyOnAdminListener: the console and its APIs are on the admin
// listener and nowhere on the public one.
func TestConsoleOnlyOnAdminListener(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	for _, p := range []string{"/ui/", "/ui/console.js", "/ui/api/fleet", "/ui/api/routes", "/ui/api/decisions", "/ui/api/info"} {
		resp, err := http.Get(h.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("public listener GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
	resp, err := http.Post(h.srv.URL+"/ui/api/playground", "application/json", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("public listener POST /ui/api/playground: %d, want 404", resp.StatusCode)
	}

	resp, err = http.Get(h.admin.URL + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("admin GET /ui/: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var fleet struct{ Endpoints []console.Endpoint }
	getJSON(t, h.admin.URL+"/ui/api/fleet", &fleet)
	if len(fleet.Endpoints) != 2 || fleet.Endpoints[0].Name != "e0" || fleet.Endpoints[1].Name != "e1" ||
		!fleet.Endpoints[0].Healthy || fleet.Endpoints[0].Pool != "llama" {
		t.Errorf("fleet: %+v", fleet.Endpoints)
	}
	var routes struct{ Routes []console.Route }
	getJSON(t, h.admin.URL+"/ui/api/routes", &routes)
	if len(routes.Routes) != 1 || routes.Routes[0].Model != "llama" || len(routes.Routes[0].Targets) != 1 || routes.Routes[0].Targets[0].Pool != "llama" {
		t.Errorf("routes: %+v", routes.Routes)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestConsoleFeedFollowsDecisions: nothing is recorded while nobody
// watches; a watcher of /ui/api/decisions gets each request's decision,
// with its explanation, then its outcome.
func TestConsoleFeedFollowsDecisions(t *testing.T) {
	h := newHarness(t, oneModel, twoEngines())
	if resp, b := h.post("/v1/chat/completions", chatBody); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if n := len(h.r.Feed().Recent()); n != 0 {
		t.Fatalf("%d events recorded with nobody watching", n)
	}

	resp, err := http.Get(h.admin.URL + "/ui/api/decisions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan [2]string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				events <- [2]string{name, strings.TrimPrefix(line, "data: ")}
			}
		}
		close(events)
	}()
	stream := `{"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`
	presp, b := h.post("/v1/chat/completions", stream)
	if presp.StatusCode != 200 {
		t.Fatalf("status %d: %s", presp.StatusCode, b)
	}
	id := presp.Header.Get(HeaderRequestID)
	deadline := time.After(5 * time.Second)
	next := func() (string, string) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream ended")
			}
			return ev[0], ev[1]
		case <-deadline:
			t.Fatal("no event within 5s")
		}
		return "", ""
	}
	name, data := next()
	var d console.Decision
	if err := json.Unmarshal([]byte(data), &d); name != "decision" || err != nil {
		t.Fatalf("first event %q %s (%v)", name, data, err)
	}
	if d.ID != id || d.Model != "llama" || d.Pool != "llama" || (d.Endpoint != "e0" && d.Endpoint != "e1") ||
		d.Explanation == nil || len(d.Explanation.Endpoints) != 2 || !strings.Contains(d.Explain, "picked="+d.Endpoint) {
		t.Errorf("decision %+v, want request %s", d, id)
	}
	name, data = next()
	var o console.Outcome
	if err := json.Unmarshal([]byte(data), &o); name != "outcome" || err != nil {
		t.Fatalf("second event %q %s (%v)", name, data, err)
	}
	if o.ID != id || o.Status != 200 || o.TTFTMs <= 0 || o.CompletionTokens == 0 {
		t.Errorf("outcome %+v", o)
	}
}

// TestConsolePlaygroundTakesThePublicPath: the playground's request is
// served by the router's handler, admission included: refused without the
// caller's key, answered with it.
func TestConsolePlaygroundTakesThePublicPath(t *testing.T) {
	h := newHarness(t, withAdmission, twoEngines())
	post := func(key string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, h.admin.URL+"/ui/api/playground", strings.NewReader(chatBody))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
		return resp, b.String()
	}
	if resp, b := post(""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no key: %d %s, want 401", resp.StatusCode, b)
	}
	resp, b := post("key-a")
	if resp.StatusCode != 200 || !strings.Contains(b, `"choices"`) {
		t.Fatalf("with the key: %d %s", resp.StatusCode, b)
	}
	if resp.Header.Get(HeaderRequestID) == "" {
		t.Error("no X-Request-Id on the playground's answer")
	}
	// Another site's page cannot use it.
	for _, tt := range []struct {
		header, value string
		want          int
	}{{"Sec-Fetch-Site", "cross-site", http.StatusForbidden}, {"Content-Type", "text/plain", http.StatusUnsupportedMediaType}} {
		req, _ := http.NewRequest(http.MethodPost, h.admin.URL+"/ui/api/playground", strings.NewReader(chatBody))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer key-a")
		req.Header.Set(tt.header, tt.value)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: %s: %d, want %d", tt.header, tt.value, resp.StatusCode, tt.want)
		}
	}
	var info struct{ AuthRequired bool }
	getJSON(t, h.admin.URL+"/ui/api/info", &info)
	if !info.AuthRequired {
		t.Error("info: authRequired false with auth on")
	}
}
