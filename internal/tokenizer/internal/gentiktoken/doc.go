// Command gentiktoken writes one of the BPE vocabularies that
// github.com/tiktoken-go/tokenizer embeds (OpenAI's tiktoken ranks, MIT
// licence) to a standard tiktoken rank file: one "<base64 token> <rank>"
// line per token, ordered by rank, as cl100k_base.tiktoken is published.
//
//	go run ./internal/tokenizer/internal/gentiktoken -encoding cl100k_base -o internal/tokenizer/testdata/cl100k_base.tiktoken
//
// Halyard's own BPE loads the file; its tests compare that BPE's output
// with tiktoken-go's.
package main
