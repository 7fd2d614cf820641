package framework

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
