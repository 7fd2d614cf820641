package vllmapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

const benchBody = `{"model":"llama-3-8b","prompt":"hello there how are you","max_tokens":4}`

// cannedCompletion is what the zero-profile engine answers, fixed: the cost
// of Go's HTTP stack and JSON alone.
const cannedCompletion = `{"id":"cmpl-1","object":"text_completion","created":1,"model":"llama-3-8b","choices":[{"index":0,"text":"a b c d","logprobs":null,"finish_reason":"length","stop_reason":null}],"usage":{"prompt_tokens":5,"total_tokens":9,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":0}}}`

// BenchmarkCompletionsHTTP measures small non-streaming completions over real
// loopback HTTP with 16 concurrent clients: a zero-profile simulated engine
// versus a handler that returns a canned answer, side by side. The ratio is
// the simulator's own cost.
func BenchmarkCompletionsHTTP(b *testing.B) {
	run := func(b *testing.B, url string) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		b.ReportAllocs()
		b.SetParallelism(8) // 16 goroutines on 2 CPUs
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Post(url+"/v1/completions", "application/json", bytes.NewReader([]byte(benchBody)))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}
	b.Run("canned", func(b *testing.B) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, cannedCompletion)
		}))
		defer srv.Close()
		run(b, srv.URL)
	})
	b.Run("zero-sim", func(b *testing.B) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		inst, err := Start(ctx, Spec{Model: "llama-3-8b", Profile: "zero", Listen: "127.0.0.1:0"}, nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, inst.URL)
		cancel()
		_ = inst.Wait()
	})
}
