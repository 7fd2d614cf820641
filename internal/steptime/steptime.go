package steptime

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Coefficients is the linear step-time model:
//
//	step_ms = BaseMs + PrefillTokenMs·prefill_tokens + DecodeSeqMs·decode_seqs
//	          + ContextTokenMs·Σcontext_tokens
//
// where prefill_tokens counts the prompt (or recomputed) tokens of the batch,
// decode_seqs the sequences that decode one token, and Σcontext_tokens the
// context length of every sequence in the batch after the step.
type Coefficients struct {
	BaseMs         float64 `json:"baseMs"`
	PrefillTokenMs float64 `json:"prefillTokenMs"`
	DecodeSeqMs    float64 `json:"decodeSeqMs"`
	ContextTokenMs float64 `json:"contextTokenMs"`
}

// H100Llama3_8B is the simulator's h100-llama3-8b profile, the prior of the
// scheduler's online latency model (a test in internal/simulator keeps the
// two equal).
var H100Llama3_8B = Coefficients{BaseMs: 5.8, PrefillTokenMs: 0.018, DecodeSeqMs: 0.006, ContextTokenMs: 0.00004}

// Ms returns the step time in milliseconds of a batch with the given
// composition. Counts may be fractional (averages).
func (c Coefficients) Ms(prefillTokens, decodeSeqs, contextTokens float64) float64 {
	return c.BaseMs + c.PrefillTokenMs*prefillTokens + c.DecodeSeqMs*decodeSeqs + c.ContextTokenMs*contextTokens
}

// Duration returns the time of a step with the given batch composition,
// rounded to the nanosecond.
func (c Coefficients) Duration(prefillTokens, decodeSeqs, contextTokens int) time.Duration {
	ms := c.Ms(float64(prefillTokens), float64(decodeSeqs), float64(contextTokens))
	return time.Duration(math.Round(ms * float64(time.Millisecond)))
}

// IsZero reports whether every coefficient is zero.
func (c Coefficients) IsZero() bool { return c == Coefficients{} }

// Vector returns the coefficients in the order of the form's terms.
func (c Coefficients) Vector() [4]float64 {
	return [4]float64{c.BaseMs, c.PrefillTokenMs, c.DecodeSeqMs, c.ContextTokenMs}
}

// FromVector is the inverse of Vector.
func FromVector(v [4]float64) Coefficients {
	return Coefficients{BaseMs: v[0], PrefillTokenMs: v[1], DecodeSeqMs: v[2], ContextTokenMs: v[3]}
}

// Validate reports every coefficient that is negative or not a number,
// named field.<coefficient>.
func (c Coefficients) Validate(field string) error {
	var errs []error
	for _, t := range []struct {
		name string
		v    float64
	}{{"baseMs", c.BaseMs}, {"prefillTokenMs", c.PrefillTokenMs}, {"decodeSeqMs", c.DecodeSeqMs}, {"contextTokenMs", c.ContextTokenMs}} {
		if t.v < 0 || t.v != t.v || math.IsInf(t.v, 0) {
			errs = append(errs, fmt.Errorf("%s.%s: must be a finite number >= 0, got %v", field, t.name, t.v))
		}
	}
	return errors.Join(errs...)
}
