// Package routing decides, for a public model name and request headers,
// which pool serves a request and which model name the engine is asked for:
// header rules tried in order, a weighted split between targets (canary), a
// LoRA adapter served by a base-model pool, and fallback targets.
//
// It is pure decision logic over the config's routes: it knows nothing of
// endpoints, health or HTTP bodies; the router applies its decisions.
package routing
