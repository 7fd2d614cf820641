// Package prefixindex holds the data structures behind prefix-cache aware
// scheduling: block hashing of prompts and bounded per-endpoint indexes of the
// blocks each engine is believed to hold.
//
// A prompt is cut into fixed blocks (token ids in blocks of BlockTokens, or,
// without token ids, the prompt's bytes in chunks of ChunkBytes); only full
// blocks count. Block i is identified by a chain hash
// h_i = H(h_{i-1}, block_i) whose seed is derived from the model name, so a
// hash names a block together with everything before it, and two prompts
// share hashes exactly as far as they share a prefix.
//
// Approximate remembers, per endpoint, the blocks recently routed there,
// bounded by an LRU sized to the engine's KV capacity and by a global bound,
// and answers longest-prefix queries for many endpoints at once. Precise
// holds exactly the blocks engines report caching (their KV events, rehashed
// with this package's chain hash), plus short-lived pending claims for
// requests just sent, and answers the same queries.
//
// This package is pure data structures: it knows nothing of endpoints beyond
// their names, of requests, HTTP or the scheduling framework.
package prefixindex
