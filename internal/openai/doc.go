// Package openai holds the parts of OpenAI's wire format that the router
// needs: tolerant, partial parsing of chat and completion requests (only the
// fields routing reads are decoded; the raw bytes are kept to forward), a
// targeted rewrite of the "model" field that leaves every other byte alone,
// extraction of "usage" from responses and SSE chunks, and the error body
// {"error":{"message","type","param","code"}} with its status code.
//
// It does not hold an HTTP client or server, nor full request types: the
// router forwards bodies it does not understand unchanged.
package openai
