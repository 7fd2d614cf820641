package router

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkHandler measures the whole handler — parse, route, schedule,
// proxy over a real socket to a fake engine, relay — for a small chat
// request, non-streamed and streamed.
func BenchmarkHandler(b *testing.B) {
	h := newHarness(b, oneModel, twoEngines())
	for _, bc := range []struct {
		name, body string
	}{
		{"json", `{"model":"llama","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello."}],"max_tokens":3}`},
		{"sse", `{"model":"llama","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello."}],"max_tokens":3,"stream":true,"stream_options":{"include_usage":true}}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", strings.NewReader(bc.body))
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				h.r.Handler().ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}

// BenchmarkDecide measures routing and scheduling alone (no I/O).
func BenchmarkDecide(b *testing.B) {
	h := newHarness(b, oneModel, twoEngines())
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	c, aerr, _ := h.r.prepareBody(req, 1, []byte(chatBody))
	if aerr != nil {
		b.Fatal(aerr)
	}
	targets := targetsOf(c.route.Pick(req.Header))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := h.r.decide(req.Context(), c, targets, nil); !ok {
			b.Fatal("no decision")
		}
	}
}
