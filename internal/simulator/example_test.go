package simulator_test

import (
	"fmt"
	"time"

	"github.com/halyard-dev/halyard/internal/simclock"
	"github.com/halyard-dev/halyard/internal/simulator"
)

// Run one simulated H100 engine on a virtual clock: the same 4,000-token
// prompt twice. The second request hits the prefix cache, so its time to
// first token is a single short step. No time passes on the wall clock.
func Example() {
	clock := simclock.NewVirtual(time.Unix(0, 0))
	profile, err := simulator.LoadProfile("h100-llama3-8b")
	if err != nil {
		panic(err)
	}
	eng, err := simulator.NewEngine(profile.Config("llama-3-8b"), clock)
	if err != nil {
		panic(err)
	}
	prompt := make([]uint32, 4000)
	for i := range prompt {
		prompt[i] = uint32(i % 1000)
	}
	report := simulator.SinkFuncs{OnDone: func(r simulator.Result) {
		fmt.Printf("%s: %d tokens, %d cached, TTFT %v, E2E %v\n",
			r.ID, r.OutputTokens, r.CachedTokens, r.TTFT().Round(time.Microsecond), r.E2E().Round(time.Microsecond))
	}}
	for _, id := range []string{"first", "second"} {
		if err := eng.Submit(simulator.Request{ID: id, Prompt: prompt, MaxTokens: 8, Sink: report}); err != nil {
			panic(err)
		}
		clock.Run() // run the engine until it is idle
	}
	s := eng.Snapshot()
	fmt.Printf("prefix cache: %d of %d queried tokens hit; %d steps\n", s.PrefixHits, s.PrefixQueries, s.Steps)
	// Output:
	// first: 8 tokens, 0 cached, TTFT 77.96ms, E2E 119.723ms
	// second: 8 tokens, 3984 cached, TTFT 6.248ms, E2E 48.011ms
	// prefix cache: 3984 of 8000 queried tokens hit; 16 steps
}
