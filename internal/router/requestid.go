package router

import (
	"crypto/rand"
	"strings"
)

// newRequestID returns an unpredictable request id (128 random bits in
// base32): the id the router gives the engine as X-Request-Id, from which
// engines build their response ids. A client must not be able to guess
// another's id, nor make one collide with a request still running (vLLM
// releases before its fix refused a second request with a running id).
func newRequestID() string { return rand.Text() }

// maxClientRequestID bounds the client-supplied X-Request-Id kept for logs.
const maxClientRequestID = 128

// clientRequestID is the client's X-Request-Id made safe for logs: at most
// maxClientRequestID bytes of printable ASCII, other bytes replaced by '_'.
// It is never forwarded to engines nor echoed to clients.
func clientRequestID(v string) string {
	if len(v) > maxClientRequestID {
		v = v[:maxClientRequestID]
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x21 || c > 0x7e {
			return strings.Map(func(c rune) rune {
				if c < 0x21 || c > 0x7e {
					return '_'
				}
				return c
			}, v)
		}
	}
	return v
}
