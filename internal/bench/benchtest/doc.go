// Package benchtest provides a fake OpenAI-compatible engine for the bench's
// tests: a real HTTP server that streams chat and completions responses in
// the OpenAI SSE format with include_usage, counts what it serves, keeps a
// toy prefix cache over pseudo-tokenizer blocks, and publishes vLLM-named
// counters on /metrics. It is not a simulator; internal/simulator is.
package benchtest
