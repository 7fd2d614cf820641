// Package fuzzseed holds hostile inputs that the fuzz targets of Halyard's
// parsers add to their seed corpora: JSON nested ten thousand levels deep,
// invalid UTF-8, lone surrogates, NUL bytes, numbers too large for any Go
// type, duplicate keys, and YAML alias bombs. A parser's own fuzz target
// embeds these into the shape it parses (a request body, a config, an SSE
// line) so that the fuzzer starts from the inputs attackers try first.
//
// It holds data only; no parser or property lives here, and it imports
// nothing from Halyard.
package fuzzseed
