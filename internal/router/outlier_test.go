package router

import (
	"net/http"
	"strings"
	"testing"
)

// An engine that answers 500 to every request while its /health says 200
// is ejected after router.health.outlier.consecutive5xx answers in a row:
// clients never see its errors (retries) and, once ejected, it gets no
// more first picks.
func TestOutlierEjection(t *testing.T) {
	doc := strings.Replace(oneModel, "health: {failureThreshold: 1, successThreshold: 1}",
		"health: {failureThreshold: 1, successThreshold: 1, outlier: {consecutive5xx: 3, ejectionTime: 1h}}", 1)
	h := newHarness(t, doc, twoEngines())
	bad := h.engines["e0"]
	bad.status.Store(http.StatusInternalServerError)
	// Send until the bad engine has answered three times (the picker's tie
	// order decides how soon); every client request succeeds.
	for i := 0; bad.requests.Load() < 3; i++ {
		if i == 100 {
			t.Fatalf("the failing engine got %d requests of 100", bad.requests.Load())
		}
		if resp, b := h.post("/v1/chat/completions", chatBody); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
	}
	if v := metricValue(t, h, `halyard_router_outlier_ejections_total{endpoint="e0",reason="5xx"}`); v != 1 {
		t.Errorf("ejections of e0 = %v, want 1", v)
	}
	for i := range 30 {
		if resp, b := h.post("/v1/chat/completions", chatBody); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d after the ejection: %d %s", i, resp.StatusCode, b)
		}
	}
	if n := bad.requests.Load(); n != 3 {
		t.Errorf("the ejected engine got %d requests, want none after its 3rd", n)
	}
}

// When every servable endpoint of a pool is ejected, they are used anyway:
// an ejection never turns a degraded pool into a 503.
func TestOutlierEjectionNeverEmptiesAPool(t *testing.T) {
	doc := strings.Replace(oneModel, "health: {failureThreshold: 1, successThreshold: 1}",
		"maxAttempts: 1, health: {failureThreshold: 1, successThreshold: 1, outlier: {consecutive5xx: 1, ejectionTime: 1h}}", 1)
	doc = strings.Replace(doc, "maxAttempts: 3, ", "", 1)
	h := newHarness(t, doc, twoEngines())
	for _, e := range h.engines {
		e.status.Store(http.StatusInternalServerError)
	}
	for range 4 {
		h.post("/v1/chat/completions", chatBody)
	}
	for _, e := range h.engines {
		e.status.Store(0)
	}
	if resp, b := h.post("/v1/chat/completions", chatBody); resp.StatusCode != http.StatusOK {
		t.Fatalf("with every endpoint ejected: %d %s, want the request served", resp.StatusCode, b)
	}
	if v := metricValue(t, h, `halyard_router_outlier_ejections_total{endpoint="e0",reason="5xx"}`) + metricValue(t, h, `halyard_router_outlier_ejections_total{endpoint="e1",reason="5xx"}`); v < 2 {
		t.Errorf("ejections = %v, want both endpoints ejected", v)
	}
}
