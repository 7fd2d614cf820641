// Package tokenizer turns text into token ids for the simulator, the bench and
// the router's prefix hashing. Pseudo is a deterministic stand-in for a real
// BPE tokenizer: stable across runs and processes, cheap, and exactly
// invertible on its own output, so that a benchmark can build a prompt of a
// precise token length and equal text gives equal KV blocks on every side.
// A real BPE tokenizer that loads a standard tokenizer file belongs here too.
package tokenizer
