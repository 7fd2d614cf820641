// Package steptime holds the linear step-time form of DESIGN.md §7 that the
// simulator runs and the scheduler's latency model fits online:
//
//	step_ms = BaseMs + PrefillTokenMs·prefill_tokens + DecodeSeqMs·decode_seqs
//	          + ContextTokenMs·Σcontext_tokens
//
// It is a leaf: it imports nothing of the module, so both the simulator and
// the scheduling plugins may use it. Profiles (which GPU, which model, with
// which capacities) stay in the simulator; this package only has the form
// and its coefficients.
package steptime
