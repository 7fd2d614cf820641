package framework

import (
	"fmt"
	"strings"
)

// UnmeetableKey is where a scorer that predicts latency (predicted-latency)
// writes an Unmeetable when no candidate of the cycle is predicted to meet
// the request's objectives. Package decision reads it to hand the request
// to admission (router.admission.unmeetable: shed).
const UnmeetableKey StateKey = "framework/slo-unmeetable"

// Unmeetable says that no candidate is predicted to meet a request's
// objectives: the objectives (0: none) and the least TTFT predicted.
type Unmeetable struct {
	TTFTObjectiveMs, TPOTObjectiveMs float64
	LeastTTFTMs                      float64
}

// Objectives names the objectives that were checked, for a message:
// "ttft 1000ms, tpot 15ms", a zero one (none, or not checked) left out.
func (u Unmeetable) Objectives() string {
	var parts []string
	if u.TTFTObjectiveMs > 0 {
		parts = append(parts, fmt.Sprintf("ttft %gms", u.TTFTObjectiveMs))
	}
	if u.TPOTObjectiveMs > 0 {
		parts = append(parts, fmt.Sprintf("tpot %gms", u.TPOTObjectiveMs))
	}
	return strings.Join(parts, ", ")
}
