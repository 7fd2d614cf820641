// Package loracapable is the lora-capable filter: for a request that needs a
// LoRA adapter, it keeps the endpoints known to serve it — declared by
// discovery (EndpointMetadata.Adapters) or reported by the engine as running
// or waiting (vllm:lora_requests_info). Requests without an adapter pass
// every endpoint. Use it where endpoints declare their adapters; an adapter
// that no endpoint declares leaves no candidate (the route's fallback, or a
// 503). The lora-affinity scorer ranks the survivors.
//
// It has no parameters.
package loracapable
