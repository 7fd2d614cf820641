// Package peerpolicy reproduces the default routing policies of Halyard's
// peers as scheduling plugins, so that the bench can run them beside
// Halyard's own profiles on the same traces, through the same decision
// code (package decision), and a team moving from a peer can keep its
// policy while it compares.
//
// Each plugin follows the peer's published source; docs/scheduling.md
// ("The peers' policies") cites the file and commit each was read from and
// lists what differs (chiefly: Halyard's approximate prefix index hashes
// 64-byte chunks where SGLang's gateway keeps a character radix tree and
// AIBrix hashes 4-character blocks).
//
//   - sglang-cache-aware: SGLang model gateway's cache_aware policy. When
//     the router's in-flight counts are imbalanced (max − min above
//     balanceAbsThreshold and max above balanceRelThreshold × min) it picks
//     the least-loaded endpoint; otherwise the endpoint with the longest
//     predicted prefix match if that match covers more than cacheThreshold
//     of the prompt, else the least-loaded one. Defaults are the gateway's
//     command-line defaults: 0.3, 64, 1.5.
//   - aibrix-prefix-cache: AIBrix's prefix-cache router. When the spread of
//     running requests exceeds imbalanceAbsCount (8) only the least-loaded
//     endpoints are considered; among those with a prefix match, the best
//     match whose load is within standardDeviationFactor (1) standard
//     deviations of the mean wins (ties to the less loaded); otherwise the
//     least-loaded endpoint of all.
//   - kthena-least-request: Kthena's least-request scorer, in-flight
//     requests plus 100 for each request the engine has not started
//     running, normalised by the largest.
//   - max-waiting: Kthena's least-request filter: endpoints whose engine
//     reports maxWaiting (10) or more waiting requests are left out; when
//     none is left, the request has no endpoint, as in Kthena.
//
// The one-decision scorers (sglang-cache-aware, aibrix-prefix-cache) write 1
// for the endpoint the peer's algorithm picks and 0 elsewhere, and read the
// prefix-cache scorer's per-endpoint matches (prefixcache.MatchedKey), so a
// profile runs prefix-cache first at weight 0 with its load override off.
package peerpolicy
