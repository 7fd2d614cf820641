package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"syscall"
	"testing"

	config "github.com/halyard-dev/halyard/api/config/v1alpha1"
	"github.com/halyard-dev/halyard/internal/discovery"
	"github.com/halyard-dev/halyard/internal/scheduling/framework"
	"github.com/halyard-dev/halyard/internal/scheduling/plugins"
	"github.com/halyard-dev/halyard/internal/scheduling/presets"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// sinkEngine answers completions with a fixed small body after reading the
// request to the end, and serves the metrics a scrape needs: an engine
// whose own cost stays out of a router benchmark.
func sinkEngine(tb testing.TB, model string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			fmt.Fprintf(w, "vllm:num_requests_waiting{model_name=%q} 0\nvllm:num_requests_running{model_name=%q} 0\nvllm:kv_cache_usage_perc{model_name=%q} 0.1\n", model, model, model)
			return
		case "/health":
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"cmpl-1","object":"text_completion","model":"`+model+`","choices":[{"index":0,"text":" a b c d","finish_reason":"length"}],"usage":{"prompt_tokens":1000000,"completion_tokens":4,"total_tokens":1000004}}`)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

// longPromptBody is a completion request whose prompt is n pseudo-tokens
// of text, with the newline halyard bench puts between system prompt and
// question (one escape, as real text has).
func longPromptBody(n int) []byte {
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = uint32(i*7919) % 128000
	}
	text := tokenizer.Pseudo{}.Decode(ids[:n-50]) + "\n" + tokenizer.Pseudo{}.Decode(ids[n-50:])
	body, _ := json.Marshal(map[string]any{"model": "llama", "prompt": text, "max_tokens": 4})
	return body
}

// BenchmarkLongPrompt sends a 1M-token text prompt (about 4 MiB) through
// the whole router over real sockets — body read, parse, prefix hashing
// (text, or tokenised with the model's tokenizer), the default profile over
// two engines, forwarding — as the live long-prompt run of
// docs/benchmarks.md does. cpu-ns/op is the process's CPU per request; it
// includes the client writing the body and the engine discarding it, which
// "engine-alone" (the same client straight to the engine) measures: the
// router's own cost is the difference.
func BenchmarkLongPrompt(b *testing.B) {
	body := longPromptBody(1_000_000)
	b.Run("engine-alone", func(b *testing.B) {
		e := sinkEngine(b, "llama")
		client := e.Client()
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		runtime.GC()
		cpu := processCPU()
		for b.Loop() {
			resp, err := client.Post(e.URL+"/v1/completions", "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
	})
	// The same prompt as a chat's user message, rendered through the
	// model's chat template before its head is tokenised.
	var req map[string]any
	if err := json.Unmarshal(body, &req); err != nil {
		b.Fatal(err)
	}
	chat, _ := json.Marshal(map[string]any{"model": "llama", "max_tokens": 4, "messages": []map[string]string{
		{"role": "system", "content": "You are terse."}, {"role": "user", "content": req["prompt"].(string)}}})
	for _, tc := range []struct{ name, models string }{
		{"tokenizer=none", ""},
		{"tokenizer=pseudo", "models: [{name: llama, tokenizer: pseudo}]\n"},
		{"tokenizer=cl100k", "models: [{name: llama, tokenizer: " + cl100k + "}]\n"},
		{"chat/tokenizer=cl100k", "models: [{name: llama, tokenizer: " + cl100k + "}]\n"},
	} {
		path, body := "/v1/completions", body
		if strings.HasPrefix(tc.name, "chat/") {
			path, body = "/v1/chat/completions", chat
		}
		b.Run(tc.name, func(b *testing.B) {
			e0, e1 := sinkEngine(b, "llama"), sinkEngine(b, "llama")
			doc := `apiVersion: config.halyard.dev/v1alpha1
kind: Config
endpoints:
  - {name: e0, url: "` + e0.URL + `", model: llama}
  - {name: e1, url: "` + e1.URL + `", model: llama}
` + tc.models + `routes:
  - {model: llama, profile: default, targets: [{pool: llama}]}
`
			cfg, err := config.Parse([]byte(doc))
			if err != nil {
				b.Fatal(err)
			}
			reg := &framework.Registry{}
			if err := plugins.RegisterAll(reg); err != nil {
				b.Fatal(err)
			}
			r, err := New(Options{Config: cfg, Registry: reg, PresetProfiles: presets.Specs(), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			r.store.Sync(discovery.Specs(cfg.Endpoints))
			r.collector.ScrapeOnce(context.Background())
			srv := httptest.NewServer(r.Handler())
			b.Cleanup(srv.Close)
			client := srv.Client()
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			runtime.GC()
			cpu, faults := processCPU(), minorFaults()
			for b.Loop() {
				resp, err := client.Post(srv.URL+path, "application/json", bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				out, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d: %s", resp.StatusCode, out)
				}
			}
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(minorFaults()-faults)/float64(b.N), "faults/op")
		})
	}
}

// minorFaults is the process's count of minor page faults: memory touched
// for the first time since the kernel gave it (or took it back).
func minorFaults() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}
