// Package sessionaffinity is the session-affinity scorer: requests of one
// session (framework.Request.SessionKey, which the router takes from a
// configured header or the body's "user" field) stick to the endpoint that
// served the session last. That endpoint scores 1, every other 0; a request
// without a session key, or whose session is unknown or expired, scores 0
// everywhere.
//
// The scorer learns in its PreRequest hook which endpoint a session was sent
// to. Memory is bounded: at most maxSessions sessions (default 100,000, about
// 150 bytes each plus the key), the least recently used forgotten first, and
// a session expires ttl (default 10m) after its last request, on the
// handle's clock.
//
// Params: {"ttl": "10m", "maxSessions": 100000}.
package sessionaffinity
