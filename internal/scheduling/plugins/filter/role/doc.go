// Package role is the role filter for prefill/decode disaggregation: the
// prefill profile keeps endpoints that can prefill, the decode profile those
// that can decode. An endpoint of role "both" (or no role) serves either.
//
// Params: {"role": "prefill" | "decode" | "both"}, required. With "both" only
// endpoints of role both are kept (aggregated serving inside a PD pool).
package role
