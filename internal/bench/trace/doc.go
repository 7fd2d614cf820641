// Package trace reads the request traces the bench replays: the Mooncake
// conversation trace (JSON lines with timestamp, input_length,
// output_length and hash_ids) and the Azure LLM inference traces (CSV
// TIMESTAMP,ContextTokens,GeneratedTokens). A bad line is an error that
// names its line number; nothing is skipped silently.
//
// It only parses; turning entries into requests is the workload package's
// job.
package trace
