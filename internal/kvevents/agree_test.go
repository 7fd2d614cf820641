package kvevents

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/halyard-dev/halyard/internal/tokenizer"
)

// TestRouterAndEngineAgreeOnBlocks plays both sides with the same BPE
// tokenizer file: the engine caches a prompt's tokens and publishes them in
// two steps; the router tokenises the same prompt and chains its own hashes;
// every full block of the prompt is found in the index built from events.
func TestRouterAndEngineAgreeOnBlocks(t *testing.T) {
	tok, err := tokenizer.Load(filepath.Join("..", "tokenizer", "testdata", "cl100k_base.tiktoken"))
	if err != nil {
		t.Fatal(err)
	}
	const bs = 16
	prompt := "<|endoftext|>You are a helpful assistant. Answer briefly and cite sources.\n" +
		"User: What does a KV cache hold, and why does prefix caching make a repeated system prompt cheap? " +
		"Explain it the way you would to a colleague who knows transformers but not serving systems. " +
		"Then compare paged attention, radix trees and block hashing, with one example each, in under two hundred words."
	ids := tok.Encode(prompt)
	full := len(ids) / bs
	if full < 4 {
		t.Fatalf("prompt has %d tokens; want at least 4 blocks", len(ids))
	}

	// The engine side: blocks hashed its own way, published in two steps.
	engineHash := func(i int) uint64 { return 0xe000 + uint64(i) }
	x := newSetIndex()
	r := newTestRehasher(t, x, nil)
	split := full / 2
	first := &BlockStored{TokenIDs: ids[:split*bs], BlockSize: bs}
	for i := range split {
		first.BlockHashes = append(first.BlockHashes, IntHash(engineHash(i)))
	}
	second := &BlockStored{TokenIDs: ids[split*bs : full*bs], BlockSize: bs, ParentBlockHash: ptr(IntHash(engineHash(split - 1)))}
	for i := split; i < full; i++ {
		second.BlockHashes = append(second.BlockHashes, IntHash(engineHash(i)))
	}
	r.BlockStored("e0", first)
	r.BlockStored("e0", second)

	// The router side: the same text, its own tokenisation and chain.
	routerIDs := tok.Encode(prompt)
	want := chain("", bs, routerIDs...)
	if len(want) != full {
		t.Fatalf("router chain has %d blocks, engine %d", len(want), full)
	}
	got := x.set("e0")
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("index built from engine events differs from the router's own hashes (-router +index):\n%s", diff)
	}
}
