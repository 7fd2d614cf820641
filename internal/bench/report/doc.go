// Package report holds a benchmark's results in Halyard's bench JSON schema
// (halyard.dev/bench/v1; field names follow `vllm bench serve` where they
// mean the same thing), and renders them as a terminal table and as PNG
// plots of latency percentiles and goodput versus request rate, one line per
// policy or target.
//
// docs/bench.md documents the schema; a golden file in testdata/ pins it.
package report
