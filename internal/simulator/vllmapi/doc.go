// Package vllmapi is the HTTP face of a simulated engine: the subset of
// vLLM's OpenAI-compatible server that Halyard's router, bench and tests
// use, on top of a simulator.Engine.
//
// Endpoints: POST /v1/completions and /v1/chat/completions (streaming or not,
// stream_options.include_usage, usage.prompt_tokens_details.cached_tokens),
// GET /v1/models, GET /health, GET /metrics (vLLM's metric names),
// POST /v1/load_lora_adapter and /v1/unload_lora_adapter, POST /tokenize and
// /detokenize, POST /reset_prefix_cache, and the simulator's own
// GET/POST /admin/faults for fault injection at run time. Errors have vLLM's
// shape {"error":{"message","type","param","code"}}.
//
// Start and Run serve an engine on a listener; `halyard sim` calls Run and
// `halyard up` calls Start once per engine. The engine model itself is in
// package simulator.
package vllmapi
