// Package kvcache is the simulated engine's paged KV cache: a pool of
// fixed-size blocks with reference counts and automatic prefix caching, as in
// vLLM's V1 block pool.
//
// A full block is keyed by a chain hash of its token ids (HashBlock), so two
// sequences that share a token prefix share its blocks. A block whose last
// user frees it stays in the cache, evictable, at the tail of a free queue;
// allocation takes blocks from the head, evicting the least recently freed
// cached block first. Hooks report every block stored, removed and the whole
// cache cleared, which is what a KV-event publisher needs.
//
// This package holds only the data structure. Scheduling, timing and request
// state live in package simulator; HTTP lives in package vllmapi.
package kvcache
