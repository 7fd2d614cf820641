// Package workload generates the requests of a benchmark: synthetic
// shared-prefix and multi-turn chat workloads, and replays of the Mooncake
// and Azure traces. Every prompt is made of pseudo-tokenizer words
// (tokenizer.Pseudo), so a prompt of N tokens is exactly N tokens to the
// simulator, text that should share a prefix is byte-identical, and
// everything is a pure function of the seed.
//
// A Workload gives random access to its requests: Shape(i) is cheap (lengths,
// timing, session), Request(i) renders the text. Rendering on demand keeps a
// replay of a 12,000-request trace with 100K-token prompts out of memory.
//
// Arrival times other than a trace's own timestamps are the arrival
// package's business; sending is the client's.
package workload
