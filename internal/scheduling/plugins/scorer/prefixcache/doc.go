// Package prefixcache is the prefix-cache scorer: it prefers the endpoints
// whose KV cache probably holds the longest prefix of the request's prompt,
// so the engine can skip prefilling it (DESIGN.md §5, approximate mode).
//
// The prompt is cut into blocks (token ids in blocks of blockSize, or the
// prompt's bytes in chunks of chunkBytes when the router has no token ids)
// and hashed as a chain seeded with the model the engine will be asked for
// (the adapter's name for LoRA requests, whose cache engines keep apart). For
// chat the router passes the whole rendered conversation, so a later turn
// matches the earlier turns. An endpoint's score is the number of leading
// blocks it holds divided by the prompt's blocks.
//
// What an endpoint holds is not asked of the engine: the PreRequest hook
// records the blocks of every request as cached on the endpoint it was sent
// to, in a prefixindex.Approximate bounded per endpoint by the engine's KV
// capacity (vllm:cache_config_info num_gpu_blocks × block_size tokens, or
// defaultCapacityTokens before the first scrape) and globally by
// maxIndexBlocks.
//
// Load wins over affinity. An endpoint whose queue depth (engine waiting
// queue plus router in-flight, as the queue-depth scorer counts it) exceeds
// the least-loaded candidate's by more than loadOverride.queueGap, or whose
// KV usage exceeds the lowest by more than loadOverride.kvUsageGap, scores 0
// however much of the prompt it holds, and the cycle's explanation says so.
// The cache then follows the load: the request goes elsewhere and its blocks
// are recorded there. A gap of 0 turns that check off.
//
// After PreRequest the cycle state holds the PredictedHit of the picked
// endpoint under PredictedHitKey, for the router's predicted-hit metric.
package prefixcache
