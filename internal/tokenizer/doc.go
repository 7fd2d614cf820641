// Package tokenizer turns text into token ids for the simulator, the bench and
// the router's prefix hashing.
//
// Pseudo is a deterministic stand-in for a real BPE tokenizer: stable across
// runs and processes, cheap, and exactly invertible on its own output, so
// that a benchmark can build a prompt of a precise token length and equal
// text gives equal KV blocks on every side.
//
// BPE is a real byte-level BPE tokenizer in pure Go. It loads a tiktoken
// rank file (cl100k_base.tiktoken, o200k_base.tiktoken, Llama 3's
// tokenizer.model) or a Hugging Face tokenizer.json of a byte-level BPE
// model (GPT-2, Llama 3, Qwen2 style), splits text with hand-written
// versions of those models' pre-tokenizer patterns, and merges pieces by
// rank. Load picks one by name or path, so that the simulator and the router,
// configured with the same file, produce the same tokens and so the same KV
// blocks (docs/tokenizer.md).
//
// What does not belong here: chat templates (rendering messages into the
// prompt text) and block hashing (internal/prefixindex).
package tokenizer
