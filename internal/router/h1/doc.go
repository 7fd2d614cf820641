// Package h1 is a lean HTTP/1.1 client for plain-HTTP upstreams: an
// http.RoundTripper that writes a request and reads its response on the
// caller's goroutine, over a pool of keep-alive connections.
//
// net/http's Transport gives every connection a reader and a writer
// goroutine and hands each request and response between them over
// channels; for a proxy sending small requests to engines on the same host
// those hand-offs cost about as much as the router's own work. Client does
// the same job with the calling goroutine only. It keeps what a proxy
// needs: streaming response bodies (chunked or length-delimited),
// cancellation through the request's context (which interrupts a blocked
// read or write), a bound on the response header size, and reuse of a
// connection only after its response was read to the end. An idle
// connection the server closed is noticed before reuse (a non-blocking
// peek), so a keep-alive timeout on the engine's side does not fail a
// request.
//
// It does not do TLS, proxies, HTTP/2, redirects, compression or protocol
// upgrades: Client sends requests for other schemes to its Fallback.
//
// What belongs here: the connection pool and the request/response
// exchange. The router's retries, timeouts and relaying stay in package
// router.
package h1
