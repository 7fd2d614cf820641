package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// TestUpServesAndStopsCleanly runs `halyard up` (four simulated engines and
// the router in one process), sends a chat request with the SDK, and stops
// it with SIGINT.
func TestUpServesAndStopsCleanly(t *testing.T) {
	needUp(t)
	p := start(t, "up", "router serving", "up", "--listen", "127.0.0.1:0", "--log-level", "info")
	waitCond(func() bool { return strings.Contains(p.Stdout(), "curl -s http://") })
	if out := p.Stdout(); !strings.Contains(out, "curl -s "+p.URL()+"/v1/chat/completions") || !strings.Contains(out, "4 simulated engine(s)") {
		t.Errorf("stdout lacks the curl line or the engine count:\n%s", out)
	}
	c := client(p)
	chat, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:     "llama-3-8b",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
		MaxTokens: openai.Int(3),
	})
	if err != nil {
		t.Fatal(err)
	}
	if chat.Usage.CompletionTokens != 3 {
		t.Errorf("chat usage %+v", chat.Usage)
	}
	done := make(chan error, 1)
	go func() { done <- p.stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("halyard up exited with %v after SIGINT:\n%s", err, p.Logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("halyard up did not stop within 30s of SIGINT")
	}
	if logs := p.Logs(); strings.Count(logs, "simulated engine stopped") != 4 {
		t.Errorf("not every engine reported stopping:\n%s", logs)
	}
}

func TestUpDemoPrintsAReport(t *testing.T) {
	needUp(t)
	p := start(t, "up --demo", "router serving", "up", "--demo", "--demo-requests", "60", "--listen", "127.0.0.1:0", "--log-level", "info")
	if !waitCond(func() bool { return strings.Contains(p.Stdout(), "Still serving") }) {
		t.Fatalf("demo did not finish:\n%s", p.Stdout())
	}
	out := p.Stdout()
	for _, want := range []string{"One chat request", "Demo report (60 requests, 0 failed", "TTFT", "TPOT", "requests/s", "per engine", "prefix-cache hit ratio"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}
