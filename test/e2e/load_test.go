package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func TestCanaryWeightsOverManyRequests(t *testing.T) {
	sims := map[string]*process{
		"s0": startSim(t, "s0", "llama", "zero"),
		"s1": startSim(t, "s1", "llama", "zero"),
		"c0": startSim(t, "c0", "llama", "zero"),
	}
	r := startRouter(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router: {timeouts: {scrape: 3s}}
endpoints:
  - {name: s0, url: "{{s0}}", model: llama, pool: stable}
  - {name: s1, url: "{{s1}}", model: llama, pool: stable}
  - {name: c0, url: "{{c0}}", model: llama, pool: canary}
routes:
  - model: llama
    targets: [{pool: stable, weight: 80}, {pool: canary, weight: 20}]
`, sims)
	c := client(r)
	const n = 1000
	var canary atomic.Int64
	var wg sync.WaitGroup
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for range work {
				var resp *http.Response
				_, err := c.Completions.New(context.Background(), openai.CompletionNewParams{
					Model:     "llama",
					Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")},
					MaxTokens: openai.Int(1),
				}, option.WithHeader("x-halyard-explain", "1"), option.WithResponseInto(&resp))
				if err != nil {
					t.Error(err)
					return
				}
				if strings.Contains(resp.Header.Get("x-halyard-route"), "route=llama>canary") {
					canary.Add(1)
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	if got := float64(canary.Load()) / n; got < 0.18 || got > 0.22 {
		t.Errorf("canary share %.3f over %d requests, want 0.20±0.02", got, n)
	}
	// The engines agree: c0 served the canary's share.
	var served float64
	for _, name := range []string{"s0", "s1", "c0"} {
		served += engineRequests(t, sims[name])
	}
	if c0 := engineRequests(t, sims["c0"]); served < n || c0/served < 0.18 || c0/served > 0.22 {
		t.Errorf("engines served %v requests, canary %v", served, c0)
	}
}

// engineRequests reads vllm:request_success_total from a sim.
func engineRequests(t *testing.T, p *process) float64 {
	t.Helper()
	resp, err := http.Get(p.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var total float64
	b := make([]byte, 1<<20)
	n, _ := readAll(resp, b)
	for _, line := range strings.Split(string(b[:n]), "\n") {
		if strings.HasPrefix(line, "vllm:request_success_total") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			total += v
		}
	}
	return total
}

func readAll(resp *http.Response, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := resp.Body.Read(b[n:])
		n += m
		if err != nil {
			return n, nil
		}
	}
	return n, nil
}

// TestEngineKilledMidLoad kills one of three engines while requests are in
// flight: no request that had not started streaming may fail, streams that
// had started end with an error event or complete, and nothing hangs.
func TestEngineKilledMidLoad(t *testing.T) {
	sims := map[string]*process{
		"e0": startSim(t, "e0", "llama", "h100-llama3-8b"),
		"e1": startSim(t, "e1", "llama", "h100-llama3-8b"),
		"e2": startSim(t, "e2", "llama", "h100-llama3-8b"),
	}
	r := startRouter(t, `apiVersion: config.halyard.dev/v1alpha1
kind: Config
router:
  scrapeInterval: 50ms
  timeouts: {scrape: 3s}
  health: {failureThreshold: 2, successThreshold: 2}
endpoints:
  - {name: e0, url: "{{e0}}", model: llama}
  - {name: e1, url: "{{e1}}", model: llama}
  - {name: e2, url: "{{e2}}", model: llama}
routes:
  - {model: llama, targets: [{pool: llama}]}
`, sims)
	c := client(r)
	var (
		okCount, streamErr, failedBeforeStart atomic.Int64
		mu                                    sync.Mutex
		failures                              []string
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				stream := (w+i)%2 == 0
				rctx, rcancel := context.WithTimeout(ctx, time.Minute)
				if stream {
					s := c.Chat.Completions.NewStreaming(rctx, openai.ChatCompletionNewParams{
						Model:     "llama",
						Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(words(w*1000+i, 50))},
						MaxTokens: openai.Int(40),
					})
					chunks := 0
					for s.Next() {
						chunks++
					}
					err := s.Err()
					switch {
					case err == nil:
						okCount.Add(1)
					case chunks > 0 && strings.Contains(err.Error(), "received error while streaming"):
						streamErr.Add(1)
					default:
						failedBeforeStart.Add(1)
						mu.Lock()
						failures = append(failures, fmt.Sprintf("stream after %d chunks: %v", chunks, err))
						mu.Unlock()
					}
				} else {
					_, err := c.Chat.Completions.New(rctx, openai.ChatCompletionNewParams{
						Model:     "llama",
						Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage(words(w*1000+i, 50))},
						MaxTokens: openai.Int(40),
					})
					if err != nil {
						failedBeforeStart.Add(1)
						mu.Lock()
						failures = append(failures, "non-streamed: "+err.Error())
						mu.Unlock()
					} else {
						okCount.Add(1)
					}
				}
				rcancel()
			}
		})
	}
	// Let load build, kill e1 while it has requests in flight, keep going.
	waitUntil(t, func() bool { return okCount.Load() >= 30 })
	waitUntil(t, func() bool {
		return strings.Contains(getBody(t, adminURL(t, r)+"/metrics"), `halyard_router_endpoint_in_flight_requests{endpoint="e1",pool="llama"} `) &&
			!strings.Contains(getBody(t, adminURL(t, r)+"/metrics"), `halyard_router_endpoint_in_flight_requests{endpoint="e1",pool="llama"} 0`)
	})
	sims["e1"].kill()
	killedAt := okCount.Load()
	waitUntil(t, func() bool { return okCount.Load() >= killedAt+90 })
	close(stop)
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("load did not finish in time: something hung")
	}
	t.Logf("ok %d, streams ended by an error event %d, failed before streaming %d", okCount.Load(), streamErr.Load(), failedBeforeStart.Load())
	if n := failedBeforeStart.Load(); n != 0 {
		t.Errorf("%d requests failed that had not started streaming: %v", n, failures)
	}
	// The dead engine is out of rotation.
	if !waitCond(func() bool {
		return strings.Contains(getBody(t, adminURL(t, r)+"/metrics"), `halyard_router_endpoint_healthy{endpoint="e1",pool="llama"} 0`)
	}) {
		t.Error("e1 still healthy after it was killed")
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	if !waitCond(cond) {
		t.Fatal("condition not reached within 2 minutes")
	}
}

func waitCond(cond func() bool) bool {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 4<<20)
	n, _ := readAll(resp, b)
	return string(b[:n])
}
