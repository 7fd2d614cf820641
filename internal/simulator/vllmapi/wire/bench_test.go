package wire

import (
	"testing"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// BenchmarkParseGeneration parses a typical chat body (a system prompt, a
// question, sampling fields the simulator ignores).
func BenchmarkParseGeneration(b *testing.B) {
	body := []byte(`{"model":"llama-3-8b","messages":[{"role":"system","content":"You are a helpful assistant. Answer briefly and cite sources when you can."},` +
		`{"role":"user","content":"What is the capital of France, and what is its population?"}],` +
		`"max_tokens":100,"temperature":0.7,"top_p":0.95,"stream":true,"stream_options":{"include_usage":true},"seed":7,"ignore_eos":true}`)
	lim := Limits{MaxModelLen: 8192, VocabSize: tokenizer.DefaultVocabSize, DefaultMaxTokens: 16, DefaultChatMaxTokens: 256}
	tok := tokenizer.Pseudo{}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseGeneration(body, true, tok, lim); err != nil {
			b.Fatal(err)
		}
	}
}
