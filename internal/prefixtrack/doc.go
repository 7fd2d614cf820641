// Package prefixtrack keeps the router's picture of what each engine holds
// in its prefix cache, and says how far to trust it.
//
// Tracker follows the KV-cache events of the endpoints that publish them
// (kvevents.Pool, one subscriber per engine), rehashes each BlockStored's
// token ids with the router's chain hash (kvevents.Rehasher, rooted at the
// engine's model or the block's LoRA adapter) into a prefixindex.Precise,
// and decides per endpoint whether that precise picture or the approximate
// index (what the router itself sent there) answers: precise while the
// subscription is connected and whole; approximate for an endpoint that
// publishes no events, whose subscription is down, whose events were lost
// beyond what the replay socket could repair (until a complete resync, a
// cleared cache, or RecoverAfter), whose events stay silent past
// SilenceTimeout while its metrics show it caching new prompts, or whose
// block size differs from the router's. Every change of mode is logged and
// counted, and the current mode is a metric and part of the routing
// explanation.
//
// View is the index the prefix-cache scorer (prefixcache.Index) reads: Match
// asks the precise index for precise endpoints and the scorer's own
// approximate index for the others; Add keeps the approximate index warm
// for a fallback and, with PendingTTL, claims the request's blocks on the
// picked endpoint until the engine reports them (so that a second request
// with the same new prefix, sent before the engine has cached it, follows
// the first).
//
// Drift compares, per endpoint, the prefix hits the router predicted (the
// cached tokens the scorer expected at the picked endpoint) with the hits
// the engine reports (deltas of vllm:prefix_cache_hits_total), so that a
// router and engine that silently disagree — different tokenizers, an engine
// with prefix caching off — show up as a collapsed ratio.
//
// What does not belong here: the wire protocol (kvevents), the data
// structures (prefixindex), the scoring (the prefix-cache plugin), and HTTP.
package prefixtrack
