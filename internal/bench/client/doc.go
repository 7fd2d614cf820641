// Package client sends one benchmark request to an OpenAI-compatible
// endpoint (/v1/chat/completions or /v1/completions) with streaming and
// stream_options.include_usage, and measures it: the time to the first
// content chunk, the gaps between chunks, the end-to-end latency, and the
// token counts of the final usage chunk. A non-2xx status, an error object
// in the stream, or a stream that ends before [DONE] is a failed request
// with a short reason, never a panic.
//
// It measures with the monotonic wall clock; it knows nothing of arrival
// schedules or statistics beyond the per-request record.
package client
