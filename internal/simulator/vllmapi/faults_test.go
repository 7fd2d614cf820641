package vllmapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
)

// newVirtualServer builds a server whose engine runs on a virtual clock, for
// handlers that need no engine steps (health, errors before submission).
func newVirtualServer(t *testing.T, opts Options) *Server {
	t.Helper()
	p, err := simulator.LoadProfile("zero")
	if err != nil {
		t.Fatal(err)
	}
	clock := simclock.NewVirtual(time.Unix(1_700_000_000, 0))
	eng, err := simulator.NewEngine(p.Config("llama-3-8b"), clock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(eng, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func doRequest(h http.Handler, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestSlowStart(t *testing.T) {
	s := newVirtualServer(t, Options{ReadyDelay: 5 * time.Second})
	clock := s.Engine().Clock().(*simclock.Virtual)
	if rec := doRequest(s, http.MethodGet, "/health", ""); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/health at start = %d, want 503", rec.Code)
	}
	rec := doRequest(s, http.MethodPost, "/v1/completions", `{"model":"llama-3-8b","prompt":"x"}`)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"code":503`) {
		t.Fatalf("completion before ready = %d %s, want 503", rec.Code, rec.Body)
	}
	clock.Advance(4 * time.Second)
	if rec := doRequest(s, http.MethodGet, "/health", ""); rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/health after 4s = %d, want 503", rec.Code)
	}
	clock.Advance(time.Second)
	if rec := doRequest(s, http.MethodGet, "/health", ""); rec.Code != http.StatusOK {
		t.Fatalf("/health after 5s = %d, want 200", rec.Code)
	}
}

func TestFaultsAtRunTime(t *testing.T) {
	inst := startSim(t, Spec{Profile: "testdata/slow-decode.yaml"})
	c := client(inst)
	ctx := context.Background()
	setFaults := func(body string) {
		t.Helper()
		if status, out := postJSON(t, inst.URL+"/admin/faults", body); status != 200 {
			t.Fatalf("POST /admin/faults %s: %d %s", body, status, out)
		}
	}
	complete := func() error {
		_, err := c.Completions.New(ctx, openai.CompletionNewParams{
			Model:     openai.CompletionNewParamsModel("llama-3-8b"),
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")},
			MaxTokens: openai.Int(5),
		})
		return err
	}

	t.Run("error rate", func(t *testing.T) {
		setFaults(`{"errorRate":1}`)
		var apiErr *openai.Error
		if err := complete(); !errors.As(err, &apiErr) || apiErr.StatusCode != 500 || apiErr.Type != "InternalServerError" {
			t.Fatalf("with errorRate 1: %v, want a 500", err)
		}
		setFaults(`{"errorRate":0.5}`)
		failed := 0
		for range 40 {
			if complete() != nil {
				failed++
			}
		}
		if failed < 8 || failed > 32 {
			t.Errorf("%d of 40 failed with errorRate 0.5", failed)
		}
		setFaults(`{}`)
		if err := complete(); err != nil {
			t.Fatalf("after clearing faults: %v", err)
		}
	})

	t.Run("crash mid-stream", func(t *testing.T) {
		setFaults(`{"crashAfterTokens":3}`)
		s := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
			Model:     openai.CompletionNewParamsModel("llama-3-8b"),
			Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("hello")},
			MaxTokens: openai.Int(50),
		})
		n := 0
		for s.Next() {
			n += len(s.Current().Choices)
		}
		if s.Err() == nil {
			t.Errorf("stream ended cleanly after %d tokens; want a dropped connection", n)
		}
		if n > 3 {
			t.Errorf("received %d tokens, crash was after 3", n)
		}
		if err := complete(); err == nil {
			t.Error("non-streaming request survived crashAfterTokens 3 of 5")
		}
		eng := inst.Server.Engine()
		eventually(t, 10*time.Second, "crashed requests to be aborted", func() bool {
			s := eng.Snapshot()
			return s.Running == 0 && s.KVUsage == 0 && s.FinishedAbort >= 2
		})
		setFaults(`{}`)
	})

	t.Run("latency spikes", func(t *testing.T) {
		// Server-side E2E (engine clock, from /metrics) of one request
		// without and one with spikes on every step.
		e2e := func() float64 {
			return scrape(t, inst).metric(t, "vllm:e2e_request_latency_seconds").GetHistogram().GetSampleSum()
		}
		e0 := e2e()
		if err := complete(); err != nil {
			t.Fatal(err)
		}
		e1 := e2e()
		setFaults(`{"spikeRate":1,"spikeDuration":"40ms"}`)
		if err := complete(); err != nil {
			t.Fatal(err)
		}
		e2 := e2e()
		setFaults(`{}`)
		base, spiked := e1-e0, e2-e1
		// Five steps, each 40ms longer: 200ms more.
		if d := spiked - base; d < 0.195 || d > 0.205 {
			t.Errorf("with spikes %.1fms, without %.1fms; want 200ms more", 1e3*spiked, 1e3*base)
		}
	})

	t.Run("unhealthy", func(t *testing.T) {
		setFaults(`{"unhealthy":true}`)
		resp, err := http.Get(inst.URL + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Errorf("/health when unhealthy = %d", resp.StatusCode)
		}
		setFaults(`{}`)
		if err := complete(); err != nil {
			t.Errorf("after recovery: %v", err)
		}
	})

	resp, err := http.Get(inst.URL + "/admin/faults")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /admin/faults = %d", resp.StatusCode)
	}
}

func TestSpecRejectsBadRole(t *testing.T) {
	if _, err := (Spec{Model: "m", Profile: "zero", Role: "bogus"}).Build(simclock.Real{}, nil); err == nil || !strings.Contains(err.Error(), "role") {
		t.Errorf("bad role error = %v", err)
	}
}
