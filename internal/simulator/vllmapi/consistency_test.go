package vllmapi

import (
	"context"
	"fmt"
	"net/http/httptrace"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
	"github.com/halyard-dev/halyard/internal/tokenizer"
)

type workItem struct {
	offset    time.Duration
	prompt    string
	maxTokens int
}

// consistencyWorkload is eight requests, 25ms apart, of 300 to 1,350
// prompt tokens (chunked at 1,024 per step), the last four repeating the
// first four's prompts so that prefix caching matters.
func consistencyWorkload() []workItem {
	var w []workItem
	for i := range 8 {
		base := i % 4
		w = append(w, workItem{
			offset:    time.Duration(i) * 25 * time.Millisecond,
			prompt:    promptText(300+350*base, uint32(base)),
			maxTokens: 12 + 2*i,
		})
	}
	return w
}

type latency struct{ ttft, e2e time.Duration }

// TestVirtualMatchesRealClock runs one small workload through the
// real-clock HTTP server with the OpenAI SDK, then replays the same
// requests, at the arrival times the server saw, on the engine model with a
// virtual clock.
//
//  1. Per request, the server's own latencies (engine clock, from arrival
//     to first token and to the end) must equal virtual time within 1ms.
//     The engine runs steps on model time (a late timer neither stretches a
//     step nor delays a start), so given the same arrivals the real clock
//     computes the same schedule; 1ms only absorbs rounding. The one
//     exception: a stall longer than simulator.MaxModelLag (100ms) makes the
//     engine resync to the real clock, which the test then reports instead
//     of asserting equality.
//  2. The latencies the client measured (from the request on the wire to
//     the first and the last token) are never below virtual time (by more
//     than 2ms), and their median excess over virtual time is at most 10%
//     of the median virtual latency plus 10ms plus three times the worst
//     timer lateness seen during the run. The client also pays HTTP and
//     SSE (well under a millisecond) and three goroutine hand-offs per
//     token (engine timer, handler, client reader), each of which can wait
//     for a CPU on a loaded machine; we measure how late timers fire during
//     the run rather than guess, because on a shared 2-core box under -race
//     a goroutine can wait a hundred ms. The median keeps one unlucky
//     request from failing the test; the lower bound keeps it honest.
func TestVirtualMatchesRealClock(t *testing.T) {
	work := consistencyWorkload()
	real, client, lateness, resyncs := runReal(t, work)
	// Arrival offsets as the server saw them.
	first := real[0].Arrival
	for _, r := range real {
		if r.Arrival.Before(first) {
			first = r.Arrival
		}
	}
	offsets := make([]time.Duration, len(work))
	for i, r := range real {
		offsets[i] = r.Arrival.Sub(first)
	}
	virtual := runVirtual(t, work, offsets)
	var excess, virt []time.Duration
	for i := range work {
		v := virtual[i]
		for _, m := range []struct {
			name   string
			v, r   time.Duration
			server bool
		}{
			{"server TTFT", v.ttft, real[i].TTFT(), true},
			{"server E2E", v.e2e, real[i].E2E(), true},
			{"client TTFT", v.ttft, client[i].ttft, false},
			{"client E2E", v.e2e, client[i].e2e, false},
		} {
			diff := m.r - m.v
			t.Logf("request %d %-11s virtual %-10v real %-10v (%+.1f%%)", i, m.name, m.v.Round(time.Microsecond),
				m.r.Round(time.Microsecond), 100*float64(diff)/float64(m.v))
			switch {
			case m.server && resyncs == 0 && (diff < -time.Millisecond || diff > time.Millisecond):
				t.Errorf("request %d %s: real %v vs virtual %v, off by more than 1ms", i, m.name, m.r, m.v)
			case !m.server && diff < -2*time.Millisecond:
				t.Errorf("request %d %s: client saw %v, before the model's %v", i, m.name, m.r, m.v)
			case !m.server:
				excess = append(excess, diff)
				virt = append(virt, m.v)
			}
		}
	}
	if resyncs > 0 {
		// A stall longer than simulator.MaxModelLag made the engine give up
		// model time; the per-request equality above was not asserted.
		t.Logf("the engine resynced to the real clock %d times (a stall over %v): server-side equality not checked", resyncs, simulator.MaxModelLag)
	}
	med := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
		return s[len(s)/2]
	}
	tol := med(virt)/10 + 10*time.Millisecond + 3*lateness
	t.Logf("client: median excess over virtual time %v (tolerance %v); worst timer lateness %v", med(excess), tol, lateness)
	if med(excess) > tol {
		t.Errorf("client latencies exceed virtual time by a median of %v > %v", med(excess), tol)
	}
}

func runVirtual(t *testing.T, work []workItem, offsets []time.Duration) []latency {
	p, err := simulator.LoadProfile("testdata/consistency.yaml")
	if err != nil {
		t.Fatal(err)
	}
	clock := simclock.NewVirtual(time.Unix(1_700_000_000, 0))
	eng, err := simulator.NewEngine(p.Config("llama-3-8b"), clock)
	if err != nil {
		t.Fatal(err)
	}
	// Submit in arrival order, as the server received them.
	order := make([]int, len(work))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return offsets[order[a]] < offsets[order[b]] })
	out := make([]latency, len(work))
	for _, i := range order {
		clock.AfterFunc(offsets[i], func() {
			err := eng.Submit(simulator.Request{
				ID: fmt.Sprint(i), Prompt: tokenizer.Pseudo{}.Encode(work[i].prompt), MaxTokens: work[i].maxTokens,
				Sink: simulator.SinkFuncs{OnDone: func(r simulator.Result) { out[i] = latency{r.TTFT(), r.E2E()} }},
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	clock.Run()
	return out
}

// runReal sends the workload to a real-clock server and returns the
// server's result and the client's measurements per request, the worst
// lateness of a 1ms timer during the run, and how often the engine resynced
// its model time to the real clock.
func runReal(t *testing.T, work []workItem) ([]simulator.Result, []latency, time.Duration, uint64) {
	var mu sync.Mutex
	results := map[string]simulator.Result{}
	inst := startSim(t, Spec{Profile: "testdata/consistency.yaml", OnResult: func(r simulator.Result) {
		mu.Lock()
		results[r.ID] = r
		mu.Unlock()
	}})
	c := client(inst)
	if _, err := c.Models.List(context.Background()); err != nil { // warm a connection
		t.Fatal(err)
	}

	stopProbe := make(chan struct{})
	probeDone := make(chan time.Duration)
	go func() {
		var worst time.Duration
		for {
			select {
			case <-stopProbe:
				probeDone <- worst
				return
			default:
			}
			start := time.Now()
			time.Sleep(time.Millisecond) // measuring lateness, not synchronising
			worst = max(worst, time.Since(start)-time.Millisecond)
		}
	}()

	ids := make([]string, len(work))
	out := make([]latency, len(work))
	var wg sync.WaitGroup
	start := time.Now()
	for i, w := range work {
		wg.Add(1)
		time.AfterFunc(time.Until(start.Add(w.offset)), func() {
			defer wg.Done()
			// Time from when the request was on the wire, so that the
			// SDK's own encoding work is not counted.
			var sentMu sync.Mutex
			sent := time.Now()
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				WroteRequest: func(httptrace.WroteRequestInfo) {
					sentMu.Lock()
					sent = time.Now()
					sentMu.Unlock()
				},
			})
			since := func() time.Duration {
				sentMu.Lock()
				defer sentMu.Unlock()
				return time.Since(sent)
			}
			s := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{
				Model:     openai.CompletionNewParamsModel("llama-3-8b"),
				Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String(w.prompt)},
				MaxTokens: openai.Int(int64(w.maxTokens)),
			})
			var first time.Duration
			n := 0
			for s.Next() {
				ch := s.Current()
				ids[i] = ch.ID
				if len(ch.Choices) > 0 && ch.Choices[0].Text != "" {
					if n == 0 {
						first = since()
					}
					n++
				}
			}
			out[i] = latency{first, since()}
			if err := s.Err(); err != nil || n != w.maxTokens {
				t.Errorf("request %d: %d tokens, err %v", i, n, err)
			}
		})
	}
	wg.Wait()
	close(stopProbe)
	lateness := <-probeDone
	mu.Lock()
	defer mu.Unlock()
	res := make([]simulator.Result, len(work))
	for i, id := range ids {
		r, ok := results[id]
		if !ok {
			t.Fatalf("no server result for request %d (%s)", i, id)
		}
		res[i] = r
	}
	return res, out, lateness, inst.Server.Engine().Snapshot().Resyncs
}
