package autoscale

// Role names of disaggregated serving (as the router's).
const (
	RolePrefill = "prefill"
	RoleDecode  = "decode"
)

// Signals are one observation of a model's load, summed over its ready
// engines as the routers see them. Attainment values are shares in [0,1];
// a negative value means unknown (no request finished in the period).
type Signals struct {
	// Engines is the number of ready engines the totals cover.
	Engines int `json:"engines"`
	// Waiting is requests waiting in the engines' queues.
	Waiting float64 `json:"waiting"`
	// Running is requests the engines are running.
	Running float64 `json:"running"`
	// KVUsage is the sum of the engines' KV-cache usage (each 0–1).
	KVUsage float64 `json:"kvUsage"`
	// PrefillTokens is prompt tokens sent and not yet prefilled.
	PrefillTokens float64 `json:"prefillTokens"`
	// TokensPerSecond is generated tokens per second.
	TokensPerSecond float64 `json:"tokensPerSecond"`
	// RequestsPerSecond is requests arriving per second (sent to the
	// pool's engines, or held in its waiting room): demand that a backlog
	// does not inflate.
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// TTFTAttainment and TPOTAttainment are the shares of recently finished
	// requests that met the objectives.
	TTFTAttainment float64 `json:"ttftAttainment"`
	TPOTAttainment float64 `json:"tpotAttainment"`
	// WaitingRoom is requests the routers hold because no engine of the
	// model is ready (demand from zero).
	WaitingRoom float64 `json:"waitingRoom"`
	// Roles holds the same signals per role under disaggregated serving
	// (RolePrefill, RoleDecode); the top-level values are then ignored
	// except WaitingRoom.
	Roles map[string]Signals `json:"roles,omitempty"`
}

// Unknown is the attainment value that says no request finished.
const Unknown = -1

// busy reports whether s shows any traffic.
func (s Signals) busy() bool {
	if s.Waiting > 0 || s.Running > 0 || s.PrefillTokens > 0 || s.TokensPerSecond > 0 || s.RequestsPerSecond > 0 || s.WaitingRoom > 0 {
		return true
	}
	for _, r := range s.Roles {
		if r.busy() {
			return true
		}
	}
	return false
}

// attainment is the lower of the two attainments that are known, or
// Unknown.
func (s Signals) attainment() float64 {
	a := float64(Unknown)
	for _, v := range []float64{s.TTFTAttainment, s.TPOTAttainment} {
		if v >= 0 && (a < 0 || v < a) {
			a = v
		}
	}
	return a
}
