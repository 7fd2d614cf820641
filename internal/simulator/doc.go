// Package simulator is the engine model of Halyard's vLLM-compatible
// simulator: a continuous-batching scheduler over a paged KV cache with
// prefix caching, whose step times follow a profile (DESIGN.md §7).
//
// The model is a state machine on a simclock.Clock. Each engine step is one
// clock.AfterFunc event; requests are token ids in, and tokens come out
// through a Sink with the clock time of each token. So the same code serves
// HTTP on the real clock (package vllmapi) and runs many engines for hours
// of traffic in one goroutine on a simclock.Virtual, with no sleeping:
//
//	clock := simclock.NewVirtual(start)
//	p, _ := simulator.LoadProfile("h100-llama3-8b")
//	eng, _ := simulator.NewEngine(p.Config("llama-3-8b"), clock)
//	eng.Submit(simulator.Request{ID: "r1", Prompt: ids, MaxTokens: 64, Sink: sink})
//	clock.Run()
//	snap := eng.Snapshot() // running, waiting, KV usage, prefix counters...
//
// What one step does, as vLLM's V1 scheduler: running requests are scheduled
// first (a decoding request computes one token, a request in chunked prefill
// its next chunk), each growing its KV blocks; when blocks run out the newest
// running request is preempted (recompute: its blocks are freed and it goes
// back to the front of the waiting queue). Then, if nothing was preempted,
// waiting requests are admitted first come first served while
// max_num_seqs, the max_num_batched_tokens budget, max_loras and free blocks
// allow; an admitted request reuses its cached prefix blocks and prefills
// the rest, over several steps when the budget is smaller than its prompt.
// The step lasts StepTime.Duration of the batch; at its end every request
// whose tokens are all computed produces one token.
//
// Hooks for prefill/decode disaggregation and KV events: Config.KVEvents
// sees every block stored, removed and cleared (package kvcache);
// Request.KeepBlocks keeps a finished request's blocks for a remote decode;
// Request.Remote admits a request whose prompt KV arrives from elsewhere at
// a per-token transfer time.
//
// Not here: HTTP, metrics exposition and fault injection over HTTP
// (package vllmapi), routing (the router and the scheduler, which this
// package must not import).
package simulator
