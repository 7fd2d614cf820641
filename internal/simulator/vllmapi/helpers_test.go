package vllmapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// startSim serves a simulated engine on a real listener on 127.0.0.1:0
// until the test ends.
func startSim(t *testing.T, sp Spec) *Instance {
	t.Helper()
	if sp.Model == "" {
		sp.Model = "llama-3-8b"
	}
	sp.Listen = "127.0.0.1:0"
	ctx, cancel := context.WithCancel(context.Background())
	inst, err := Start(ctx, sp, nil)
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := inst.Wait(); err != nil {
			t.Errorf("instance stopped with %v", err)
		}
	})
	return inst
}

// client is the official OpenAI Go SDK pointed at the instance, without
// retries so that every failure shows.
func client(inst *Instance) openai.Client {
	return openai.NewClient(option.WithBaseURL(inst.URL+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// promptText returns text that the pseudo-tokenizer encodes to exactly n
// tokens, distinct for each salt.
func promptText(n int, salt uint32) string {
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = (uint32(i)*7919 + salt*104729) % 20000
	}
	return tokenizer.Pseudo{}.Decode(ids)
}

func postJSON(t *testing.T, url string, body any) (int, []byte) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, out
}

// eventually polls cond every few milliseconds until it holds or the
// deadline passes. It waits on a condition, it does not stand in for one.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
