// Package loraaffinity is the lora-affinity scorer. For a request that needs
// a LoRA adapter it prefers, in order, endpoints that have the adapter
// running (score 1), endpoints with requests for it waiting, i.e. loading it
// (0.8), endpoints with room for one more adapter below max_lora, or whose
// max_lora is unknown (0.5), and last endpoints that would have to evict an
// adapter (0). The figures come from vllm:lora_requests_info as last scraped.
// Requests without an adapter score 1 everywhere, so the scorer is neutral
// for them.
//
// It has no parameters.
package loraaffinity
